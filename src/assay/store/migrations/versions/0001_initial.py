"""Initial registry schema: datasets, models, versions, runs, measurements, aliases, alias history.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SHORT = sa.String(16)


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    # model_versions.gate_run_id and runs.model_version_id refer to each other. SQLite accepts a foreign
    # key to a table that does not exist yet but cannot add one later; PostgreSQL is the other way round.
    gate_run_inline = op.get_bind().dialect.name == "sqlite"

    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("licence", sa.Text(), nullable=True),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("splits", sa.JSON(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_datasets_fingerprint")),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", name=op.f("uq_models_name")),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("artifact_digest", sa.String(64), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("config_hash", sa.Text(), nullable=False),
        sa.Column("parent_version_id", sa.Integer(), nullable=True),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.Column("environment", sa.JSON(), nullable=False),
        sa.Column("gate_status", SHORT, nullable=False),
        sa.Column("gate_run_id", sa.Integer(), nullable=True),
        sa.Column("metrics_summary", sa.JSON(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("model_id", "version", name=op.f("uq_model_versions_model_id_version")),
        sa.CheckConstraint(
            "gate_status IN ('none', 'passed', 'failed', 'waived')",
            name=op.f("ck_model_versions_gate_status"),
        ),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_model_versions_model_id_models")),
        sa.ForeignKeyConstraint(
            ["parent_version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_versions_parent_version_id_model_versions"),
        ),
        *(
            [
                sa.ForeignKeyConstraint(
                    ["gate_run_id"], ["runs.id"], name=op.f("fk_model_versions_gate_run_id_runs")
                )
            ]
            if gate_run_inline
            else []
        ),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("baseline_version_id", sa.Integer(), nullable=True),
        sa.Column("kind", SHORT, nullable=False),
        sa.Column("dataset_fingerprint", sa.Text(), nullable=False),
        sa.Column("split", sa.Text(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("report_path", sa.Text(), nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.CheckConstraint("kind IN ('evaluation', 'comparison')", name=op.f("ck_runs_kind")),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_versions.id"], name=op.f("fk_runs_model_version_id_model_versions")
        ),
        sa.ForeignKeyConstraint(
            ["baseline_version_id"],
            ["model_versions.id"],
            name=op.f("fk_runs_baseline_version_id_model_versions"),
        ),
    )
    op.create_index(op.f("ix_runs_model_version_id"), "runs", ["model_version_id"])
    op.create_index(op.f("ix_runs_dataset_fingerprint"), "runs", ["dataset_fingerprint"])
    if not gate_run_inline:
        op.create_foreign_key(
            op.f("fk_model_versions_gate_run_id_runs"), "model_versions", "runs", ["gate_run_id"], ["id"]
        )
    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("role", SHORT, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("family", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("ci_low", sa.Double(), nullable=True),
        sa.Column("ci_high", sa.Double(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=True),
        sa.Column("unit", sa.Text(), nullable=True),
        sa.Column("higher_is_better", sa.Boolean(), nullable=True),
        sa.Column("estimator", sa.Text(), nullable=False),
        sa.Column("status", SHORT, nullable=False),
        sa.Column("baseline_value", sa.Double(), nullable=True),
        sa.Column("delta", sa.Double(), nullable=True),
        sa.Column("delta_ci_low", sa.Double(), nullable=True),
        sa.Column("delta_ci_high", sa.Double(), nullable=True),
        sa.Column("p_value", sa.Double(), nullable=True),
        sa.Column("test", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measurements")),
        sa.CheckConstraint(
            "role IN ('candidate', 'baseline', 'comparison')", name=op.f("ck_measurements_role")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_measurements_run_id_runs")),
    )
    op.create_index(op.f("ix_measurements_run_id"), "measurements", ["run_id"])
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aliases")),
        sa.UniqueConstraint("model_id", "name", name=op.f("uq_aliases_model_id_name")),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_aliases_model_id_models")),
        sa.ForeignKeyConstraint(
            ["version_id"], ["model_versions.id"], name=op.f("fk_aliases_version_id_model_versions")
        ),
    )
    op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.Text(), nullable=False),
        sa.Column("from_version_id", sa.Integer(), nullable=True),
        sa.Column("to_version_id", sa.Integer(), nullable=False),
        sa.Column("action", SHORT, nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alias_history")),
        sa.CheckConstraint("action IN ('promote', 'rollback')", name=op.f("ck_alias_history_action")),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_alias_history_model_id_models")),
        sa.ForeignKeyConstraint(
            ["from_version_id"],
            ["model_versions.id"],
            name=op.f("fk_alias_history_from_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["to_version_id"],
            ["model_versions.id"],
            name=op.f("fk_alias_history_to_version_id_model_versions"),
        ),
    )
    op.create_index(op.f("ix_alias_history_model_id_alias"), "alias_history", ["model_id", "alias"])


def downgrade() -> None:
    op.drop_table("alias_history")
    op.drop_table("aliases")
    op.drop_table("measurements")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f("fk_model_versions_gate_run_id_runs"), "model_versions", type_="foreignkey")
    op.drop_table("runs")
    op.drop_table("model_versions")
    op.drop_table("models")
    op.drop_table("datasets")

"""Incidents raised by the serving monitor, with what the rollback guard did about them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.Text(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("detector", sa.Text(), nullable=False),
        sa.Column("statistic", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("window", sa.Integer(), nullable=False),
        sa.Column("window_start", _timestamp(), nullable=False),
        sa.Column("window_end", _timestamp(), nullable=False),
        sa.Column("detections", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("rollback_event_id", sa.Integer(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("opened_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("acked_at", _timestamp(), nullable=True),
        sa.Column("acked_by", sa.Text(), nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
        sa.CheckConstraint(
            "action IN ('none', 'rollback_due', 'rolled_back', 'rollback_refused', 'superseded')",
            name=op.f("ck_incidents_action"),
        ),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_incidents_model_id_models")),
        sa.ForeignKeyConstraint(
            ["version_id"], ["model_versions.id"], name=op.f("fk_incidents_version_id_model_versions")
        ),
        sa.ForeignKeyConstraint(
            ["rollback_event_id"],
            ["alias_history.id"],
            name=op.f("fk_incidents_rollback_event_id_alias_history"),
        ),
    )
    op.create_index(op.f("ix_incidents_model_id_alias"), "incidents", ["model_id", "alias"])


def downgrade() -> None:
    op.drop_table("incidents")

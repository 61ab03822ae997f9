"""The registry's tables, as SQLAlchemy 2 typed declarative classes.

The migration scripts in ``migrations/versions`` must build exactly this schema: a unit test compares a
migrated database against this metadata with alembic's autogenerate and fails on any difference. So a
change here always comes with a new migration.

Constraint names follow one naming convention, so every dialect gets the same names and later migrations
(batch mode on SQLite) can refer to them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

GATE_STATUSES = ("none", "passed", "failed", "waived")
RUN_KINDS = ("evaluation", "comparison")
MEASUREMENT_ROLES = ("candidate", "baseline", "comparison")
ALIAS_ACTIONS = ("promote", "rollback")
# What the rollback guard did about an incident: nothing (yet); a rollback decided and written before it
# is carried out (a restart finishes it); carried out; refused (nothing to roll back to); superseded (the
# alias had moved on before the rollback ran).
INCIDENT_ACTIONS = ("none", "rollback_due", "rolled_back", "rollback_refused", "superseded")

NAME_LENGTH = 128  # model and alias names; checked in refs.py


def _one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({listed})", name=column)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on every dialect.

    SQLite keeps no time zone, so values come back naive; they were written as UTC, so UTC is attached
    again on the way out. Naive values are refused on the way in: their zone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps aware UTC timestamps")
        value = value.astimezone(UTC)
        # SQLite would write the offset into the string and compare strings: keep one canonical form.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: UTCDateTime,
        float: Double,
        # Free-form text has no length limit: PostgreSQL would otherwise fail long values at insert time.
        str: Text,
    }


class DatasetRow(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    fingerprint: Mapped[str] = mapped_column(unique=True)
    source: Mapped[str]
    licence: Mapped[str | None]
    n_examples: Mapped[int]
    splits: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    description: Mapped[str]
    created_at: Mapped[datetime]


class VersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"), _one_of("gate_status", GATE_STATUSES))

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int]
    artifact_digest: Mapped[str | None] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]]
    config_hash: Mapped[str]
    parent_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    lineage: Mapped[dict[str, Any]]
    environment: Mapped[dict[str, Any]]
    gate_status: Mapped[str] = mapped_column(String(16))
    # Versions and runs refer to each other; use_alter lets PostgreSQL add this key after both tables exist.
    gate_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", use_alter=True))
    metrics_summary: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (_one_of("kind", RUN_KINDS),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), index=True)
    baseline_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    kind: Mapped[str] = mapped_column(String(16))
    dataset_fingerprint: Mapped[str] = mapped_column(index=True)
    split: Mapped[str]
    passed: Mapped[bool | None]
    report_path: Mapped[str | None]
    document: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class MeasurementRow(Base):
    """One measurement of a run. A comparison row keeps the candidate's value in ``value`` and the
    baseline's in ``baseline_value``; plain measurements leave ``baseline_value`` and the delta columns
    empty."""

    __tablename__ = "measurements"
    __table_args__ = (_one_of("role", MEASUREMENT_ROLES),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str]
    family: Mapped[str]
    value: Mapped[float | None]
    ci_low: Mapped[float | None]
    ci_high: Mapped[float | None]
    n: Mapped[int | None]
    unit: Mapped[str | None]
    higher_is_better: Mapped[bool | None]
    estimator: Mapped[str]
    status: Mapped[str] = mapped_column(String(16))
    baseline_value: Mapped[float | None]
    delta: Mapped[float | None]
    delta_ci_low: Mapped[float | None]
    delta_ci_high: Mapped[float | None]
    p_value: Mapped[float | None]
    test: Mapped[str | None]
    details: Mapped[dict[str, Any]]


class AliasRow(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("model_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    name: Mapped[str]
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    updated_at: Mapped[datetime]


class AliasHistoryRow(Base):
    """Append-only: the store inserts rows and never updates or deletes them."""

    __tablename__ = "alias_history"
    __table_args__ = (
        _one_of("action", ALIAS_ACTIONS),
        Index(None, "model_id", "alias"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    alias: Mapped[str]
    from_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    to_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    action: Mapped[str] = mapped_column(String(16))
    forced: Mapped[bool]
    reason: Mapped[str | None]
    actor: Mapped[str | None]
    at: Mapped[datetime]


class IncidentRow(Base):
    """A monitoring episode on one served alias: opened by the first alarmed window, extended by each
    consecutive one (``detections``, with every alarm in ``details``), acted on by the rollback guard."""

    __tablename__ = "incidents"
    __table_args__ = (_one_of("action", INCIDENT_ACTIONS), Index(None, "model_id", "alias"))

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    alias: Mapped[str]
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    detector: Mapped[str]  # the detector with the largest statistic-to-threshold ratio in the first window
    statistic: Mapped[float]
    threshold: Mapped[float]
    window: Mapped[int]  # index of the first alarmed window in the server's run
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    detections: Mapped[int]  # consecutive alarmed windows so far
    action: Mapped[str] = mapped_column(String(16))
    rollback_event_id: Mapped[int | None] = mapped_column(ForeignKey("alias_history.id"))
    details: Mapped[dict[str, Any]]
    opened_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    acked_at: Mapped[datetime | None]
    acked_by: Mapped[str | None]
    ack_note: Mapped[str | None]

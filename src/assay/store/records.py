"""What the store hands back: small frozen records, detached from any database session.

Callers never see ORM objects, so they never hold a session open, never trigger a lazy load after the
session closed, and cannot change a row by assigning to an attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from assay.measurement import Comparison, Measurement

GateStatus = Literal["none", "passed", "failed", "waived"]
RunKind = Literal["evaluation", "comparison"]
AliasAction = Literal["promote", "rollback"]
IncidentAction = Literal["none", "rollback_due", "rolled_back", "rollback_refused", "superseded"]


def version_ref(model: str, version: int) -> str:
    return f"{model}@v{version}"


@dataclass(frozen=True)
class DatasetInfo:
    id: int
    name: str
    fingerprint: str
    source: str
    licence: str | None
    n_examples: int
    splits: dict[str, dict[str, Any]]
    created_at: datetime


@dataclass(frozen=True)
class VersionInfo:
    id: int
    model: str
    version: int
    artifact_digest: str | None
    spec: dict[str, Any]
    config_hash: str
    parent: str | None  # the parent's ref, "name@v3", which may name another model
    lineage: dict[str, Any]
    environment: dict[str, Any]
    gate_status: GateStatus
    gate_run_id: int | None
    metrics_summary: dict[str, Any]
    created_at: datetime
    aliases: tuple[str, ...]  # aliases of this model that point at this version now

    @property
    def ref(self) -> str:
        return version_ref(self.model, self.version)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    created_at: datetime
    n_versions: int
    latest: VersionInfo
    aliases: dict[str, int]  # alias -> version number


@dataclass(frozen=True)
class RunInfo:
    """A recorded run. ``runs_for`` leaves ``document`` None and the measurement tuples empty, to keep
    listings light; ``get_run`` fills them."""

    id: int
    kind: RunKind
    version: str | None  # ref of the evaluated version, if it is registered
    baseline: str | None
    dataset_fingerprint: str
    split: str
    passed: bool | None
    report_path: str | None
    created_at: datetime
    document: dict[str, Any] | None = None
    measurements: tuple[Measurement, ...] = field(default=())
    baseline_measurements: tuple[Measurement, ...] = field(default=())
    comparisons: tuple[Comparison, ...] = field(default=())


@dataclass(frozen=True)
class AliasEvent:
    id: int
    model: str
    alias: str
    from_version: int | None
    to_version: int
    action: AliasAction
    forced: bool  # True when the move overrode a refusal (a failed gate)
    reason: str | None
    actor: str | None
    at: datetime


@dataclass(frozen=True)
class AliasChange:
    """The outcome of promote or rollback. ``changed`` is False for a promotion to the version the alias
    already points at; then nothing was written and ``event`` is None."""

    model: str
    alias: str
    from_version: int | None
    to_version: int
    changed: bool
    message: str
    event: AliasEvent | None


@dataclass(frozen=True)
class Incident:
    id: int
    model: str
    alias: str
    version: int  # the version the alias served when the incident opened
    detector: str
    statistic: float
    threshold: float
    window: int
    window_start: datetime
    window_end: datetime
    detections: int
    action: IncidentAction
    rollback_event: AliasEvent | None
    details: dict[str, Any]
    opened_at: datetime
    updated_at: datetime
    acked_at: datetime | None
    acked_by: str | None
    ack_note: str | None

    @property
    def status(self) -> str:
        """``acknowledged`` once a person acked it, else ``rolled back`` or ``open``."""
        if self.acked_at is not None:
            return "acknowledged"
        return "rolled back" if self.action == "rolled_back" else "open"

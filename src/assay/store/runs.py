"""Runs and their measurements, inside the caller's session.

A run keeps its full JSON document (the report's data) and, beside it, one row per measurement so that
numbers can be queried across runs without parsing documents. Measurement rows use the stable schema of
``assay.measurement``; non-finite numbers are stored as NULL, as in its JSON form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from assay.measurement import Comparison, Measurement, Status
from assay.store.jsonsafe import to_json_object
from assay.store.records import RunInfo, RunKind
from assay.store.tables import MeasurementRow, RunRow, utcnow
from assay.store.versions import version_ref_of


def insert_run(
    session: Session,
    *,
    kind: RunKind,
    document: dict[str, Any],
    measurements: Sequence[Measurement],
    baseline_measurements: Sequence[Measurement],
    comparisons: Sequence[Comparison],
    version_id: int | None,
    baseline_version_id: int | None,
    dataset_fingerprint: str,
    split: str,
    passed: bool | None,
    report_path: str | None,
) -> int:
    run = RunRow(
        model_version_id=version_id,
        baseline_version_id=baseline_version_id,
        kind=kind,
        dataset_fingerprint=dataset_fingerprint,
        split=split,
        passed=passed,
        report_path=report_path,
        document=document,
        created_at=utcnow(),
    )
    session.add(run)
    session.flush()  # assigns run.id for the measurement rows
    rows = [measurement_row(run.id, "candidate", m) for m in measurements]
    rows += [measurement_row(run.id, "baseline", m) for m in baseline_measurements]
    rows += [comparison_row(run.id, c) for c in comparisons]
    session.add_all(rows)
    session.flush()
    return run.id


def measurement_row(run_id: int, role: str, m: Measurement) -> MeasurementRow:
    d = m.to_dict()  # non-finite values already None
    return MeasurementRow(
        run_id=run_id,
        role=role,
        name=d["name"],
        family=d["family"],
        value=d["value"],
        ci_low=d["ci_low"],
        ci_high=d["ci_high"],
        n=d["n"],
        unit=d["unit"],
        higher_is_better=d["higher_is_better"],
        estimator=d["estimator"],
        status=d["status"],
        details=to_json_object(d["details"], f"measurement {m.name!r} details"),
    )


def comparison_row(run_id: int, c: Comparison) -> MeasurementRow:
    d = c.to_dict()
    return MeasurementRow(
        run_id=run_id,
        role="comparison",
        name=d["name"],
        family=d["family"],
        value=d["candidate"],
        baseline_value=d["baseline"],
        n=d["n"],
        unit=d["unit"],
        higher_is_better=d["higher_is_better"],
        estimator=d["estimator"],
        status=d["status"],
        delta=d["delta"],
        delta_ci_low=d["delta_ci_low"],
        delta_ci_high=d["delta_ci_high"],
        p_value=d["p_value"],
        test=d["test"],
        details=to_json_object(d["details"], f"comparison {c.name!r} details"),
    )


def run_info(session: Session, run: RunRow, *, detailed: bool) -> RunInfo:
    info = RunInfo(
        id=run.id,
        kind=cast(RunKind, run.kind),
        version=version_ref_of(session, run.model_version_id),
        baseline=version_ref_of(session, run.baseline_version_id),
        dataset_fingerprint=run.dataset_fingerprint,
        split=run.split,
        passed=run.passed,
        report_path=run.report_path,
        created_at=run.created_at,
    )
    if not detailed:
        return info
    rows = session.scalars(
        select(MeasurementRow).where(MeasurementRow.run_id == run.id).order_by(MeasurementRow.id)
    ).all()
    return replace(
        info,
        document=run.document,
        measurements=tuple(_measurement(r) for r in rows if r.role == "candidate"),
        baseline_measurements=tuple(_measurement(r) for r in rows if r.role == "baseline"),
        comparisons=tuple(_comparison(r) for r in rows if r.role == "comparison"),
    )


def _measurement(r: MeasurementRow) -> Measurement:
    return Measurement(
        name=r.name,
        family=r.family,
        value=r.value,
        ci_low=r.ci_low,
        ci_high=r.ci_high,
        n=r.n,
        unit=r.unit,
        higher_is_better=r.higher_is_better,
        estimator=r.estimator,
        status=cast(Status, r.status),
        details=r.details,
    )


def _comparison(r: MeasurementRow) -> Comparison:
    return Comparison(
        name=r.name,
        family=r.family,
        baseline=r.baseline_value,
        candidate=r.value,
        delta=r.delta,
        delta_ci_low=r.delta_ci_low,
        delta_ci_high=r.delta_ci_high,
        p_value=r.p_value,
        test=r.test or "",
        n=r.n,
        unit=r.unit,
        higher_is_better=r.higher_is_better,
        estimator=r.estimator,
        status=cast(Status, r.status),
        details=r.details,
    )

"""The registry: one object that opens the database and artifact store and exposes every operation.

Each public method runs in its own transaction and returns frozen records (``assay.store.records``),
never ORM objects. Writers of one model's versions and aliases queue: on the database write lock with
SQLite, on the model's row lock with PostgreSQL. Should a write still conflict (a version number or alias
taken in the meantime; a new model created twice at once), it is retried from the start with fresh reads.
Nothing is half-written, because every change, however many rows it touches, is a single transaction.

Artifacts are copied into the content-addressed store before the transaction that refers to them: if
that transaction fails, an unreferenced artifact remains, which is harmless (identical content is stored
once and can be collected later), whereas the opposite order could leave a version pointing at nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from assay.errors import NotFoundError, RefusedError, UsageError
from assay.measurement import Comparison, Measurement
from assay.store import aliases, datasets, incidents, runs, versions
from assay.store.aliases import ConcurrentChange
from assay.store.artifacts import ArtifactStore
from assay.store.database import (
    WRITE,
    database_errors,
    masked,
    open_engine,
    resolve_home,
    resolve_url,
    retry_busy,
)
from assay.store.jsonsafe import to_json_object
from assay.store.migrate import upgrade_to_head
from assay.store.records import (
    AliasChange,
    AliasEvent,
    DatasetInfo,
    Incident,
    ModelInfo,
    RunInfo,
    RunKind,
    VersionInfo,
)
from assay.store.refs import check_model_name
from assay.store.remote import RemoteArtifacts
from assay.store.tables import RUN_KINDS, ModelRow, RunRow, VersionRow, utcnow

T = TypeVar("T")

# Each retry follows a conflict another writer has already committed, so a handful always suffices in
# practice; the bound only stops a bug (a constraint that fails every time) from looping forever.
_WRITE_ATTEMPTS = 8


class Store:
    """The model registry.

    ``home`` is the argument, else ``$ASSAY_HOME``, else ``./.assay``; artifacts live under
    ``<home>/artifacts``, mirrored to the object store ``artifacts_url`` (else ``$ASSAY_ARTIFACTS_URL``,
    an fsspec URL such as ``s3://bucket/assay``) when one is given. ``url`` is the argument, else
    ``$ASSAY_DB_URL``, else SQLite at ``<home>/assay.db``. Opening brings the schema to the newest
    revision.
    """

    def __init__(
        self, url: str | None = None, home: Path | str | None = None, artifacts_url: str | None = None
    ) -> None:
        self.home = resolve_home(home)
        self._url = resolve_url(url, self.home)
        self.url = masked(self._url)  # safe to print: the password is hidden
        remote_url = artifacts_url or os.environ.get("ASSAY_ARTIFACTS_URL")
        self.artifacts = ArtifactStore(
            self.home / "artifacts", RemoteArtifacts(remote_url) if remote_url else None
        )
        self._engine = open_engine(self._url)
        try:
            with database_errors(self._url):
                retry_busy(lambda: upgrade_to_head(self._engine))
        except BaseException:
            self._engine.dispose()
            raise

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store(url={self.url!r}, home={str(self.home)!r})"

    # -- datasets ---------------------------------------------------------------------------------------

    def register_dataset(
        self,
        name: str,
        fingerprint: str,
        *,
        source: str,
        licence: str | None,
        n_examples: int,
        splits: dict[str, dict[str, Any]],
    ) -> DatasetInfo:
        if not isinstance(fingerprint, str) or not fingerprint:
            raise UsageError(f"A dataset fingerprint must be a non-empty string. Got {fingerprint!r}.")
        clean_splits = datasets.check_splits(to_json_object(splits, "splits"))
        return self._write(
            lambda session: datasets.register(
                session,
                name=name,
                fingerprint=fingerprint,
                source=source,
                licence=licence,
                n_examples=n_examples,
                splits=clean_splits,
            )
        )

    def get_dataset(self, fingerprint: str) -> DatasetInfo:
        with self._read() as session:
            return datasets.find(session, fingerprint)

    # -- models and versions ----------------------------------------------------------------------------

    def register_version(
        self,
        model_name: str,
        *,
        artifact_dir: Path | None,
        spec: dict[str, Any],
        config_hash: str,
        parent: str | None,
        lineage: dict[str, Any],
        environment: dict[str, Any],
        metrics_summary: dict[str, Any] | None = None,
        description: str = "",
    ) -> VersionInfo:
        """Register the next version of ``model_name`` (creating the model if new).

        ``parent`` is a reference to the version this one derives from (any model). The artifact folder
        is copied into the artifact store first; the version is numbered and written in one transaction.
        """
        check_model_name(model_name)
        fields = {
            "spec": to_json_object(spec, "spec"),
            "lineage": to_json_object(lineage, "lineage"),
            "environment": to_json_object(environment, "environment"),
            "metrics_summary": to_json_object(metrics_summary, "metrics_summary"),
        }
        digest = self.artifacts.put_dir(artifact_dir) if artifact_dir is not None else None

        def work(session: Session) -> VersionInfo:
            model = session.scalar(select(ModelRow).where(ModelRow.name == model_name))
            if model is None:
                model = ModelRow(name=model_name, description=description, created_at=utcnow())
                session.add(model)
                session.flush()
            elif description:
                model.description = description
            versions.lock_model(session, model.id)
            parent_row = versions.resolve(session, parent) if parent is not None else None
            row = new_version_row(
                model_id=model.id,
                version=versions.next_version(session, model.id),
                artifact_digest=digest,
                config_hash=config_hash,
                parent_version_id=parent_row.id if parent_row is not None else None,
                **fields,
            )
            session.add(row)
            session.flush()
            return versions.version_info(session, row)

        return self._write(work)

    def resolve(self, ref: str) -> VersionInfo:
        """``name`` (latest), ``name@3`` or ``name@v3`` (version), ``name@production`` (alias)."""
        with self._read() as session:
            return versions.version_info(session, versions.resolve(session, ref))

    def list_models(self) -> list[ModelInfo]:
        with self._read() as session:
            return versions.model_infos(session)

    def list_versions(self, name: str) -> list[VersionInfo]:
        with self._read() as session:
            model = versions.find_model(session, name)
            rows = session.scalars(
                select(VersionRow).where(VersionRow.model_id == model.id).order_by(VersionRow.version)
            ).all()
            return versions.version_infos(session, rows)

    # -- runs and gates ---------------------------------------------------------------------------------

    def record_run(
        self,
        *,
        kind: RunKind,
        document: dict[str, Any],
        measurements: Sequence[Measurement],
        comparisons: Sequence[Comparison] = (),
        baseline_measurements: Sequence[Measurement] = (),
        version: str | None,
        baseline: str | None,
        dataset_fingerprint: str,
        split: str,
        passed: bool | None,
        report_path: str | None,
        gate: bool = False,
    ) -> int:
        """Record a run, its document and every measurement in one transaction; returns the run id.

        ``version`` and ``baseline`` are references to registered versions, or None for outputs of a
        model the registry does not hold. With ``gate=True`` the run's verdict (``passed``) also becomes
        the version's gate status in the same transaction, so a run can never exist without its verdict.
        """
        if gate and (version is None or passed is None):
            raise UsageError("A gate verdict needs a registered version and a passed/failed outcome.")
        if kind not in RUN_KINDS:
            raise UsageError(f"A run's kind must be one of {', '.join(RUN_KINDS)}. Got {kind!r}.")
        _check_items(measurements, Measurement, "measurements")
        _check_items(baseline_measurements, Measurement, "baseline_measurements")
        _check_items(comparisons, Comparison, "comparisons")
        clean_document = to_json_object(document, "document")

        def work(session: Session) -> int:
            version_row = versions.resolve(session, version) if version is not None else None
            baseline_row = versions.resolve(session, baseline) if baseline is not None else None
            run_id = runs.insert_run(
                session,
                kind=kind,
                document=clean_document,
                measurements=measurements,
                baseline_measurements=baseline_measurements,
                comparisons=comparisons,
                version_id=version_row.id if version_row is not None else None,
                baseline_version_id=baseline_row.id if baseline_row is not None else None,
                dataset_fingerprint=dataset_fingerprint,
                split=split,
                passed=passed,
                report_path=report_path,
            )
            if gate and version_row is not None:
                _apply_gate(version_row, run_id, bool(passed))
            return run_id

        return self._write(work)

    def set_gate(self, ref: str, run_id: int, passed: bool) -> VersionInfo:
        """Record the gate verdict of ``run_id`` on the version it evaluated."""

        def work(session: Session) -> VersionInfo:
            row = versions.resolve(session, ref)
            run = session.get(RunRow, run_id)
            if run is None:
                raise NotFoundError(f"No run with id {run_id}.")
            if run.model_version_id != row.id:
                evaluated = versions.version_ref_of(session, run.model_version_id) or "an unregistered model"
                raise UsageError(
                    f"Run {run_id} evaluated {evaluated}, not {ref!r}: a gate verdict belongs to the version "
                    "its run evaluated."
                )
            _apply_gate(row, run_id, passed)
            session.flush()
            return versions.version_info(session, row)

        return self._write(work)

    def runs_for(self, ref: str) -> list[RunInfo]:
        """Runs that evaluated this version (as the candidate), oldest first, without their documents."""
        with self._read() as session:
            row = versions.resolve(session, ref)
            found = session.scalars(
                select(RunRow).where(RunRow.model_version_id == row.id).order_by(RunRow.id)
            ).all()
            return [runs.run_info(session, run, detailed=False) for run in found]

    def get_run(self, run_id: int) -> RunInfo:
        """A run with its document and measurements."""
        with self._read() as session:
            run = session.get(RunRow, run_id)
            if run is None:
                raise NotFoundError(f"No run with id {run_id}.")
            return runs.run_info(session, run, detailed=True)

    # -- aliases ----------------------------------------------------------------------------------------

    def promote(
        self,
        ref: str,
        alias: str = "production",
        *,
        force: bool = False,
        reason: str | None = None,
        actor: str | None = None,
    ) -> AliasChange:
        """Point ``alias`` at the version ``ref`` names, and append the move to the alias history.

        Refused when the version's gate failed, unless ``force``; a forced promotion is recorded as such.
        Promoting to the version the alias already points at changes nothing. ``actor`` defaults to the
        login name.
        """
        return self._write(
            lambda session: aliases.promote(
                session, versions.resolve(session, ref), alias, force=force, reason=reason, actor=actor
            )
        )

    def rollback(
        self,
        model_name: str,
        alias: str = "production",
        *,
        reason: str | None = None,
        actor: str | None = None,
    ) -> AliasChange:
        """Undo the newest promotion of ``alias`` still in effect (see ``assay.store.history``)."""
        return self._write(
            lambda session: aliases.rollback(
                session, versions.find_model(session, model_name), alias, reason=reason, actor=actor
            )
        )

    def alias_history(self, model_name: str, alias: str | None = None) -> list[AliasEvent]:
        with self._read() as session:
            return aliases.history(session, versions.find_model(session, model_name), alias)

    def current_alias(self, model_name: str, alias: str) -> VersionInfo | None:
        with self._read() as session:
            versions.find_model(session, model_name)
            try:
                row = versions.resolve(session, f"{model_name}@{alias}")
            except NotFoundError:
                return None
            return versions.version_info(session, row)

    # -- incidents (see ``assay.store.incidents`` for the order of writes) -------------------------------

    def open_incident(
        self,
        model_name: str,
        alias: str,
        version: int,
        *,
        detector: str,
        statistic: float,
        threshold: float,
        window: int,
        window_start: datetime,
        window_end: datetime,
        detection: dict[str, Any],
        rollback_after: int | None,
    ) -> Incident:
        """Record the first alarmed window of an episode on ``model_name@alias`` serving ``version``."""
        clean = to_json_object(detection, "detection")

        def work(session: Session) -> Incident:
            model = versions.find_model(session, model_name)
            row = versions.resolve(session, f"{model_name}@v{version}")
            return incidents.open_incident(
                session, model, alias, row.id, detector=detector, statistic=statistic, threshold=threshold,
                window=window, window_start=window_start, window_end=window_end, detection=clean,
                rollback_after=rollback_after,
            )  # fmt: skip

        return self._write(work)

    def extend_incident(
        self, incident_id: int, detection: dict[str, Any], *, rollback_after: int | None
    ) -> Incident:
        clean = to_json_object(detection, "detection")
        return self._write(
            lambda session: incidents.extend_incident(
                session, incident_id, clean, rollback_after=rollback_after
            )
        )

    def rollback_incident(self, incident_id: int, *, actor: str | None = "assay-serve") -> Incident:
        """Carry out the rollback an incident is due, if its alias still serves the incident's version."""
        return self._write(lambda session: incidents.rollback_incident(session, incident_id, actor=actor))

    def acknowledge_incident(
        self, incident_id: int, *, by: str | None = None, note: str | None = None
    ) -> Incident:
        return self._write(lambda session: incidents.acknowledge(session, incident_id, by=by, note=note))

    def get_incident(self, incident_id: int) -> Incident:
        with self._read() as session:
            return incidents.get(session, incident_id)

    def list_incidents(
        self, model_name: str | None = None, alias: str | None = None, *, due_only: bool = False
    ) -> list[Incident]:
        """Oldest first; ``due_only``: those whose rollback was decided but not yet carried out."""
        with self._read() as session:
            return incidents.list_incidents(
                session, model_name, alias, actions=("rollback_due",) if due_only else None
            )

    # -- transactions -----------------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with database_errors(self._url), Session(self._engine) as session, session.begin():
            yield session

    def _write(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a write transaction, again from the start if a concurrent writer got in first."""

        def attempt() -> T:
            with Session(self._engine, execution_options={WRITE: True}) as session, session.begin():
                return work(session)

        conflict: Exception | None = None
        for _ in range(_WRITE_ATTEMPTS):
            try:
                with database_errors(self._url):
                    return retry_busy(attempt)
            except (IntegrityError, ConcurrentChange) as e:
                conflict = e
        raise RefusedError(
            f"The change kept conflicting with concurrent changes to {self.url!r} "
            f"({getattr(conflict, 'orig', conflict)}); "
            "nothing was written. Try again."
        )


def new_version_row(**columns: Any) -> VersionRow:
    return VersionRow(gate_status="none", gate_run_id=None, created_at=utcnow(), **columns)


def _check_items(items: Sequence[object], kind: type, where: str) -> None:
    for i, item in enumerate(items):
        if not isinstance(item, kind):
            raise UsageError(f"{where}[{i}] must be a {kind.__name__}. Got {type(item).__name__}.")


def _apply_gate(row: VersionRow, run_id: int, passed: bool) -> None:
    row.gate_status = "passed" if passed else "failed"
    row.gate_run_id = run_id

"""Incidents inside one session: open, extend, act on, acknowledge.

The rollback guard's order of writes is what keeps alias, history and incident consistent whenever the
process dies:

1. each alarmed window is written first (``open_incident`` or ``extend_incident``); the write that brings
   the consecutive count to the policy's N also marks the incident ``rollback_due``;
2. ``rollback_incident`` then moves the alias, appends the history row and marks the incident
   ``rolled_back`` (with the history row's id) in **one** transaction.

A kill before 1 commits loses one detection and changes nothing; between 1 and 2 it leaves an incident
``rollback_due`` that a restarted server finishes (``due_incidents``); after 2 everything is done. The
rollback is guarded: it runs only while the alias still serves the incident's version, so a rollback
finished late can never undo a promotion made in the meantime (the incident is ``superseded`` instead).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from assay.errors import NotFoundError, RefusedError
from assay.store import aliases
from assay.store.records import Incident, IncidentAction
from assay.store.refs import check_alias_name
from assay.store.tables import AliasHistoryRow, AliasRow, IncidentRow, ModelRow, utcnow
from assay.store.versions import find_model, lock_model, version_number


def open_incident(
    session: Session,
    model: ModelRow,
    alias: str,
    version_id: int,
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
    check_alias_name(alias)
    now = utcnow()
    row = IncidentRow(
        model_id=model.id,
        alias=alias,
        version_id=version_id,
        detector=detector,
        statistic=float(statistic),
        threshold=float(threshold),
        window=window,
        window_start=window_start,
        window_end=window_end,
        detections=1,
        action=_action_after(1, "none", rollback_after),
        rollback_event_id=None,
        details={"detections": [detection], "rollback_after": rollback_after},
        opened_at=now,
        updated_at=now,
        acked_at=None,
        acked_by=None,
        ack_note=None,
    )
    session.add(row)
    session.flush()
    return incident_info(session, row)


def extend_incident(
    session: Session, incident_id: int, detection: dict[str, Any], *, rollback_after: int | None
) -> Incident:
    """One more consecutive alarmed window on an open episode."""
    row = _row(session, incident_id)
    row.detections += 1
    # JSON columns are not mutation-tracked: assign a new object.
    row.details = {**row.details, "detections": [*row.details.get("detections", []), detection]}
    row.action = _action_after(row.detections, row.action, rollback_after)
    row.updated_at = utcnow()
    session.flush()
    return incident_info(session, row)


def rollback_incident(session: Session, incident_id: int, *, actor: str | None) -> Incident:
    """Carry out a due rollback: alias, history and incident in the caller's one transaction."""
    row = _row(session, incident_id)
    if row.action != "rollback_due":
        return incident_info(session, row)  # done already (a second guard, or a retried call)
    model = session.get(ModelRow, row.model_id)
    assert model is not None  # foreign key
    lock_model(session, model.id)
    current = session.scalar(
        select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.name == row.alias)
    )
    row.updated_at = utcnow()
    if current is None or current.version_id != row.version_id:
        row.action = "superseded"
        session.flush()
        return incident_info(session, row)
    reason = f"incident {row.id}: {row.detections} consecutive alarmed windows ({row.detector})"
    try:
        change = aliases.rollback(session, model, row.alias, reason=reason, actor=actor)
    except RefusedError as e:
        row.action = "rollback_refused"
        row.details = {**row.details, "refused": str(e)}
        session.flush()
        return incident_info(session, row)
    assert change.event is not None  # a rollback always moves the alias
    row.action = "rolled_back"
    row.rollback_event_id = change.event.id
    session.flush()
    return incident_info(session, row)


def acknowledge(session: Session, incident_id: int, *, by: str | None, note: str | None) -> Incident:
    row = _row(session, incident_id)
    if row.acked_at is None:  # acknowledging twice keeps the first acknowledgement
        row.acked_at = utcnow()
        row.acked_by = by if by is not None else aliases.login_name()
        row.ack_note = note
        row.updated_at = row.acked_at
        session.flush()
    return incident_info(session, row)


def list_incidents(
    session: Session, model_name: str | None, alias: str | None, *, actions: tuple[str, ...] | None = None
) -> list[Incident]:
    query = select(IncidentRow)
    if model_name is not None:
        query = query.where(IncidentRow.model_id == find_model(session, model_name).id)
    if alias is not None:
        query = query.where(IncidentRow.alias == check_alias_name(alias))
    if actions is not None:
        query = query.where(IncidentRow.action.in_(actions))
    return [incident_info(session, row) for row in session.scalars(query.order_by(IncidentRow.id))]


def get(session: Session, incident_id: int) -> Incident:
    return incident_info(session, _row(session, incident_id))


def incident_info(session: Session, row: IncidentRow) -> Incident:
    model = session.get(ModelRow, row.model_id)
    assert model is not None
    version = version_number(session, row.version_id)
    assert version is not None
    event = None
    if row.rollback_event_id is not None:
        history_row = session.get(AliasHistoryRow, row.rollback_event_id)
        assert history_row is not None
        event = aliases.event_info(session, model.name, history_row)
    return Incident(
        id=row.id,
        model=model.name,
        alias=row.alias,
        version=version,
        detector=row.detector,
        statistic=row.statistic,
        threshold=row.threshold,
        window=row.window,
        window_start=row.window_start,
        window_end=row.window_end,
        detections=row.detections,
        action=cast(IncidentAction, row.action),
        rollback_event=event,
        details=dict(row.details),
        opened_at=row.opened_at,
        updated_at=row.updated_at,
        acked_at=row.acked_at,
        acked_by=row.acked_by,
        ack_note=row.ack_note,
    )


def _action_after(detections: int, action: str, rollback_after: int | None) -> str:
    if action == "none" and rollback_after is not None and detections >= rollback_after:
        return "rollback_due"
    return action


def _row(session: Session, incident_id: int) -> IncidentRow:
    row = session.get(IncidentRow, incident_id)
    if row is None:
        raise NotFoundError(f"No incident with id {incident_id}. `assay incidents list` shows them.")
    return row

"""Incidents in the store: the order of writes that keeps alias, history and incident consistent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tests.unit.store.conftest import Register

from assay.errors import NotFoundError
from assay.store import Store
from assay.store.records import Incident

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def detection(window: int) -> dict[str, Any]:
    return {
        "window": window,
        "alarms": ["features"],
        "detectors": {"features": {"statistic": 9.0, "threshold": 4.0}},
    }


def open_one(store: Store, version: int, *, rollback_after: int | None = 2, window: int = 0) -> Incident:
    return store.open_incident(
        "mnist", "production", version, detector="features", statistic=9.0, threshold=4.0, window=window,
        window_start=T0, window_end=T0, detection=detection(window), rollback_after=rollback_after,
    )  # fmt: skip


@pytest.fixture
def promoted(store: Store, register: Register) -> Store:
    """v1 then v2 promoted to production."""
    for _ in range(2):
        store.promote(register("mnist").ref)
    return store


def alias_version(store: Store) -> int:
    current = store.current_alias("mnist", "production")
    assert current is not None
    return current.version


def test_the_nth_consecutive_detection_makes_the_rollback_due_and_the_rollback_commits_with_it(
    promoted: Store,
) -> None:
    store = promoted
    incident = open_one(store, 2)
    assert (incident.detections, incident.action, incident.status) == (1, "none", "open")
    incident = store.extend_incident(incident.id, detection(1), rollback_after=2)
    assert (incident.detections, incident.action) == (2, "rollback_due")
    assert [i.id for i in store.list_incidents("mnist", due_only=True)] == [incident.id]
    assert alias_version(store) == 2  # decided, not yet carried out

    done = store.rollback_incident(incident.id)
    assert done.action == "rolled_back" and done.status == "rolled back"
    assert done.rollback_event is not None
    assert (done.rollback_event.from_version, done.rollback_event.to_version) == (2, 1)
    assert alias_version(store) == 1
    last = store.alias_history("mnist", "production")[-1]
    assert (last.action, last.id, last.actor) == ("rollback", done.rollback_event.id, "assay-serve")
    assert f"incident {incident.id}" in (last.reason or "")
    assert [d["window"] for d in done.details["detections"]] == [0, 1]
    assert store.list_incidents("mnist", due_only=True) == []


def test_a_rollback_is_carried_out_once_however_often_it_is_asked_for(promoted: Store) -> None:
    store = promoted
    incident = open_one(store, 2, rollback_after=1)
    assert incident.action == "rollback_due"
    first = store.rollback_incident(incident.id)
    again = store.rollback_incident(incident.id)
    assert first.action == again.action == "rolled_back"
    assert [e.action for e in store.alias_history("mnist", "production")] == [
        "promote",
        "promote",
        "rollback",
    ]


def test_a_late_rollback_never_undoes_a_promotion_made_meanwhile(promoted: Store, register: Register) -> None:
    store = promoted
    incident = open_one(store, 2, rollback_after=1)
    store.promote(register("mnist").ref)  # someone released v3 before the guard acted
    done = store.rollback_incident(incident.id)
    assert done.action == "superseded"
    assert alias_version(store) == 3


def test_nothing_to_roll_back_to_is_recorded_not_raised(store: Store, register: Register) -> None:
    store.promote(register("mnist").ref)
    done = store.rollback_incident(open_one(store, 1, rollback_after=1).id)
    assert done.action == "rollback_refused"
    assert "no earlier promotion" in done.details["refused"]
    assert alias_version(store) == 1


def test_without_a_rollback_policy_incidents_are_only_recorded(promoted: Store) -> None:
    incident = open_one(promoted, 2, rollback_after=None)
    for window in range(1, 5):
        incident = promoted.extend_incident(incident.id, detection(window), rollback_after=None)
    assert (incident.detections, incident.action) == (5, "none")


def test_acknowledging_keeps_the_first_acknowledgement(promoted: Store) -> None:
    incident = open_one(promoted, 2)
    acked = promoted.acknowledge_incident(incident.id, by="ana", note="contrast drop upstream")
    again = promoted.acknowledge_incident(incident.id, by="bob")
    assert (again.acked_by, again.ack_note, again.status) == ("ana", "contrast drop upstream", "acknowledged")
    assert again.acked_at == acked.acked_at


def test_unknown_incidents_and_models_are_not_found(promoted: Store) -> None:
    with pytest.raises(NotFoundError, match="No incident with id 99"):
        promoted.get_incident(99)
    with pytest.raises(NotFoundError, match="No model named 'nope'"):
        promoted.list_incidents("nope")
    with pytest.raises(NotFoundError, match="no version 7"):
        open_one(promoted, 7)

"""The rollback guard on a real store: which windows open, extend or end an incident, when it rolls back,
and that its budget stops it from walking an alias back through its history."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.serve.drift import DetectorResult
from assay.serve.guard import RollbackGuard
from assay.serve.monitor import WindowResult
from assay.store import Store


def window(index: int, alarm: bool) -> WindowResult:
    results = (
        DetectorResult("features", 9.0 if alarm else 1.0, 4.0, alarm, {}),
        DetectorResult("embeddings", 0.2 if alarm else 0.01, 0.05, alarm, {}),
        DetectorResult("confidence", 1.0, 3.0, False, {}),
    )
    return WindowResult(index, 100, 1000.0 + index, 1001.0 + index, results)


def feedback(index: int, alarm: bool) -> WindowResult:
    results = (DetectorResult("accuracy", 6.0 if alarm else 0.5, 3.0, alarm, {}),)
    return WindowResult(index, 100, 2000.0 + index, 2001.0 + index, results, stream="feedback")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(home=tmp_path / "home")
    for _ in range(3):
        v = store.register_version(
            "m",
            artifact_dir=None,
            spec={"arch": "mlp"},
            config_hash="c",
            parent=None,
            lineage={},
            environment={},
        )
        store.promote(v.ref, force=True, reason="set-up")
    return store


def production(store: Store) -> int:
    current = store.current_alias("m", "production")
    assert current is not None
    return current.version


def test_consecutive_alarms_extend_one_incident_and_a_clean_window_ends_it(store: Store) -> None:
    guard = RollbackGuard(store, "m", "production", rollback_after=None)
    guard.on_windows(3, [window(0, True), window(1, True), window(2, False), window(3, True)])
    first, second = store.list_incidents("m")
    assert (first.window, first.detections, second.window, second.detections) == (0, 2, 3, 1)
    # Named after the detector furthest past its threshold: embeddings at 4x, features at 2.25x.
    assert (first.detector, first.statistic, first.threshold) == ("embeddings", 0.2, 0.05)
    assert {d["window"] for d in first.details["detections"]} == {0, 1}
    assert production(store) == 3  # no rollback policy: nothing moved


def test_the_nth_consecutive_alarm_rolls_back_once_within_the_budget(store: Store) -> None:
    rolled = []
    guard = RollbackGuard(
        store, "m", "production", rollback_after=2, max_rollbacks=1, on_rollback=rolled.append
    )
    guard.on_windows(3, [window(0, True), window(1, True)])
    assert production(store) == 2 and len(rolled) == 1
    assert rolled[0].action == "rolled_back" and rolled[0].rollback_event.to_version == 2  # type: ignore[union-attr]
    # The same shift on the version rolled back to: recorded, but the budget of one rollback is spent.
    guard.on_windows(2, [window(0, True), window(1, True), window(2, True)])
    assert production(store) == 2 and len(rolled) == 1
    last = store.list_incidents("m")[-1]
    assert (last.version, last.detections, last.action) == (2, 3, "none")


def test_alarms_on_another_version_open_a_new_incident(store: Store) -> None:
    guard = RollbackGuard(store, "m", "production", rollback_after=None)
    guard.on_windows(3, [window(4, True)])
    guard.on_windows(2, [window(5, True)])  # the next window index, but served by another version
    assert [(i.version, i.detections) for i in store.list_incidents("m")] == [(3, 1), (2, 1)]


def test_recover_finishes_the_rollbacks_a_crash_left_due(store: Store) -> None:
    due = RollbackGuard(store, "m", "production", rollback_after=1)
    due._carry_out = lambda incident: incident  # type: ignore[method-assign]  # the process died here
    due.on_windows(3, [window(0, True)])
    assert production(store) == 3 and store.list_incidents("m", due_only=True)
    restarted = RollbackGuard(store, "m", "production", rollback_after=1)
    [done] = restarted.recover()
    assert done.action == "rolled_back" and production(store) == 2
    assert restarted.rollbacks == 1 and store.list_incidents("m", due_only=True) == []


def test_feedback_windows_neither_extend_nor_end_a_run_of_traffic_alarms(store: Store) -> None:
    guard = RollbackGuard(store, "m", "production", rollback_after=None)
    # traffic windows 0-2 alarm, interleaved with feedback windows: the clean feedback window 0 does not end
    # their run, and the alarmed feedback windows 1-3 form a run of their own, which traffic 3 does not end
    guard.on_windows(3, [window(0, True), feedback(0, False), window(1, True), feedback(1, True)])
    guard.on_windows(3, [window(2, True), feedback(2, True), feedback(3, True), window(3, False)])
    guard.on_windows(3, [feedback(4, False), window(4, True)])
    traffic, late, again = store.list_incidents("m")
    assert (traffic.window, traffic.detections, traffic.detector) == (0, 3, "embeddings")
    assert (late.window, late.detections, late.detector) == (1, 3, "accuracy")  # one incident of three
    assert (again.window, again.detections) == (4, 1)  # a clean traffic window ended the first run
    assert [d["stream"] for d in traffic.details["detections"]] == ["traffic"] * 3
    assert [(d["stream"], d["window"]) for d in late.details["detections"]] == [
        ("feedback", 1),
        ("feedback", 2),
        ("feedback", 3),
    ]


def test_consecutive_feedback_alarms_roll_back(store: Store) -> None:
    guard = RollbackGuard(store, "m", "production", rollback_after=2)
    guard.on_windows(3, [window(7, True), feedback(0, True)])
    assert production(store) == 3  # one alarm in each stream: neither run is two long
    guard.on_windows(3, [feedback(1, True)])
    assert production(store) == 2
    rolled = [i for i in store.list_incidents("m") if i.action == "rolled_back"]
    assert [(i.detector, i.detections) for i in rolled] == [("accuracy", 2)]

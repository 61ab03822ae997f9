from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from assay.errors import NotFoundError, RefusedError, UsageError
from assay.measurement import Measurement
from assay.store import Store, VersionInfo
from assay.store import aliases as aliases_module
from assay.store.tables import AliasRow


def gate(store: Store, ref: str, passed: bool) -> None:
    run = store.record_run(
        kind="evaluation",
        document={},
        measurements=[Measurement("accuracy", "quality", 0.9)],
        version=ref,
        baseline=None,
        dataset_fingerprint="fp",
        split="test",
        passed=passed,
        report_path=None,
    )
    store.set_gate(ref, run, passed)


def moves(store: Store, alias: str = "production") -> list[tuple[str, int | None, int]]:
    return [(e.action, e.from_version, e.to_version) for e in store.alias_history("mnist", alias)]


@pytest.fixture
def three(register: Callable[..., VersionInfo]) -> None:
    for _ in range(3):
        register("mnist")


@pytest.mark.usefixtures("three")
def test_promotion_moves_the_alias_and_appends_history(store: Store) -> None:
    first = store.promote("mnist@1", reason="first release", actor="ana")
    second = store.promote("mnist@2", actor="ben")

    assert (first.changed, first.from_version, first.to_version) == (True, None, 1)
    assert (second.from_version, second.to_version) == (1, 2)
    assert "from v1" in second.message
    current = store.current_alias("mnist", "production")
    assert current is not None and current.version == 2
    events = store.alias_history("mnist")
    assert [(e.action, e.from_version, e.to_version, e.actor) for e in events] == [
        ("promote", None, 1, "ana"),
        ("promote", 1, 2, "ben"),
    ]
    assert events[0].reason == "first release" and not events[0].forced
    assert events[0].at <= events[1].at


@pytest.mark.usefixtures("three")
def test_promoting_to_the_current_version_is_a_no_op_that_says_so(store: Store) -> None:
    store.promote("mnist@2")
    again = store.promote("mnist@v2", force=True)
    assert not again.changed and again.event is None
    assert "already points at v2" in again.message
    assert len(store.alias_history("mnist")) == 1


@pytest.mark.usefixtures("three")
def test_repeated_rollbacks_walk_back_through_promotions(store: Store) -> None:
    for v in (1, 2, 3):
        store.promote(f"mnist@{v}")

    assert store.rollback("mnist", reason="latency").to_version == 2
    assert store.rollback("mnist").to_version == 1
    with pytest.raises(RefusedError, match="no earlier promotion is still in effect"):
        store.rollback("mnist")
    store.promote("mnist@3")
    last = store.rollback("mnist", actor="ops")

    assert (last.from_version, last.to_version) == (3, 1)
    assert store.resolve("mnist@production").version == 1
    assert moves(store) == [
        ("promote", None, 1),
        ("promote", 1, 2),
        ("promote", 2, 3),
        ("rollback", 3, 2),
        ("rollback", 2, 1),
        ("promote", 1, 3),
        ("rollback", 3, 1),
    ]
    assert store.alias_history("mnist")[3].reason == "latency"


@pytest.mark.usefixtures("three")
def test_re_promoting_an_older_version_is_undone_by_one_rollback(store: Store) -> None:
    for v in (1, 2, 1):
        store.promote(f"mnist@{v}")
    assert store.rollback("mnist").to_version == 2
    assert store.rollback("mnist").to_version == 1


@pytest.mark.usefixtures("three")
def test_a_failed_gate_refuses_promotion_unless_forced_and_the_force_is_recorded(store: Store) -> None:
    store.promote("mnist@1")
    gate(store, "mnist@2", passed=False)

    with pytest.raises(RefusedError, match=r"gate failed.*--force"):
        store.promote("mnist@2")
    assert store.resolve("mnist@production").version == 1
    assert len(store.alias_history("mnist")) == 1

    forced = store.promote("mnist@2", force=True, reason="hotfix, accepted risk", actor="lead")
    assert forced.changed and "forced" in forced.message
    event = store.alias_history("mnist")[-1]
    assert (event.forced, event.reason, event.actor, event.to_version) == (
        True,
        "hotfix, accepted risk",
        "lead",
        2,
    )

    # Rollback leaves the forced version for the one before it, whatever that one's gate said.
    assert store.rollback("mnist").to_version == 1


@pytest.mark.usefixtures("three")
def test_force_is_not_recorded_when_no_rule_was_overridden(store: Store) -> None:
    gate(store, "mnist@1", passed=True)
    store.promote("mnist@1", force=True)
    store.promote("mnist@2", force=True)  # gate "none": nothing to override
    assert [e.forced for e in store.alias_history("mnist")] == [False, False]


@pytest.mark.usefixtures("three")
def test_aliases_keep_separate_histories(store: Store) -> None:
    store.promote("mnist@1", "staging")
    store.promote("mnist@2", "staging")
    store.promote("mnist@staging", "production")  # a reference may itself go through an alias

    assert store.rollback("mnist", "staging").to_version == 1
    assert store.resolve("mnist@production").version == 2
    with pytest.raises(RefusedError, match="no earlier promotion"):
        store.rollback("mnist", "production")
    assert moves(store, "production") == [("promote", None, 2)]
    assert [e.alias for e in store.alias_history("mnist")] == ["staging", "staging", "production", "staging"]


@pytest.mark.usefixtures("three")
def test_rollback_and_lookups_without_an_alias(store: Store) -> None:
    with pytest.raises(RefusedError, match="no alias 'production'"):
        store.rollback("mnist")
    with pytest.raises(NotFoundError, match="No model named 'ghost'"):
        store.rollback("ghost")
    with pytest.raises(NotFoundError, match="No model named 'ghost'"):
        store.current_alias("ghost", "production")
    assert store.current_alias("mnist", "production") is None
    assert store.alias_history("mnist") == []
    with pytest.raises(UsageError, match="reads as a version"):
        store.promote("mnist@1", "v2")


@pytest.mark.usefixtures("three")
def test_an_alias_moved_between_read_and_write_is_retried(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.promote("mnist@1")
    real: Callable[..., AliasRow | None] = aliases_module._alias_row
    calls: list[int] = []

    def stale_first(session: Session, model_id: int, alias: str) -> AliasRow | None:
        # The first attempt reads the alias as it was before a concurrent move to v3; the guarded UPDATE
        # must then match no row, and the store must retry with a fresh read.
        calls.append(1)
        row = real(session, model_id, alias)
        if len(calls) == 1 and row is not None:
            return AliasRow(id=row.id, model_id=row.model_id, name=row.name, version_id=row.version_id + 2)
        return row

    monkeypatch.setattr(aliases_module, "_alias_row", stale_first)
    change = store.promote("mnist@2")
    assert len(calls) == 2
    assert (change.from_version, change.to_version) == (1, 2)
    assert moves(store) == [("promote", None, 1), ("promote", 1, 2)]

"""Every multi-row change is one transaction: a failure at any point leaves no row of it behind."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from assay.measurement import Comparison, Measurement
from assay.store import Store, VersionInfo
from assay.store import aliases as aliases_module
from assay.store import runs as runs_module
from assay.store import store as store_module

Rows = Callable[[], dict[str, int]]


class Boom(Exception):
    pass


def boom(*args: object, **kwargs: object) -> None:
    raise Boom


def test_a_run_failing_after_its_measurements_were_written_leaves_nothing(
    store: Store, register: Callable[..., VersionInfo], rows: Rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    register("mnist", gated=False)
    before = rows()
    # The run row and the candidate measurements are flushed by the time comparisons are built.
    monkeypatch.setattr(runs_module, "comparison_row", boom)
    with pytest.raises(Boom):
        store.record_run(
            kind="comparison",
            document={},
            measurements=[Measurement("accuracy", "quality", 0.9), Measurement("ece", "calibration", 0.1)],
            comparisons=[Comparison("accuracy", "quality", 0.8, 0.9, 0.1, 0.0, 0.2, 0.01, "McNemar")],
            version="mnist@1",
            baseline=None,
            dataset_fingerprint="fp",
            split="test",
            passed=None,
            report_path=None,
        )
    assert rows() == before
    assert before["runs"] == 0 and before["measurements"] == 0


def test_a_registration_failing_after_the_model_row_leaves_no_model(
    store: Store, register: Callable[..., VersionInfo], rows: Rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "new_version_row", boom)
    with pytest.raises(Boom):
        register("mnist")
    assert rows()["models"] == 0
    assert store.list_models() == []


def test_a_promotion_failing_while_appending_history_leaves_the_alias_where_it_was(
    store: Store, register: Callable[..., VersionInfo], rows: Rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    register("mnist")
    register("mnist")
    store.promote("mnist@1")
    store.promote("mnist@2")
    before = rows()

    monkeypatch.setattr(aliases_module, "append_history", boom)
    with pytest.raises(Boom):
        store.promote("mnist@1")  # moves an existing alias
    with pytest.raises(Boom):
        store.promote("mnist@2", "staging")  # creates a new alias
    with pytest.raises(Boom):
        store.rollback("mnist")

    assert rows() == before
    assert store.resolve("mnist@production").version == 2
    assert store.current_alias("mnist", "staging") is None

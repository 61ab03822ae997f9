from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from assay.errors import NotFoundError, UsageError
from assay.measurement import Comparison, Measurement
from assay.store import Store, VersionInfo

ACCURACY = Measurement(
    "accuracy",
    "quality",
    0.91,
    0.90,
    0.92,
    n=10000,
    higher_is_better=True,
    estimator="top-1",
    details={"k": 1},
)
ECE = Measurement("ece", "calibration", math.nan, n=10000, higher_is_better=False, estimator="15 bins")
SKIPPED = Measurement.skipped("pgd", "adversarial", "no gradients")
DELTA = Comparison(
    "accuracy",
    "quality",
    baseline=0.90,
    candidate=0.91,
    delta=0.01,
    delta_ci_low=-0.002,
    delta_ci_high=0.021,
    p_value=0.03,
    test="exact McNemar",
    n=10000,
    higher_is_better=True,
    details={"b": 12, "c": 4},
)


def record(store: Store, version: str | None, **extra: Any) -> int:
    fields: dict[str, Any] = {
        "kind": "evaluation",
        "document": {"schema": 1},
        "measurements": [ACCURACY],
        "version": version,
        "baseline": None,
        "dataset_fingerprint": "fp",
        "split": "test",
        "passed": None,
        "report_path": None,
    }
    return store.record_run(**{**fields, **extra})


def test_a_comparison_run_round_trips_with_every_measurement(
    store: Store, register: Callable[..., VersionInfo]
) -> None:
    register("mnist", gated=False)
    register("mnist", gated=False)
    run_id = store.record_run(
        kind="comparison",
        document={"summary": {"accuracy": 0.91, "ece": math.inf}, "ids": np.arange(3)},
        measurements=[ACCURACY, ECE, SKIPPED],
        baseline_measurements=[Measurement("accuracy", "quality", 0.90, n=10000)],
        comparisons=[DELTA],
        version="mnist@2",
        baseline="mnist@1",
        dataset_fingerprint="fp",
        split="test",
        passed=True,
        report_path="reports/run.html",
    )

    run = store.get_run(run_id)
    assert (run.kind, run.version, run.baseline, run.passed) == ("comparison", "mnist@v2", "mnist@v1", True)
    assert run.report_path == "reports/run.html"
    assert run.document == {"summary": {"accuracy": 0.91, "ece": None}, "ids": [0, 1, 2]}
    assert run.measurements == (ACCURACY, Measurement.from_dict({**ECE.to_dict(), "value": None}), SKIPPED)
    assert run.baseline_measurements == (Measurement("accuracy", "quality", 0.90, n=10000),)
    assert run.comparisons == (DELTA,)


def test_runs_for_lists_the_runs_that_evaluated_a_version(
    store: Store, register: Callable[..., VersionInfo]
) -> None:
    register("mnist", gated=False)
    register("mnist", gated=False)
    first = record(store, "mnist@1")
    second = record(store, "mnist@2", kind="comparison", baseline="mnist@1")
    record(store, None)  # outputs of an unregistered model

    assert [r.id for r in store.runs_for("mnist@1")] == [first]
    listed = store.runs_for("mnist@2")
    assert [r.id for r in listed] == [second]
    assert listed[0].document is None and listed[0].measurements == ()
    assert store.get_run(second).measurements == (ACCURACY,)


def test_the_gate_verdict_is_set_from_the_run_that_evaluated_the_version(
    store: Store, register: Callable[..., VersionInfo]
) -> None:
    register("mnist", gated=False)
    register("mnist", gated=False)
    run_id = record(store, "mnist@2", passed=False)

    info = store.set_gate("mnist@2", run_id, passed=False)
    assert (info.gate_status, info.gate_run_id) == ("failed", run_id)
    assert store.resolve("mnist@2").gate_status == "failed"
    assert store.set_gate("mnist@2", run_id, passed=True).gate_status == "passed"

    with pytest.raises(UsageError, match=r"Run \d+ evaluated mnist@v2, not 'mnist@1'"):
        store.set_gate("mnist@1", run_id, passed=True)
    with pytest.raises(NotFoundError, match="No run with id 999"):
        store.set_gate("mnist@2", 999, passed=True)
    with pytest.raises(NotFoundError, match="No run with id 999"):
        store.get_run(999)


def test_bad_run_input_is_refused_before_writing(store: Store, register: Callable[..., VersionInfo]) -> None:
    register("mnist", gated=False)
    with pytest.raises(UsageError, match="kind must be one of"):
        record(store, "mnist@1", kind="training")
    with pytest.raises(UsageError, match=r"measurements\[0\] must be a Measurement"):
        record(store, "mnist@1", measurements=[{"name": "accuracy"}])
    with pytest.raises(UsageError, match=r"document\.path"):
        record(store, "mnist@1", document={"path": object()})
    with pytest.raises(UsageError, match="keys must be strings"):
        record(store, "mnist@1", document={1: "x"})
    with pytest.raises(NotFoundError, match="has no version 4"):
        record(store, "mnist@4")
    assert store.runs_for("mnist@1") == []


def test_datasets_are_registered_once_per_fingerprint(store: Store) -> None:
    splits = {"train": {"fingerprint": "a", "n": 60000}, "test": {"fingerprint": "b", "n": 10000}}
    first = store.register_dataset(
        "fashion-mnist", "fp1", source="/usr/share/datasets", licence="MIT", n_examples=70000, splits=splits
    )
    again = store.register_dataset(
        "renamed", "fp1", source="elsewhere", licence=None, n_examples=1, splits=splits
    )

    assert again == first
    assert store.get_dataset("fp1").splits == splits
    with pytest.raises(NotFoundError, match="fp2"):
        store.get_dataset("fp2")
    with pytest.raises(UsageError, match="Split 'test'"):
        store.register_dataset("x", "fp3", source="s", licence=None, n_examples=1, splits={"test": {"n": 1}})
    with pytest.raises(UsageError, match="fingerprint"):
        store.register_dataset("x", "", source="s", licence=None, n_examples=1, splits=splits)

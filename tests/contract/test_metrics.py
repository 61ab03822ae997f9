"""The contract every registered metric keeps, and what measure()/calibration_report() promise.

Runs over every name in METRICS, so a plugin metric is tested the moment it is registered.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, recall_score

from assay.errors import NotFoundError, UsageError
from assay.gate import Policy, Rule, evaluate_policy
from assay.metrics import METRICS, MetricSpec, calibration_report, measure
from assay.metrics.calibration import PLUG_IN_NOTE, ece, mce_interval, plug_in_l2
from assay.outputs import Outputs, from_arrays
from assay.stats import bootstrap_indices, wilson_interval

NAMES = METRICS.names()


def random_outputs(seed: int = 0, n: int = 400, n_classes: int = 4, *, logits: bool = True) -> Outputs:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, n_classes))
    labels = np.where(rng.random(n) < 0.5, z.argmax(1), rng.integers(0, n_classes, n))
    return (
        from_arrays(labels, logits=z)
        if logits
        else from_arrays(labels, probs=np.exp(z) / np.exp(z).sum(1)[:, None])
    )


def test_builtin_metrics_are_registered() -> None:
    assert {"accuracy", "macro_f1", "nll", "brier", "ece", "ece_debiased", "adaptive_ece", "mce"} <= set(
        NAMES
    )


@pytest.mark.parametrize("name", NAMES)
def test_metric_is_a_finite_float_with_estimator_and_family(name: str) -> None:
    spec = METRICS.get(name)
    o = random_outputs()
    value = spec.fn(o.labels, o.probs)
    assert isinstance(value, float) and math.isfinite(value)
    assert spec.name == name and spec.estimator.strip() and spec.family in ("quality", "calibration")
    assert spec.interval in ("wilson", "bootstrap", "custom")
    assert (spec.interval == "custom") == (spec.custom_interval is not None)


@pytest.mark.parametrize("name", NAMES)
def test_metric_does_not_depend_on_example_order(name: str) -> None:
    spec = METRICS.get(name)
    o = random_outputs(1)
    perm = np.random.default_rng(1).permutation(o.n)
    assert spec.fn(o.labels[perm], o.probs[perm]) == pytest.approx(
        spec.fn(o.labels, o.probs), rel=1e-12, abs=1e-15
    )


@pytest.mark.parametrize("name", NAMES)
def test_fast_bootstrap_path_equals_the_metric_on_each_resample(name: str) -> None:
    spec = METRICS.get(name)
    o = random_outputs(2, n=150)
    rows = bootstrap_indices(o.n, 25, seed=3)
    expected = [spec.fn(o.labels[r], o.probs[r]) for r in rows]
    replicates = spec.statistic_replicates(o.labels, o.probs)(rows)
    np.testing.assert_allclose(replicates, expected, rtol=1e-10, atol=1e-12)
    if spec.recentred is None:  # otherwise the recentred replicates are tested against a reference
        np.testing.assert_array_equal(spec.resampler(o.labels, o.probs)(rows), replicates)


@pytest.mark.parametrize("name", NAMES)
def test_measure_gives_value_inside_its_interval(name: str) -> None:
    o = random_outputs(3)
    (m,) = measure(o, [name], n_boot=300, seed=0)
    assert m.status == "ok" and m.name == name and m.n == o.n
    assert m.ci_low is not None and m.ci_high is not None and m.value is not None
    assert m.ci_low <= m.value <= m.ci_high
    assert m.value == pytest.approx(METRICS.get(name).fn(o.labels, o.probs))
    assert m.estimator == METRICS.get(name).estimator
    json.dumps(m.to_dict())


def test_accuracy_interval_is_wilson_and_others_are_seeded_bootstrap() -> None:
    o = random_outputs(4)
    by_name = {m.name: m for m in measure(o, n_boot=200, seed=7)}
    acc = by_name["accuracy"]
    assert (acc.ci_low, acc.ci_high) == wilson_interval(int(o.correct.sum()), o.n)
    assert by_name["ece"].details == {
        "interval": "percentile bootstrap",
        "n_boot": 200,
        "seed": 7,
        "note": PLUG_IN_NOTE,
    }
    again = {m.name: m for m in measure(o, n_boot=200, seed=7)}
    other = {m.name: m for m in measure(o, n_boot=200, seed=8)}
    assert again["ece"] == by_name["ece"]
    assert other["ece"].ci_low != by_name["ece"].ci_low


def test_measure_reports_per_class_recall_with_wilson_intervals() -> None:
    o = random_outputs(5, n_classes=3)
    names = ["cat", "dog", "eel"]
    recalls = [m for m in measure(o, n_boot=50, class_names=names) if m.name.startswith("recall[")]
    assert [m.name for m in recalls] == ["recall[cat]", "recall[dog]", "recall[eel]"]
    expected = recall_score(o.labels, o.preds, average=None)
    np.testing.assert_allclose(np.array([m.value for m in recalls], dtype=float), expected)
    support = np.bincount(o.labels)
    for m, k, s in zip(recalls, expected, support, strict=True):
        assert m.n == s and (m.ci_low, m.ci_high) == wilson_interval(round(k * s), int(s))


def test_recall_of_an_absent_class_is_skipped() -> None:
    probs = np.tile([0.5, 0.3, 0.2], (4, 1))
    o = from_arrays(np.array([0, 0, 1, 1]), probs=probs)
    absent = [m for m in measure(o, ["recall"]) if m.name == "recall[2]"]
    assert absent[0].status == "skipped" and "no examples" in absent[0].details["reason"]


def test_measure_rejects_unknown_names_and_wrong_class_names() -> None:
    o = random_outputs()
    with pytest.raises(NotFoundError, match="Unknown metric 'ecee'"):
        measure(o, ["ecee"])
    with pytest.raises(UsageError, match="class names"):
        measure(o, ["accuracy"], class_names=["a"])


def test_a_failing_metric_becomes_an_error_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(labels: np.ndarray, probs: np.ndarray) -> float:
        raise RuntimeError("plugin exploded")

    spec = MetricSpec("boom", "quality", boom, True, "always fails")
    monkeypatch.setitem(METRICS._items, "boom", spec)
    results = {m.name: m for m in measure(random_outputs(), n_boot=50)}
    assert results["boom"].status == "error" and "plugin exploded" in results["boom"].details["message"]
    assert results["accuracy"].status == "ok" and results["ece"].status == "ok"


def test_calibration_report_fits_on_validation_and_reports_after_on_test() -> None:
    val, test = random_outputs(6, n=1000), random_outputs(7, n=1000)
    overconfident = lambda o: from_arrays(o.labels, logits=3 * o.logits)  # noqa: E731
    measurements, plots = calibration_report(overconfident(test), overconfident(val), n_boot=200)
    by_name = {m.name: m for m in measurements}
    t, after = by_name["temperature"], by_name["ece_after_temperature"]
    assert t.status == "ok" and t.n == 1000 and t.value is not None and t.value > 1.5
    assert after.ci_low is not None and after.ci_high is not None and after.value is not None
    assert after.value < ece(overconfident(test).labels, overconfident(test).probs)
    assert PLUG_IN_NOTE in after.details["note"]
    assert plots["reliability_after_temperature"] is not None
    assert sum(plots["reliability"]["count"]) == 1000
    np.testing.assert_array_equal(
        plots["confusion_matrix"], confusion_matrix(test.labels, test.preds, labels=range(4))
    )
    json.dumps(plots)


@pytest.mark.parametrize(
    ("val", "test", "reason"),
    [
        (None, random_outputs(), "no validation outputs"),
        (random_outputs(logits=False), random_outputs(), "validation outputs have no logits"),
        (random_outputs(), random_outputs(logits=False), "test outputs have no logits"),
    ],
)
def test_calibration_report_says_why_it_skipped(val: Outputs | None, test: Outputs, reason: str) -> None:
    measurements, plots = calibration_report(test, val)
    assert [m.status for m in measurements] == ["skipped", "skipped"]
    assert all(reason in m.details["reason"] for m in measurements)
    assert plots["reliability_after_temperature"] is None and plots["reliability"]["count"]


def _calibrated_outputs(seed: int) -> Outputs:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.5, (500, 10))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return from_arrays((p.cumsum(1) > rng.random((500, 1))).argmax(1), logits=z)  # labels drawn from p


def test_an_estimate_outside_its_percentile_interval_is_flagged() -> None:
    # A calibrated model at small n: ECE is biased upwards and its resamples more so (seed 1 shows it).
    (flagged,) = measure(_calibrated_outputs(1), ["ece"], n_boot=300)
    assert flagged.value is not None and flagged.ci_low is not None and flagged.value < flagged.ci_low
    outside = (
        "the estimator is biased at this n: its resamples are biased again, so its percentile interval "
        "can sit beside the estimate"
    )
    assert flagged.details["note"] == f"{outside}; {PLUG_IN_NOTE}"
    (plain,) = measure(_calibrated_outputs(0), ["ece"], n_boot=300)
    assert plain.value is not None and plain.ci_low is not None and plain.ci_high is not None
    assert plain.ci_low <= plain.value <= plain.ci_high and plain.details["note"] == PLUG_IN_NOTE
    (debiased,) = measure(_calibrated_outputs(1), ["ece_debiased"], n_boot=300)
    assert debiased.ci_low == 0.0 and "note" not in debiased.details  # it covers the true 0


def test_a_metric_without_a_note_or_outside_estimate_has_none() -> None:
    by_name = {m.name: m for m in measure(random_outputs(8), ["nll", "brier", "macro_f1"], n_boot=200)}
    assert all("note" not in m.details for m in by_name.values())


def test_ece_debiased_carries_the_calibration_test() -> None:
    o = _calibrated_outputs(2)
    (m,) = measure(o, ["ece_debiased"], n_boot=200, seed=4)
    test = m.details["calibration_test"]
    assert set(test) == {"test", "null", "alternative", "statistic", "p_value", "n_resamples"}
    assert test["alternative"] == "greater"  # miscalibration makes the statistic larger
    assert test["test"] == "consistency resampling (Bröcker & Smith 2007)"
    assert test["null"] == "perfect calibration" and test["n_resamples"] == 200
    assert test["statistic"] == m.value and 1 / 201 <= test["p_value"] <= 1
    assert (
        m.details["plug_in"] == pytest.approx(plug_in_l2(o.labels, o.probs))
        and m.details["plug_in"] > m.value
    )
    assert measure(o, ["ece_debiased"], n_boot=200, seed=4)[0] == m
    json.dumps(m.to_dict())


def test_mce_interval_is_the_simultaneous_one_and_says_so() -> None:
    o = _calibrated_outputs(1)
    (m,) = measure(o, ["mce"], n_boot=200)
    low, high, details = mce_interval(o.labels, o.probs)
    assert (m.ci_low, m.ci_high) == (low, high) and details.items() <= m.details.items()
    assert "no bootstrap interval covers it" in m.details["note"]


@pytest.mark.parametrize("name", [n for n in NAMES if METRICS.get(n).interval == "bootstrap"])
def test_a_gate_rule_judges_the_replicates_the_interval_came_from(name: str) -> None:
    # The gate bounds a candidate's value with the metric's resampler on the same seeded indices, so its
    # interval is the measurement's (for ece_debiased: recentred, not the biased plain resamples).
    o = random_outputs(9)
    spec = METRICS.get(name)
    rule = (
        Rule(name, "at_least", threshold=-10.0)
        if spec.higher_is_better
        else Rule(name, "at_most", threshold=10.0)
    )
    (judged,) = evaluate_policy(Policy("contract", 0.05, 500, 3, (rule,)), o, o).rules
    (m,) = measure(o, [name], n_boot=500, seed=3)
    assert judged.passed and judged.candidate == pytest.approx(m.value, abs=1e-15)
    assert (judged.candidate_ci_low, judged.candidate_ci_high) == pytest.approx(
        (m.ci_low, m.ci_high), abs=1e-15
    )

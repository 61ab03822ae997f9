"""Paired comparisons: alignment, McNemar and paired bootstrap on planted candidates, churn, timings."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from assay.compare import align, churn, compare_measurements, compare_metric, compare_samples
from assay.errors import DataError, UsageError
from assay.gate import Policy, Rule, evaluate_policy
from assay.measurement import Measurement
from assay.outputs import Outputs, from_arrays
from assay.stats import wilson_interval

N_CLASSES = 10


def planted_outputs(labels: np.ndarray, preds: np.ndarray, seed: int = 0) -> Outputs:
    """Outputs whose top-1 predictions are exactly ``preds``, with confidences between 0.5 and 0.95."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    top = rng.uniform(0.5, 0.95, n)
    probs = np.repeat(((1 - top) / (N_CLASSES - 1))[:, None], N_CLASSES, axis=1)
    probs[np.arange(n), preds] = top
    return from_arrays(labels, probs=probs, ids=np.array([f"ex{i}" for i in range(n)]))


def baseline_case(n: int = 10_000, accuracy: float = 0.9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, n)
    wrong = rng.random(n) >= accuracy
    preds = np.where(wrong, (labels + rng.integers(1, N_CLASSES, n)) % N_CLASSES, labels)
    return labels, preds


def flip(labels: np.ndarray, preds: np.ndarray, to_wrong: int, to_right: int, seed: int = 1) -> np.ndarray:
    """Make ``to_wrong`` correct predictions wrong and ``to_right`` wrong predictions right."""
    rng = np.random.default_rng(seed)
    out = preds.copy()
    right, wrong = np.flatnonzero(preds == labels), np.flatnonzero(preds != labels)
    breaks = rng.choice(right, to_wrong, replace=False)
    out[breaks] = (labels[breaks] + 1) % N_CLASSES
    fixes = rng.choice(wrong, to_right, replace=False)
    out[fixes] = labels[fixes]
    return out


def test_identical_candidate_has_zero_delta_p_one_and_no_churn() -> None:
    labels, preds = baseline_case(2000)
    base = planted_outputs(labels, preds)
    for name in ("accuracy", "ece", "nll"):
        result = compare_metric(base, base, name, n_boot=200)
        c = result.comparison
        assert c.delta == 0.0 and c.p_value == 1.0 and c.delta_ci_low == c.delta_ci_high == 0.0
        assert np.all(result.delta_samples == 0.0)
    assert compare_metric(base, base, "accuracy").comparison.test == "exact McNemar"
    assert compare_metric(base, base, "ece", n_boot=100).comparison.test == "paired bootstrap"
    assert [m.value for m in churn(base, base)] == [0.0, 0.0, 0.0]


def test_accuracy_comparison_uses_exact_mcnemar_and_a_paired_interval() -> None:
    labels, preds = baseline_case(3000)
    base = planted_outputs(labels, preds)
    cand = planted_outputs(labels, flip(labels, preds, to_wrong=60, to_right=25), seed=5)
    c = compare_metric(base, cand, "accuracy", n_boot=500).comparison
    a, b = base.correct, cand.correct
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert c.p_value == pytest.approx(mcnemar(table, exact=True).pvalue)
    assert c.delta == pytest.approx(b.mean() - a.mean())
    assert c.delta is not None and c.delta_ci_low is not None and c.delta_ci_high is not None
    assert c.delta_ci_low < c.delta < c.delta_ci_high < 0  # a planted drop of 35/3000 is visible
    # Pairing makes the interval far narrower than the unpaired one from two independent Wilson intervals.
    widths = [np.subtract(*wilson_interval(int(x.sum()), 3000)[::-1]) for x in (a, b)]
    assert c.delta_ci_high - c.delta_ci_low < 0.5 * np.hypot(*widths)


def _ni_policy(margin: float) -> Policy:
    return Policy(
        "ni", alpha=0.05, n_bootstrap=1000, seed=0, rules=(Rule("accuracy", "non_inferiority", margin),)
    )


def test_a_planted_worse_candidate_fails_non_inferiority() -> None:
    labels, preds = baseline_case()
    right = int(np.sum(labels == preds))
    base = planted_outputs(labels, preds)
    cand = planted_outputs(labels, flip(labels, preds, to_wrong=round(0.03 * right), to_right=0), seed=1)
    verdict = evaluate_policy(_ni_policy(0.005), base, cand)
    assert not verdict.passed
    (rule,) = verdict.rules
    assert (
        rule.status == "ok"
        and not rule.passed
        and rule.delta == pytest.approx(-0.03 * right / 10_000, abs=1e-4)
    )


def test_a_planted_equivalent_candidate_passes_non_inferiority() -> None:
    labels, preds = baseline_case()
    base = planted_outputs(labels, preds)
    cand = planted_outputs(labels, flip(labels, preds, to_wrong=50, to_right=50), seed=1)  # 0.5% each way
    assert np.sum(base.preds != cand.preds) == 100
    verdict = evaluate_policy(_ni_policy(0.01), base, cand)
    assert verdict.passed and verdict.rules[0].passed
    assert verdict.rules[0].p_value is not None and verdict.rules[0].p_value < 0.01


def test_mismatched_ids_or_labels_raise_data_error() -> None:
    labels, preds = baseline_case(100)
    base = planted_outputs(labels, preds)
    other = from_arrays(labels, probs=base.probs, ids=np.array([f"other{i}" for i in range(100)]))
    with pytest.raises(DataError, match="not on the same examples"):
        compare_metric(base, other, "accuracy")
    relabelled = from_arrays((labels + 1) % N_CLASSES, probs=base.probs, ids=base.ids)
    with pytest.raises(DataError, match="different label"):
        churn(base, relabelled)


def test_shuffled_candidate_is_aligned_by_id() -> None:
    labels, preds = baseline_case(1000)
    base = planted_outputs(labels, preds)
    cand = planted_outputs(labels, flip(labels, preds, to_wrong=20, to_right=10), seed=3)
    perm = np.random.default_rng(0).permutation(1000)
    shuffled = from_arrays(cand.labels[perm], probs=cand.probs[perm], ids=cand.ids[perm])
    assert shuffled.fingerprint() != base.fingerprint()
    _, aligned = align(base, shuffled)
    np.testing.assert_array_equal(aligned.ids, base.ids)
    np.testing.assert_array_equal(aligned.probs, cand.probs)
    for name in ("accuracy", "ece"):
        assert (
            compare_metric(base, shuffled, name, n_boot=200).comparison
            == compare_metric(base, cand, name, n_boot=200).comparison
        )


def test_churn_counts_and_wilson_intervals() -> None:
    labels, preds = baseline_case(2000)
    cand_preds = flip(labels, preds, to_wrong=40, to_right=30)
    base, cand = planted_outputs(labels, preds), planted_outputs(labels, cand_preds)
    by_name = {m.name: m for m in churn(base, cand)}
    flipped = int(np.sum(preds != cand_preds))
    assert by_name["churn"].value == flipped / 2000
    assert by_name["churn_correct_to_wrong"].value == 40 / 2000
    assert by_name["churn_wrong_to_correct"].value == 30 / 2000
    m = by_name["churn_correct_to_wrong"]
    assert (m.ci_low, m.ci_high) == wilson_interval(40, 2000) and m.family == "churn"


def test_compare_samples_is_unpaired_and_detects_a_shift() -> None:
    rng = np.random.default_rng(0)
    base = rng.gamma(20, 0.1, 200)
    same = compare_samples("latency_p50_b1", base, base, "p50", n_boot=500)
    assert same.comparison.delta == 0.0 and same.comparison.test == "bootstrap (unpaired)"
    assert same.comparison.p_value is not None and same.comparison.p_value > 0.2  # resampled independently
    faster = compare_samples("latency_p50_b1", base, 0.8 * base, "p50", n_boot=500)
    c = faster.comparison
    assert c.delta == pytest.approx(np.median(0.8 * base) - np.median(base))
    assert c.delta_ci_high is not None and c.delta_ci_high < 0 and c.p_value is not None and c.p_value < 0.01
    mean = compare_samples("x", base, base + 1.0, "mean", n_boot=300).comparison
    assert mean.delta == pytest.approx(1.0)
    with pytest.raises(UsageError, match="Unknown statistic"):
        compare_samples("x", base, base, "p42")


def test_exact_measurements_compare_without_sampling() -> None:
    base = Measurement("size_on_disk", "efficiency", 4e6, unit="bytes", higher_is_better=False)
    cand = Measurement("size_on_disk", "efficiency", 1e6, unit="bytes", higher_is_better=False)
    c = compare_measurements(base, cand, n_boot=100).comparison
    assert c.delta == c.delta_ci_low == c.delta_ci_high == -3e6
    assert c.p_value is None and c.test == "exact (no sampling)"


def test_missing_id_column_is_named_in_the_error() -> None:
    labels, preds = baseline_case(100)
    with_ids = planted_outputs(labels, preds)
    probs = with_ids.probs
    row_numbered = from_arrays(labels, probs=probs)  # no ids: row numbers
    with pytest.raises(DataError, match="candidate ids are row numbers: was an 'id' column missing"):
        align(with_ids, row_numbered)

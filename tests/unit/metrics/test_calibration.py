"""Calibration metrics against torchmetrics, adaptive ECE against a loop reference, temperature scaling,
the debiased L2 error against Kumar et al.'s estimator and a bin-by-bin reference, the calibration test
and the simultaneous MCE interval against references written out bin by bin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import pytest
import torch
from statsmodels.stats.proportion import proportion_confint
from torchmetrics.functional.classification import multiclass_calibration_error

from assay.metrics import METRICS, calibration
from assay.metrics.quality import nll
from assay.outputs import softmax
from assay.stats import bootstrap_indices
from tests.unit.tolerances import gamma


def torchmetrics_ce(
    labels: np.ndarray, probs: np.ndarray, norm: Literal["l1", "max"], n_bins: int = 15
) -> float:
    return float(
        multiclass_calibration_error(
            torch.from_numpy(probs),
            torch.from_numpy(labels),
            num_classes=probs.shape[1],
            n_bins=n_bins,
            norm=norm,
        )
    )


def random_case(seed: int, n: int, n_classes: int, sharpness: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(0, sharpness, (n, n_classes)))
    labels = np.where(rng.random(n) < 0.6, probs.argmax(1), rng.integers(0, n_classes, n))
    return labels, probs


CASES = [(0, 500, 3), (1, 2000, 10), (2, 40, 2), (3, 5000, 5)]
NORMS: tuple[tuple[Literal["l1", "max"], Callable[..., float]], ...] = (
    ("l1", calibration.ece),
    ("max", calibration.mce),
)


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
@pytest.mark.parametrize(("norm", "fn"), NORMS)
def test_matches_torchmetrics(
    seed: int, n: int, c: int, norm: Literal["l1", "max"], fn: Callable[[np.ndarray, np.ndarray], float]
) -> None:
    labels, probs = random_case(seed, n, c)
    # torchmetrics works in float32: agreement to ~1e-6.
    assert fn(labels, probs) == pytest.approx(torchmetrics_ce(labels, probs, norm), abs=2e-6)


def _right_closed_ece(labels: np.ndarray, probs: np.ndarray, n_bins: int) -> float:
    """The other common convention, bins (lower, upper]: used to show the edge cases discriminate."""
    conf, right = probs.max(1), (probs.argmax(1) == labels).astype(float)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    return sum(abs((right - conf)[bins == k].sum()) for k in range(n_bins)) / len(labels)


@pytest.mark.parametrize("n_bins", [4, 8])
def test_confidences_on_bin_edges_go_where_torchmetrics_puts_them(n_bins: int) -> None:
    # Dyadic edges are exact in float32 and float64, so both libraries see the very same numbers.
    # Each edge value shares a bin with interior values under one convention and not under the other.
    conf = np.array([0.5, 0.5, 0.55, 0.625, 0.7, 0.75, 0.75, 0.8, 0.95, 1.0, 1.0, 1.0, 0.875])
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.array([0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    # torchmetrics sums in float32 and the values (0.55, 0.7, ...) are not binary fractions: its error is
    # within gamma(n + 1) of the terms' absolute sum, at most 1 for these gaps, in any summation order.
    for norm, fn in NORMS:
        assert fn(labels, probs, n_bins) == pytest.approx(
            torchmetrics_ce(labels, probs, norm, n_bins), abs=gamma(len(conf) + 1)
        )
    assert calibration.ece(labels, probs, n_bins) != pytest.approx(_right_closed_ece(labels, probs, n_bins))


def test_confidence_of_one_has_its_own_bin() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[1.0, 0.0], [1.0, 0.0], [0.97, 0.03], [0.97, 0.03]])
    # In one merged top bin the gap would be |0.5 - 0.985| = 0.485; split it is (0 + 0.97) / 2.
    assert calibration.ece(labels, probs) == pytest.approx(0.485)
    assert calibration.ece(labels, probs) == pytest.approx(torchmetrics_ce(labels, probs, "l1"), abs=1e-6)
    bins = calibration.reliability_bins(labels, probs)
    assert bins["bin_lower"][-1] == bins["bin_upper"][-1] == 1.0
    assert bins["count"][-1] == 2


def test_all_correct_and_single_class() -> None:
    labels, probs = random_case(7, 300, 4)
    labels = probs.argmax(1)  # every prediction right: ECE = 1 - mean confidence
    assert calibration.ece(labels, probs) == pytest.approx(1 - probs.max(1).mean())
    assert calibration.ece(labels, probs) == pytest.approx(torchmetrics_ce(labels, probs, "l1"), abs=1e-6)
    one = np.zeros(300, dtype=np.int64)  # a split holding one class only
    for norm, fn in NORMS:
        assert fn(one, probs) == pytest.approx(torchmetrics_ce(one, probs, norm), abs=2e-6)


def test_reliability_bins_reproduce_ece() -> None:
    labels, probs = random_case(4, 3000, 6)
    bins = calibration.reliability_bins(labels, probs)
    assert len(bins["count"]) == 15 and sum(bins["count"]) == 3000
    gaps = [
        c * abs(a - f)
        for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True)
        if c
    ]
    assert sum(gaps) / 3000 == pytest.approx(calibration.ece(labels, probs))
    assert all((a is None) == (c == 0) for a, c in zip(bins["accuracy"], bins["count"], strict=True))


def _adaptive_ece_loop(labels: np.ndarray, probs: np.ndarray, n_bins: int) -> float:
    """Reference: sort by confidence, cut into n_bins near-equal runs, weight each |acc - conf|."""
    conf, right = probs.max(1), (probs.argmax(1) == labels).astype(float)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for run in np.array_split(order, n_bins):
        if len(run):
            total += len(run) / len(labels) * abs(right[run].mean() - conf[run].mean())
    return total


@pytest.mark.parametrize(("seed", "n", "c"), [*CASES, (9, 7, 3)])
def test_adaptive_ece_matches_loop_reference(seed: int, n: int, c: int) -> None:
    labels, probs = random_case(seed, n, c)
    assert calibration.adaptive_ece(labels, probs) == pytest.approx(
        _adaptive_ece_loop(labels, probs, 15), abs=1e-12
    )


def test_adaptive_ece_does_not_depend_on_the_order_of_tied_confidences() -> None:
    rng = np.random.default_rng(0)
    conf = np.repeat([0.6, 0.7, 0.8], 10)  # ties that straddle equal-mass cut points
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = (rng.random(30) < 0.5).astype(np.int64)
    reference = calibration.adaptive_ece(labels, probs, 4)
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(30)
        assert calibration.adaptive_ece(labels[perm], probs[perm], 4) == pytest.approx(reference, abs=1e-15)


def test_fit_temperature_recovers_a_planted_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20_000, 5))
    for t_true in (0.5, 2.0):
        p = softmax(logits / t_true)
        labels = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)
        assert calibration.fit_temperature(logits, labels) == pytest.approx(t_true, rel=0.05)


def test_temperature_scaling_lowers_ece_and_nll_of_an_overconfident_model() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (8000, 10))
    truth = softmax(logits)
    labels = (truth.cumsum(1) > rng.random((8000, 1))).argmax(1)
    overconfident = 3.0 * logits  # the same ranking, three times too sharp
    val, test = slice(0, 4000), slice(4000, None)
    t = calibration.fit_temperature(overconfident[val], labels[val])
    assert t == pytest.approx(3.0, rel=0.1)
    before, after = softmax(overconfident[test]), calibration.apply_temperature(overconfident[test], t)
    assert calibration.ece(labels[test], after) < 0.5 * calibration.ece(labels[test], before)
    assert nll(labels[test], after) < nll(labels[test], before)


def test_apply_temperature_one_is_softmax_and_rejects_bad_temperatures() -> None:
    logits = np.random.default_rng(2).normal(size=(5, 3))
    np.testing.assert_allclose(calibration.apply_temperature(logits, 1.0), softmax(logits))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            calibration.apply_temperature(logits, bad)


# --- the debiased L2 calibration error ------------------------------------------------------------------


def _kumar_unbiased_square_ce(confidence: np.ndarray, right: np.ndarray, bins: np.ndarray) -> float:
    """Kumar et al.'s ``unbiased_square_ce`` (p-lambda/verified_calibration, calibration/utils.py),
    transcribed: per bin with at least two examples, (mean confidence − mean label)² minus
    mean_label·(1 − mean_label)/(n − 1), weighted by the bin's share of the examples."""
    total = 0.0
    for b in np.unique(bins):
        conf_b, label_b = confidence[bins == b], right[bins == b]
        if len(conf_b) < 2:
            continue
        mean_label = label_b.mean()
        biased = (conf_b.mean() - mean_label) ** 2
        total += len(conf_b) / len(confidence) * (biased - mean_label * (1 - mean_label) / (len(conf_b) - 1))
    return total


def _gap_reference(confidence: np.ndarray, right: np.ndarray, bins: np.ndarray) -> tuple[float, float]:
    """(debiased, plug-in) squared L2 error, bin by bin with numpy's own mean and ddof=1 variance."""
    debiased = plug_in = 0.0
    for b in np.unique(bins):
        gap = right[bins == b] - confidence[bins == b]
        share = len(gap) / len(confidence)
        plug_in += share * gap.mean() ** 2
        if len(gap) >= 2:
            debiased += share * (gap.mean() ** 2 - gap.var(ddof=1) / len(gap))
    return debiased, plug_in


def _binned(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    confidence, right = probs.max(1), (probs.argmax(1) == labels).astype(float)
    return confidence, right, calibration.equal_width_bins(confidence)


@pytest.mark.parametrize(("seed", "n", "c"), [*CASES, (9, 7, 3)])
def test_ece_debiased_matches_the_bin_by_bin_reference(seed: int, n: int, c: int) -> None:
    labels, probs = random_case(seed, n, c)
    debiased, plug_in = _gap_reference(*_binned(labels, probs))
    assert calibration.ece_debiased(labels, probs) == pytest.approx(np.sqrt(max(debiased, 0.0)), abs=1e-12)
    assert calibration.plug_in_l2(labels, probs) == pytest.approx(np.sqrt(plug_in), abs=1e-12)


def test_ece_debiased_is_kumars_estimator_when_a_bins_confidences_are_equal() -> None:
    rng = np.random.default_rng(5)
    centres = (np.arange(7, 15) + 0.5) / 15  # one confidence per bin, 0.5 to 0.97
    conf = rng.choice(centres, 3000)
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.where(rng.random(3000) < 0.8 * conf, 0, 1)  # class 0, the top one, right with 0.8·conf
    kumar = _kumar_unbiased_square_ce(*_binned(labels, probs))
    assert kumar > 0.001  # a miscalibrated case, so the square root is not clipped
    assert calibration.ece_debiased(labels, probs) == pytest.approx(np.sqrt(kumar), abs=1e-12)


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_ece_debiased_differs_from_kumars_by_the_confidence_spread_in_each_bin(
    seed: int, n: int, c: int
) -> None:
    # Kumar subtracts the label's variance, this estimator the gap's: per bin the squares differ by
    # (s²_label − s²_gap)/N, the confidences' own spread (and its covariance with the label).
    labels, probs = random_case(seed, n, c)
    confidence, right, bins = _binned(labels, probs)
    ours, _ = _gap_reference(confidence, right, bins)
    spread = sum(
        (right[bins == b].var(ddof=1) - (right - confidence)[bins == b].var(ddof=1)) / n
        for b in np.unique(bins)
        if np.count_nonzero(bins == b) >= 2
    )
    assert ours - _kumar_unbiased_square_ce(confidence, right, bins) == pytest.approx(spread, abs=1e-12)


@pytest.mark.parametrize("shrink", [1.0, 0.8])  # calibrated, and right with 0.8 x the confidence
def test_debiased_square_is_unbiased_and_the_plug_in_is_not(shrink: float) -> None:
    rng = np.random.default_rng(11)
    pool = rng.uniform(0.5, 1.0, 50_000)  # binary confidences filling bins 7..14, ~27 examples each at n=200
    truth = shrink * pool  # P(right | example)
    bins = calibration.equal_width_bins(pool)
    gap_mean = np.bincount(bins, weights=truth - pool) / np.maximum(np.bincount(bins), 1)
    population = float((np.bincount(bins) * gap_mean**2).sum() / pool.size)  # Σ_b P(b)·μ_b²
    draws = []
    for _ in range(400):
        idx = rng.integers(0, pool.size, 200)
        right = (rng.random(200) < truth[idx]).astype(float)
        draws.append(_gap_reference(pool[idx], right, bins[idx]))
    debiased, plug_in = np.array(draws).T
    se = debiased.std(ddof=1) / np.sqrt(len(debiased))
    assert abs(debiased.mean() - population) < 4 * se
    assert plug_in.mean() - population > 8 * se  # the bias the plug-in carries


def test_recentred_replicates_are_the_resampled_estimate_shifted_by_its_bootstrap_bias() -> None:
    labels, probs = random_case(2, 300, 5)
    debiased, plug_in = _gap_reference(*_binned(labels, probs))
    rows = bootstrap_indices(300, 30, seed=1)
    expected = [
        np.sqrt(max(_gap_reference(*_binned(labels[r], probs[r]))[0] - (plug_in - debiased), 0.0))
        for r in rows
    ]
    got = calibration.ece_debiased_replicates(labels, probs)(rows)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert METRICS.get("ece_debiased").resampler(labels, probs)(rows) == pytest.approx(got)


def _labels_from(probs: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (probs.cumsum(1) > rng.random((len(probs), 1))).argmax(1)


def test_consistency_test_accepts_a_calibrated_model_and_rejects_an_overconfident_one() -> None:
    logits = np.random.default_rng(3).normal(0, 2, (2000, 10))
    labels = _labels_from(softmax(logits), 4)
    calibrated = calibration.consistency_test(labels, softmax(logits), n_resamples=199, seed=0)
    overconfident = calibration.consistency_test(labels, softmax(2 * logits), n_resamples=199, seed=0)
    assert calibrated.statistic == calibration.ece_debiased(labels, softmax(logits))
    assert calibrated.p_value > 0.05 and overconfident.p_value == 1 / 200
    again = calibration.consistency_test(labels, softmax(logits), n_resamples=199, seed=0)
    np.testing.assert_array_equal(again.null_samples, calibrated.null_samples)


def test_consistency_test_null_samples_are_ece_debiased_of_outcomes_drawn_from_the_confidences() -> None:
    labels, probs = random_case(6, 150, 4)
    result = calibration.consistency_test(labels, probs, n_resamples=20, seed=(5, 1))
    conf = probs.max(1)
    outcomes = np.random.default_rng((5, 1)).random((20, 150), dtype=np.float32) < conf.astype(np.float32)
    expected = [
        np.sqrt(max(_gap_reference(conf, o.astype(float), calibration.equal_width_bins(conf))[0], 0.0))
        for o in outcomes
    ]
    np.testing.assert_allclose(result.null_samples, expected, rtol=1e-10, atol=1e-12)
    assert result.p_value == (1 + np.count_nonzero(result.null_samples >= result.statistic)) / 21


# --- the simultaneous MCE interval ----------------------------------------------------------------------


def _mce_interval_reference(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """Bin by bin with statsmodels' Clopper-Pearson and Hoeffding's bound written out."""
    confidence, right, bins = _binned(labels, probs)
    filled = np.unique(bins)
    delta = 0.05 / len(filled)
    lows, highs = [], []
    for b in filled:
        in_bin = bins == b
        m = int(in_bin.sum())
        acc_low, acc_high = proportion_confint(int(right[in_bin].sum()), m, alpha=delta / 2, method="beta")
        lo, hi = (b / 15, (b + 1) / 15) if b < 15 else (1.0, 1.0)
        half = (hi - lo) * np.sqrt(np.log(2 / (delta / 2)) / (2 * m))  # 2·exp(-2m h²/w²) = δ/2
        c_low, c_high = max(confidence[in_bin].mean() - half, lo), min(confidence[in_bin].mean() + half, hi)
        ends = (acc_low - c_high, acc_high - c_low)
        lows.append(0.0 if ends[0] <= 0 <= ends[1] else min(abs(ends[0]), abs(ends[1])))
        highs.append(max(abs(ends[0]), abs(ends[1])))
    return max(lows), max(highs)


@pytest.mark.parametrize(("seed", "n", "c"), [*CASES, (9, 7, 3)])
def test_mce_interval_matches_the_reference_and_contains_the_estimate(seed: int, n: int, c: int) -> None:
    labels, probs = random_case(seed, n, c)
    low, high, details = calibration.mce_interval(labels, probs)
    assert (low, high) == pytest.approx(_mce_interval_reference(labels, probs), abs=1e-12)
    assert low <= calibration.mce(labels, probs) <= high
    assert details["bins"] == len(np.unique(_binned(labels, probs)[2]))

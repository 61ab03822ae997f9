"""Calibration metrics against torchmetrics, adaptive ECE against a loop reference, temperature scaling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from assay.metrics import calibration
from assay.metrics.quality import nll
from assay.outputs import softmax


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
    for norm, fn in NORMS:
        assert fn(labels, probs, n_bins) == pytest.approx(
            torchmetrics_ce(labels, probs, norm, n_bins), abs=1e-7
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

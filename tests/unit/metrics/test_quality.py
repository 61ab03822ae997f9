"""Quality metrics against scikit-learn on the same random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from assay.metrics import quality

CASES = [(0, 200, 3), (1, 1000, 10), (2, 57, 2), (3, 30, 12)]  # (seed, n, classes): the last misses classes


def random_case(seed: int, n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(n_classes, 0.7), size=n)
    labels = rng.integers(0, n_classes, n)
    # Make the model better than chance, so predictions and labels agree on a good share of examples.
    boost = rng.random(n) < 0.5
    probs[boost] = 0.5 * probs[boost] + 0.5 * np.eye(n_classes)[labels[boost]]
    return labels, probs


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_accuracy_matches_sklearn(seed: int, n: int, c: int) -> None:
    labels, probs = random_case(seed, n, c)
    assert quality.accuracy(labels, probs) == pytest.approx(
        skm.accuracy_score(labels, probs.argmax(1)), abs=1e-15
    )


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_macro_f1_matches_sklearn(seed: int, n: int, c: int) -> None:
    labels, probs = random_case(seed, n, c)
    expected = skm.f1_score(labels, probs.argmax(1), average="macro")
    assert quality.macro_f1(labels, probs) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_leaves_out_classes_absent_from_labels_and_predictions() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.eye(4)[[0, 1, 1, 1]]  # classes 2 and 3 never occur
    expected = skm.f1_score(labels, probs.argmax(1), average="macro")
    assert quality.macro_f1(labels, probs) == pytest.approx(expected)
    assert expected == pytest.approx((2 / 3 + 0.8) / 2)


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_per_class_recall_matches_sklearn(seed: int, n: int, c: int) -> None:
    labels, probs = random_case(seed, n, c)
    got = quality.per_class_recall(labels, probs)
    expected = skm.recall_score(
        labels, probs.argmax(1), labels=np.arange(c), average=None, zero_division=np.nan
    )
    np.testing.assert_allclose(got, expected, equal_nan=True)
    assert np.isnan(got).sum() == c - len(np.unique(labels))


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_nll_matches_sklearn_log_loss(seed: int, n: int, c: int) -> None:
    labels, probs = random_case(seed, n, c)
    assert quality.nll(labels, probs) == pytest.approx(
        skm.log_loss(labels, probs, labels=np.arange(c)), rel=1e-12
    )


def test_nll_clips_a_zero_probability_at_1e_12() -> None:
    labels = np.array([0, 1])
    probs = np.array([[0.0, 1.0], [0.5, 0.5]])
    assert quality.nll(labels, probs) == pytest.approx((-np.log(1e-12) - np.log(0.5)) / 2)


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_brier_matches_sklearn_multiclass_convention(seed: int, n: int, c: int) -> None:
    labels, probs = random_case(seed, n, c)
    expected = skm.brier_score_loss(labels, probs, labels=np.arange(c), scale_by_half=False)
    assert quality.brier(labels, probs) == pytest.approx(expected, rel=1e-12)


def test_brier_is_in_zero_to_two() -> None:
    labels = np.array([0, 1])
    assert quality.brier(labels, np.eye(2)[[1, 0]]) == pytest.approx(2.0)
    assert quality.brier(labels, np.eye(2)) == pytest.approx(0.0)


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_confusion_matrix_matches_sklearn(seed: int, n: int, c: int) -> None:
    labels, probs = random_case(seed, n, c)
    preds = probs.argmax(1)
    expected = skm.confusion_matrix(labels, preds, labels=np.arange(c))
    np.testing.assert_array_equal(quality.confusion_matrix(labels, preds, c), expected)


def test_f1_from_confusion_handles_a_stack() -> None:
    labels, probs = random_case(5, 300, 4)
    cms = [quality.confusion_matrix(labels[: 100 * k], probs[: 100 * k].argmax(1), 4) for k in (1, 2, 3)]
    expected = [
        skm.f1_score(labels[: 100 * k], probs[: 100 * k].argmax(1), average="macro") for k in (1, 2, 3)
    ]
    np.testing.assert_allclose(quality.f1_from_confusion(np.stack(cms)), expected)

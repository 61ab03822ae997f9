"""Confident learning: the same issues as cleanlab on the same probabilities; planted flips found."""

from __future__ import annotations

import numpy as np
import pytest

from assay.data.audit import AuditContext, AuditData, run_audit
from assay.data.audit.labels import (
    class_thresholds,
    confident_joint,
    find_label_issues,
    out_of_fold_probs,
    rank_by_self_confidence,
)

from .sentences import flip_labels


@pytest.fixture(scope="module")
def noisy_digits(
    digits: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = digits
    noisy, flipped = flip_labels(y, 0.05, 10, seed=0)
    probs = out_of_fold_probs(x, noisy, 10, folds=3, seed=0)
    return x, noisy, flipped, probs


def test_planted_flips_are_found_with_precision_and_recall_above_0_6(noisy_digits) -> None:  # type: ignore[no-untyped-def]
    _, noisy, flipped, probs = noisy_digits
    found = find_label_issues(noisy, probs)
    precision = (found & flipped).sum() / found.sum()
    recall = (found & flipped).sum() / flipped.sum()
    assert precision >= 0.6, precision
    assert recall >= 0.6, recall


def test_ranking_puts_planted_flips_first(noisy_digits) -> None:  # type: ignore[no-untyped-def]
    _, noisy, flipped, probs = noisy_digits
    ranked = rank_by_self_confidence(noisy, probs, find_label_issues(noisy, probs))
    top = ranked[: int(flipped.sum()) // 2]
    assert flipped[top].mean() >= 0.9
    self_confidence = probs[ranked, noisy[ranked]]
    assert (np.diff(self_confidence) >= 0).all()


def test_agrees_with_cleanlab_on_the_same_probabilities(noisy_digits) -> None:  # type: ignore[no-untyped-def]
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    count = pytest.importorskip("cleanlab.count")
    _, noisy, _, probs = noisy_digits
    ours = find_label_issues(noisy, probs)
    theirs = cleanlab_filter.find_label_issues(noisy, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    jaccard = (ours & theirs).sum() / (ours | theirs).sum()
    assert jaccard >= 0.9, jaccard
    # The calibrated confident joint itself, cell by cell.
    reference = count.compute_confident_joint(noisy, probs, calibrate=True)
    np.testing.assert_allclose(confident_joint(noisy, probs), reference, atol=1.0)


def test_thresholds_are_mean_self_confidence() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.5, 0.5]])
    np.testing.assert_allclose(class_thresholds(labels, probs), [0.8, (0.8 + 0.6 + 0.5) / 3])


def test_clean_labels_give_few_issues(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    probs = out_of_fold_probs(x, y, 10, folds=3, seed=0)
    assert find_label_issues(y, probs).mean() < 0.02


def test_the_check_reports_flagged_ids_ranked(noisy_digits) -> None:  # type: ignore[no-untyped-def]
    x, noisy, flipped, probs = noisy_digits
    data = AuditData.from_arrays({"train": (x, noisy)}, name="digits")
    ctx = AuditContext(data, probs={"train": probs})
    m = run_audit(ctx, ["label_issues"]).get("label_issues[train]")
    assert m.status == "ok"
    ids = m.details["flagged_ids"]
    assert len(ids) == m.details["count"] == find_label_issues(noisy, probs).sum()
    assert m.ci_low <= m.value <= m.ci_high
    first = int(ids[0].split("-")[1])
    assert flipped[first]
    assert m.details["examples"][0]["id"] == ids[0]

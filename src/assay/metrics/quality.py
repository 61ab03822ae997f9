"""Quality metrics: pure functions of ``labels`` (N,) int and ``probs`` (N, C) float.

Predictions are always ``probs.argmax(1)`` (ties go to the lowest class index, as in numpy, torch and
scikit-learn). Each mean metric has a per-example twin whose mean is the metric; the bootstrap resamples
those values instead of recomputing the metric per replicate.
"""

from __future__ import annotations

import numpy as np

# Probabilities are clipped here before the log, so a confidently wrong example costs at most
# -log(1e-12) ≈ 27.6 nats instead of infinity (scikit-learn clips at float64 eps, ≈ 36 nats).
NLL_CLIP = 1e-12


def correct(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per example: 1.0 where the top-1 prediction is the label, else 0.0."""
    return (probs.argmax(axis=1) == labels).astype(np.float64)


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Share of examples whose top-1 prediction is the label."""
    return float(correct(labels, probs).mean())


def nll_per_example(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per example: ``-log(max(p_label, 1e-12))`` in nats."""
    p_true = probs[np.arange(labels.shape[0]), labels]
    return -np.log(np.clip(p_true, NLL_CLIP, 1.0))


def nll(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels (nats), probabilities clipped below at 1e-12."""
    return float(nll_per_example(labels, probs).mean())


def brier_per_example(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per example: ``sum_c (p_c − 1[c = label])²``, in [0, 2]."""
    sq = np.square(probs).sum(axis=1)
    p_true = probs[np.arange(labels.shape[0]), labels]
    # sum_c (p_c - y_c)^2 = sum_c p_c^2 - 2 p_label + 1, without building the one-hot matrix.
    return sq - 2.0 * p_true + 1.0


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    """Multiclass Brier score: mean over examples of the sum over classes of squared error, in [0, 2].

    Same convention as scikit-learn's ``brier_score_loss(..., scale_by_half=False)`` for any number of
    classes; for two classes scikit-learn's default halves it to [0, 1].
    """
    return float(brier_per_example(labels, probs).mean())


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts: row = true class, column = predicted class."""
    return np.bincount(labels * n_classes + preds, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Macro F1 of each confusion matrix in a (..., C, C) stack.

    Per class ``F1 = 2·TP / (2·TP + FP + FN)``, averaged over the classes that occur as a label or a
    prediction (a class absent from both has no defined F1; scikit-learn's default also leaves it out).
    """
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    denom = cm.sum(axis=-1) + cm.sum(axis=-2)  # (TP + FN) + (TP + FP)
    present = denom > 0
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=present)
    return f1.sum(axis=-1) / present.sum(axis=-1)


def macro_f1(labels: np.ndarray, probs: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present as a label or a prediction."""
    n_classes = probs.shape[1]
    return float(f1_from_confusion(confusion_matrix(labels, probs.argmax(axis=1), n_classes)))


def per_class_recall(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(C,) recall of each class: correct / support; NaN for a class with no examples."""
    n_classes = probs.shape[1]
    cm = confusion_matrix(labels, probs.argmax(axis=1), n_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diagonal(cm) / support, np.nan)

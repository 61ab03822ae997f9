"""Small seeded data for the monitoring tests: a synthetic table model and scikit-learn's digits."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from assay.outputs import softmax
from assay.serve import drift
from assay.serve.drift import Baseline, Batch, Calibration
from assay.serve.reference import ood_scores


@dataclass(frozen=True)
class Model:
    """A fixed linear model: features = tanh(x·W1), logits = features·W2 + b."""

    w1: np.ndarray
    w2: np.ndarray
    b: np.ndarray

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        features = np.tanh(flat @ self.w1)
        return features @ self.w2 + self.b, features


TABLE_MODEL = Model(
    w1=np.random.default_rng(11).normal(size=(4, 6)),
    w2=np.random.default_rng(12).normal(size=(6, 4)) * 1.5,
    b=np.zeros(4),
)
TABLE_COV = np.array([[1.0, 0.5, 0.0, 0.0], [0.5, 1.0, 0.3, 0.0], [0.0, 0.3, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def table_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fresh rows of the synthetic table: x (correlated Gaussian), logits, features, labels (drawn from
    the model's own softmax, so the model is calibrated on this distribution)."""
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(4), TABLE_COV, size=n)
    logits, features = TABLE_MODEL(x)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = (p.cumsum(1) < rng.random((n, 1))).sum(1)
    return x, logits, features, np.minimum(labels, 3)


def windows(
    base: Baseline, x: np.ndarray, logits: np.ndarray, features: np.ndarray, labels: np.ndarray, window: int
) -> Batch:
    """Consecutive windows of ``window`` labelled table rows, as the monitor summarises them."""
    k = len(x) // window
    probs = softmax(logits)
    preds = probs.argmax(1).reshape(k, window)
    assert base.features is not None
    return Batch(
        inputs=x.reshape(k, window, x.shape[1]),
        confidence=probs.max(1).reshape(k, window),
        predictions=preds,
        ood=ood_scores(logits).reshape(k, window),
        phi_sum=base.features.transform(features).reshape(k, window, -1).sum(1),
        n_correct=(preds == labels.reshape(k, window)).sum(1),
        n_labelled=np.full(k, window),
    )


def alarms(base: Baseline, calibration: Calibration, batch: Batch) -> np.ndarray:
    """Which windows any calibrated detector alarms on."""
    values = drift.statistics(base, batch, tuple(calibration.thresholds))
    raised = np.zeros(len(batch.predictions), dtype=bool)
    for name, threshold in calibration.thresholds.items():
        raised |= values[name] > threshold
    return raised


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray, Model]:
    """scikit-learn's 8x8 digits in [0, 1] (N, 8, 8), labels, and a fixed model fitted on the first half."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    images = d.images / 16.0
    w1 = np.random.default_rng(0).normal(size=(64, 32)) / 4
    features = np.tanh(images.reshape(len(images), -1) @ w1)
    clf = LogisticRegression(max_iter=2000).fit(features[::2], d.target[::2])
    return images, d.target, Model(w1=w1, w2=clf.coef_.T.copy(), b=clf.intercept_.copy())

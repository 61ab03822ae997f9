"""The metric registry: every quality and calibration metric assay reports, by name.

A :class:`MetricSpec` wraps a pure function ``fn(labels, probs) -> float`` with what a reader needs to
trust the number (family, direction, estimator, interval method) and, optionally, a fast path for the
bootstrap. Plugins add metrics with ``METRICS.add(name, MetricSpec(...))`` or the entry-point group
``assay.metric``; the contract test in tests/unit/metrics/test_contract.py then covers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from assay.metrics import calibration, quality
from assay.plugins import Registry

MetricFn = Callable[[np.ndarray, np.ndarray], float]
PerExampleFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
# (labels, probs) -> a function from bootstrap index rows (b, N) to the metric of each resample (b,).
ReplicatesFactory = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


@dataclass(frozen=True)
class MetricSpec:
    """One registered metric.

    ``interval="wilson"`` is for proportions and needs ``per_example`` to give 0/1 values; everything
    else gets a seeded percentile bootstrap. For the bootstrap, ``per_example`` (values whose mean is
    the metric) or ``replicates`` (a vectorised resampler) avoid calling ``fn`` once per replicate.
    """

    name: str
    family: Literal["quality", "calibration"]
    fn: MetricFn
    higher_is_better: bool
    estimator: str
    unit: str | None = None
    interval: Literal["wilson", "bootstrap"] = "bootstrap"
    per_example: PerExampleFn | None = None
    replicates: ReplicatesFactory | None = None

    def resampler(self, labels: np.ndarray, probs: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """Index rows (b, N) -> the metric on each resampled set of examples (b,)."""
        if self.per_example is not None:
            values = self.per_example(labels, probs)
            return lambda rows: values[rows].mean(axis=1)
        if self.replicates is not None:
            return self.replicates(labels, probs)
        return lambda rows: np.array([self.fn(labels[row], probs[row]) for row in rows])


def _macro_f1_replicates(labels: np.ndarray, probs: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    n_classes = probs.shape[1]
    cell = labels * n_classes + probs.argmax(axis=1)  # confusion-matrix cell of each example
    cells = n_classes * n_classes

    def replicate(rows: np.ndarray) -> np.ndarray:
        keys = (cell[rows] + cells * np.arange(rows.shape[0])[:, None]).ravel()
        cm = np.bincount(keys, minlength=rows.shape[0] * cells).reshape(-1, n_classes, n_classes)
        return quality.f1_from_confusion(cm)

    return replicate


METRICS: Registry[MetricSpec] = Registry[MetricSpec]("metric")

_BUILTIN = (
    MetricSpec(
        "accuracy",
        "quality",
        quality.accuracy,
        True,
        "share of examples whose top-1 prediction is the label",
        interval="wilson",
        per_example=quality.correct,
    ),
    MetricSpec(
        "macro_f1",
        "quality",
        quality.macro_f1,
        True,
        "unweighted mean of per-class F1 over classes present as label or prediction",
        replicates=_macro_f1_replicates,
    ),
    MetricSpec(
        "nll",
        "quality",
        quality.nll,
        False,
        "mean negative log-likelihood of the label, nats, probabilities clipped at 1e-12",
        unit="nats",
        per_example=quality.nll_per_example,
    ),
    MetricSpec(
        "brier",
        "quality",
        quality.brier,
        False,
        "multiclass Brier: mean over examples of the sum over classes of squared error, in [0, 2]",
        per_example=quality.brier_per_example,
    ),
    MetricSpec(
        "ece",
        "calibration",
        calibration.ece,
        False,
        "top-label, 15 equal-width bins, L1",
        replicates=calibration.ece_replicates,
    ),
    MetricSpec(
        "adaptive_ece",
        "calibration",
        calibration.adaptive_ece,
        False,
        "top-label, 15 equal-mass bins, L1",
        replicates=calibration.adaptive_ece_replicates,
    ),
    MetricSpec(
        "mce",
        "calibration",
        calibration.mce,
        False,
        "top-label, 15 equal-width bins, max norm",
        replicates=calibration.mce_replicates,
    ),
)
for _spec in _BUILTIN:
    METRICS.add(_spec.name, _spec)

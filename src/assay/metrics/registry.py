"""The metric registry: every quality and calibration metric assay reports, by name.

A :class:`MetricSpec` wraps a pure function ``fn(labels, probs) -> float`` with what a reader needs to
trust the number (family, direction, estimator, interval method, a note) and, optionally, a fast path
for the bootstrap. The built-in metrics' names, families, directions and units are the catalogue's
(:data:`assay.catalogue.OUTPUT_METRICS`). Plugins add metrics with ``METRICS.add(name, MetricSpec(...))``
or the entry-point group ``assay.metric``; the contract test in tests/contract/test_metrics.py then
covers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from assay.catalogue import OUTPUT_METRICS
from assay.metrics import calibration, quality
from assay.plugins import Registry

MetricFn = Callable[[np.ndarray, np.ndarray], float]
PerExampleFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
# (labels, probs) -> a function from bootstrap index rows (b, N) to the metric of each resample (b,).
ReplicatesFactory = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]
# (labels, probs) -> (low, high, details) of a 95% interval that is not a bootstrap.
IntervalFn = Callable[[np.ndarray, np.ndarray], tuple[float, float, dict[str, Any]]]
# (labels, probs, n_resamples, seed) -> more details of the measurement (a test beside the interval).
DetailsFn = Callable[[np.ndarray, np.ndarray, int, int], dict[str, Any]]


@dataclass(frozen=True)
class MetricSpec:
    """One registered metric.

    ``interval``: ``"wilson"`` is for proportions and needs ``per_example`` to give 0/1 values;
    ``"bootstrap"`` is a seeded percentile bootstrap; ``"custom"`` takes ``custom_interval`` (for a
    statistic no bootstrap interval covers, such as a max over bins). For the bootstrap, ``per_example``
    (values whose mean is the metric) or ``replicates`` (a vectorised resampler) avoid calling ``fn``
    once per replicate. ``recentred`` is for an estimator that is not the plug-in of what it estimates (a
    debiased one): its plain resamples centre off the estimate, so intervals, paired comparisons and gate
    rules take these recentred replicates instead. ``note`` is a caveat every measurement of the metric
    carries; ``extra_details`` adds to the measurement's details (a calibration test).
    """

    name: str
    family: Literal["quality", "calibration"]
    fn: MetricFn
    higher_is_better: bool
    estimator: str
    unit: str | None = None
    interval: Literal["wilson", "bootstrap", "custom"] = "bootstrap"
    per_example: PerExampleFn | None = None
    replicates: ReplicatesFactory | None = None
    recentred: ReplicatesFactory | None = None
    custom_interval: IntervalFn | None = None
    note: str | None = None
    extra_details: DetailsFn | None = None

    def statistic_replicates(
        self, labels: np.ndarray, probs: np.ndarray
    ) -> Callable[[np.ndarray], np.ndarray]:
        """Index rows (b, N) -> ``fn`` on each resampled set of examples (b,), by the fastest path."""
        if self.per_example is not None:
            values = self.per_example(labels, probs)
            return lambda rows: values[rows].mean(axis=1)
        if self.replicates is not None:
            return self.replicates(labels, probs)
        return lambda rows: np.array([self.fn(labels[row], probs[row]) for row in rows])

    def resampler(self, labels: np.ndarray, probs: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """Index rows (b, N) -> the bootstrap replicates (b,) that intervals and comparisons use: the
        metric on each resample, or ``recentred``'s replicates where the metric has them."""
        if self.recentred is not None:
            return self.recentred(labels, probs)
        return self.statistic_replicates(labels, probs)


def _macro_f1_replicates(labels: np.ndarray, probs: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    n_classes = probs.shape[1]
    cell = labels * n_classes + probs.argmax(axis=1)  # confusion-matrix cell of each example
    cells = n_classes * n_classes

    def replicate(rows: np.ndarray) -> np.ndarray:
        keys = (cell[rows] + cells * np.arange(rows.shape[0])[:, None]).ravel()
        cm = np.bincount(keys, minlength=rows.shape[0] * cells).reshape(-1, n_classes, n_classes)
        return quality.f1_from_confusion(cm)

    return replicate


def _mce_interval(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float, dict[str, Any]]:
    return calibration.mce_interval(labels, probs)


def _ece_debiased_details(
    labels: np.ndarray, probs: np.ndarray, n_resamples: int, seed: int
) -> dict[str, Any]:
    """The plug-in value it debiases and the test of perfect calibration beside the interval."""
    # Its own stream of the seed: the test's draws are not the bootstrap's indices reread as floats.
    test = calibration.consistency_test(labels, probs, n_resamples=n_resamples, seed=(seed, 1))
    return {
        "plug_in": calibration.plug_in_l2(labels, probs),
        "calibration_test": {
            "test": "consistency resampling (Bröcker & Smith 2007)",
            "null": "perfect calibration",
            "alternative": "greater",  # the statistic is larger than under the null: miscalibrated
            "statistic": test.statistic,
            "p_value": test.p_value,
            "n_resamples": n_resamples,
        },
    }


METRICS: Registry[MetricSpec] = Registry[MetricSpec]("metric")


def _builtin(name: str, fn: MetricFn, estimator: str, **how: Any) -> MetricSpec:
    """A built-in metric; ``how``: the other :class:`MetricSpec` fields (interval, fast paths, note)."""
    entry = OUTPUT_METRICS[name]
    # The catalogue's metrics of the outputs are all quality or calibration (tests/contract checks it).
    family = cast(Literal["quality", "calibration"], entry.family)
    return MetricSpec(name, family, fn, entry.higher_is_better, estimator, unit=entry.unit, **how)


_BUILTIN = (
    _builtin(
        "accuracy",
        quality.accuracy,
        "share of examples whose top-1 prediction is the label",
        interval="wilson",
        per_example=quality.correct,
    ),
    _builtin(
        "macro_f1",
        quality.macro_f1,
        "unweighted mean of per-class F1 over classes present as label or prediction",
        replicates=_macro_f1_replicates,
    ),
    _builtin(
        "nll",
        quality.nll,
        "mean negative log-likelihood of the label, nats, probabilities clipped at 1e-12",
        per_example=quality.nll_per_example,
    ),
    _builtin(
        "brier",
        quality.brier,
        "multiclass Brier: mean over examples of the sum over classes of squared error, in [0, 2]",
        per_example=quality.brier_per_example,
    ),
    _builtin(
        "ece",
        calibration.ece,
        "top-label, 15 equal-width bins, L1",
        replicates=calibration.ece_replicates,
        note=calibration.PLUG_IN_NOTE,
    ),
    _builtin(
        "ece_debiased",
        calibration.ece_debiased,
        "top-label, 15 equal-width bins, L2 debiased per bin: the debiased plug-in of Kumar, Liang & Ma "
        "2019, 'Verified uncertainty calibration' (a negative squared estimate reads as 0)",
        recentred=calibration.ece_debiased_replicates,
        extra_details=_ece_debiased_details,
    ),
    _builtin(
        "adaptive_ece",
        calibration.adaptive_ece,
        "top-label, 15 equal-mass bins, L1",
        replicates=calibration.adaptive_ece_replicates,
        note=calibration.PLUG_IN_NOTE,
    ),
    _builtin(
        "mce",
        calibration.mce,
        "top-label, 15 equal-width bins, max norm",
        interval="custom",
        replicates=calibration.mce_replicates,
        custom_interval=_mce_interval,
        note=(
            "the largest gap over bins, set by the sparsest bins: biased upwards, and no bootstrap "
            "interval covers it; the interval holds for every bin at once, so it is wide when bins are sparse"
        ),
    ),
)
for _spec in _BUILTIN:
    METRICS.add(_spec.name, _spec)

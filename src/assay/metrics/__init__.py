"""Metrics on per-example outputs, each with n and a 95% interval.

:func:`measure` turns :class:`~assay.outputs.Outputs` into :class:`~assay.measurement.Measurement` records
for every registered metric (see :mod:`assay.metrics.registry`) plus per-class recall: a Wilson interval
for proportions, a seeded percentile bootstrap for everything else (recentred for a debiased estimator,
replaced by a simultaneous interval for a max over bins). :func:`calibration_report` adds
temperature scaling (fitted on validation, judged on test) and the data behind the reliability diagram
and the confusion matrix. One failing metric becomes an ``error`` measurement; it never stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from assay.errors import UsageError
from assay.measurement import Measurement
from assay.metrics.calibration import (
    PLUG_IN_NOTE,
    apply_temperature,
    ece_replicates,
    fit_temperature,
    reliability_bins,
)
from assay.metrics.quality import confusion_matrix, per_class_recall
from assay.metrics.registry import METRICS, MetricSpec
from assay.outputs import Outputs
from assay.stats import bootstrap_ci, wilson_interval

__all__ = ["METRICS", "MetricSpec", "calibration_report", "measure"]

logger = logging.getLogger(__name__)

# The name that asks :func:`measure` for the per-class recall measurements ``recall[<class>]``.
RECALL = "recall"


def _bootstrap_details(n_boot: int, seed: int, *, recentred: bool = False) -> dict[str, Any]:
    method = (
        "percentile bootstrap, replicates recentred on the estimate" if recentred else "percentile bootstrap"
    )
    return {"interval": method, "n_boot": n_boot, "seed": seed}


def _with_note(details: dict[str, Any], value: float, low: float, high: float, note: str | None) -> None:
    """Set ``details["note"]``: the metric's own caveat, and why when the estimate lies outside its
    interval (format.outside_interval_note says *that* it does, beside the number, and shows this)."""
    parts = [] if note is None else [note]
    if not low <= value <= high:
        parts.insert(
            0,
            "the estimator is biased at this n: its resamples are biased again, so its percentile "
            "interval can sit beside the estimate",
        )
    if parts:
        details["note"] = "; ".join(parts)


def _interval(
    spec: MetricSpec, labels: np.ndarray, probs: np.ndarray, n_boot: int, seed: int
) -> tuple[float, float, dict[str, Any]]:
    """The 95% interval of ``spec`` on these outputs and the details that say how it was made."""
    n = labels.shape[0]
    if spec.interval == "wilson":
        if spec.per_example is None:
            raise UsageError(
                f"Metric '{spec.name}' asks for a Wilson interval but has no per-example values."
            )
        successes = round(float(spec.per_example(labels, probs).sum()))
        low, high = wilson_interval(successes, n)
        return low, high, {"interval": "wilson", "successes": successes}
    if spec.interval == "custom":
        if spec.custom_interval is None:
            raise UsageError(f"Metric '{spec.name}' asks for a custom interval but has no custom_interval.")
        return spec.custom_interval(labels, probs)
    result = bootstrap_ci(spec.resampler(labels, probs), n, n_boot=n_boot, seed=seed, vectorized=True)
    return (
        result.ci_low,
        result.ci_high,
        _bootstrap_details(n_boot, seed, recentred=spec.recentred is not None),
    )


def _measure_spec(
    spec: MetricSpec, labels: np.ndarray, probs: np.ndarray, n_boot: int, seed: int
) -> Measurement:
    n = labels.shape[0]
    value = spec.fn(labels, probs)
    low, high, details = _interval(spec, labels, probs, n_boot, seed)
    if spec.extra_details is not None:
        details |= spec.extra_details(labels, probs, n_boot, seed)
    _with_note(details, value, low, high, spec.note)
    return Measurement(
        name=spec.name,
        family=spec.family,
        value=value,
        ci_low=low,
        ci_high=high,
        n=n,
        unit=spec.unit,
        higher_is_better=spec.higher_is_better,
        estimator=spec.estimator,
        details=details,
    )


def _recall_measurements(outputs: Outputs, class_names: Sequence[str]) -> list[Measurement]:
    recall = per_class_recall(outputs.labels, outputs.probs)
    support = np.bincount(outputs.labels, minlength=outputs.n_classes)
    out = []
    for k, name in enumerate(class_names):
        key = f"recall[{name}]"
        if support[k] == 0:
            out.append(Measurement.skipped(key, "quality", f"no examples of class '{name}' in this split"))
            continue
        out.append(
            Measurement.proportion(
                key,
                "quality",
                round(float(recall[k] * support[k])),
                int(support[k]),
                higher_is_better=True,
                estimator=f"share of class-'{name}' examples predicted as that class",
                details={"class_index": k},
            )
        )
    return out


def _class_names(outputs: Outputs, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [str(k) for k in range(outputs.n_classes)]
    if len(class_names) != outputs.n_classes:
        raise UsageError(
            f"Got {len(class_names)} class names for outputs with {outputs.n_classes} classes; "
            "pass one per class."
        )
    return [str(name) for name in class_names]


def measure(
    outputs: Outputs,
    names: list[str] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> list[Measurement]:
    """Measure ``names`` (default: every registered metric and per-class recall) on ``outputs``.

    Each value comes with n and a 95% interval: Wilson for accuracy and recall, a percentile bootstrap
    with ``n_boot`` resamples drawn from ``seed`` otherwise (the same resamples for every metric).
    ``"recall"`` in ``names`` asks for the per-class measurements ``recall[<class name>]``.
    An unknown name raises :class:`~assay.errors.NotFoundError` before any work; a metric that fails on
    these outputs gives an ``error`` measurement and the others still run.
    """
    wanted = [*METRICS.names(), RECALL] if names is None else list(names)
    specs = [METRICS.get(name) for name in wanted if name != RECALL]
    labels_of_classes = _class_names(outputs, class_names)
    results = []
    for spec in specs:
        try:
            results.append(_measure_spec(spec, outputs.labels, outputs.probs, n_boot, seed))
        except Exception as e:  # a plugin may fail in any way; the run must go on and say so
            logger.warning("metric %s failed", spec.name, exc_info=True)
            results.append(Measurement.error(spec.name, spec.family, f"{type(e).__name__}: {e}"))
    if RECALL in wanted:
        results.extend(_recall_measurements(outputs, labels_of_classes))
    return results


def _temperature_skip(reason: str) -> list[Measurement]:
    return [
        Measurement.skipped("temperature", "calibration", reason),
        Measurement.skipped("ece_after_temperature", "calibration", reason),
    ]


def _no_temperature_reason(outputs: Outputs, val_outputs: Outputs | None) -> str | None:
    if val_outputs is None:
        return "no validation outputs: temperature scaling is fitted on validation only, never on test"
    if val_outputs.logits is None:
        return "the validation outputs have no logits (probabilities only); temperature scaling needs logits"
    if outputs.logits is None:
        return "the test outputs have no logits (probabilities only); temperature scaling needs logits"
    if val_outputs.n_classes != outputs.n_classes:
        return f"validation has {val_outputs.n_classes} classes but test has {outputs.n_classes}"
    return None


def _temperature_measurements(
    outputs: Outputs, val_outputs: Outputs, n_boot: int, seed: int
) -> tuple[list[Measurement], np.ndarray]:
    assert outputs.logits is not None and val_outputs.logits is not None  # checked by the caller
    temperature = fit_temperature(val_outputs.logits, val_outputs.labels)
    scaled = apply_temperature(outputs.logits, temperature)
    result = bootstrap_ci(
        ece_replicates(outputs.labels, scaled), outputs.n, n_boot=n_boot, seed=seed, vectorized=True
    )
    details = {**_bootstrap_details(n_boot, seed), "temperature": temperature}
    _with_note(details, result.estimate, result.ci_low, result.ci_high, PLUG_IN_NOTE)
    fitted = Measurement(
        name="temperature",
        family="calibration",
        value=temperature,
        n=val_outputs.n,
        estimator="temperature scaling: T minimising validation NLL of softmax(logits / T)",
        details={"fitted_on": "validation", "interval": "none: a fitted parameter, not an estimate on test"},
    )
    after = Measurement(
        name="ece_after_temperature",
        family="calibration",
        value=result.estimate,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        n=outputs.n,
        higher_is_better=False,
        estimator="top-label, 15 equal-width bins, L1, after temperature scaling fitted on validation",
        details=details,
    )
    return [fitted, after], scaled


def calibration_report(
    outputs: Outputs,
    val_outputs: Outputs | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[list[Measurement], dict[str, Any]]:
    """Temperature scaling measurements and plot data for the test ``outputs``.

    With validation outputs that have logits (and test logits to apply it to), T is fitted on
    validation and reported with ``ece_after_temperature`` on test (bootstrap CI); otherwise both are
    ``skipped`` with the reason. The plot data: ``reliability`` (bins before),
    ``reliability_after_temperature`` (or None) and ``confusion_matrix`` (a list of rows of counts,
    row = true class, column = predicted class).
    """
    plots: dict[str, Any] = {
        "reliability": reliability_bins(outputs.labels, outputs.probs),
        "reliability_after_temperature": None,
        "confusion_matrix": confusion_matrix(outputs.labels, outputs.preds, outputs.n_classes).tolist(),
    }
    reason = _no_temperature_reason(outputs, val_outputs)
    if reason is not None:
        return _temperature_skip(reason), plots
    assert val_outputs is not None
    try:
        measurements, scaled = _temperature_measurements(outputs, val_outputs, n_boot, seed)
    except Exception as e:  # report the failure as measurements; the rest of the evaluation goes on
        logger.warning("temperature scaling failed", exc_info=True)
        message = f"{type(e).__name__}: {e}"
        failed = [
            Measurement.error(name, "calibration", message)
            for name in ("temperature", "ece_after_temperature")
        ]
        return failed, plots
    plots["reliability_after_temperature"] = reliability_bins(outputs.labels, scaled)
    return measurements, plots

"""Paired comparisons of a baseline and a candidate evaluated on the same examples.

Pairing is what makes small differences visible: both models are resampled with the same bootstrap
indices, so the noise of "which examples happened to be in the test set" cancels in the delta.
Accuracy gets the exact McNemar test; other metrics a paired bootstrap. Efficiency timings are not
paired (they are separate runs), so their statistics are bootstrapped independently.
Every delta is candidate − baseline, in the metric's unit.

Every p-value here tests H0 "no difference" against a two-sided alternative, and says so in the
comparison's ``details["alternative"]`` (SciPy's word): the gate's rules are one-sided tests of their
own nulls (a margin, a threshold) and name theirs, so a reader can tell the two apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from assay.errors import DataError, UsageError
from assay.measurement import Comparison, Measurement
from assay.metrics.registry import METRICS, MetricSpec
from assay.outputs import Outputs
from assay.stats import (
    bootstrap_p_value,
    iter_bootstrap_indices,
    mcnemar_exact,
    percentile_interval,
)

# Statistics an efficiency measurement may summarise its raw samples with.
STATISTICS = ("p50", "p95", "p99", "mean")


@dataclass(frozen=True)
class PairedResult:
    """A comparison and the bootstrap replicates behind it.

    ``baseline_samples``/``candidate_samples`` are each side's replicates of the metric itself (for
    efficiency comparisons they come from independent resamples); the gate uses them for thresholds.
    """

    comparison: Comparison
    delta_samples: np.ndarray
    baseline_samples: np.ndarray | None = None
    candidate_samples: np.ndarray | None = None
    resampling: str = "paired bootstrap"  # how the replicates were drawn (a gate rule's test names it)


# Index rows (b, n) of a bootstrap -> the statistic on each of the b resamples of the n examples.
Replicates = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PerExample:
    """The per-example evidence behind a measurement that is not a function of the outputs (robust
    accuracy, accuracy under a corruption, an OOD AUROC), kept in memory so that two models measured on
    the same examples can be compared in pairs (:func:`compare_per_example`).

    ``ids``: the examples, in the order ``replicates`` indexes them; ``replicates(rows)``: the statistic
    on each resample; ``hits``: the 0/1 outcome per example when the statistic is their share (exact
    McNemar then gives the p-value, as for accuracy).
    """

    measurement: Measurement
    ids: np.ndarray
    replicates: Replicates
    hits: np.ndarray | None = None

    @classmethod
    def mean(cls, measurement: Measurement, ids: np.ndarray, values: np.ndarray) -> PerExample:
        """A statistic that is the mean of per-example values; boolean values are hits."""
        v = np.asarray(values)
        if v.shape != (len(ids),):
            raise UsageError(f"'{measurement.name}': {v.shape} values for {len(ids)} example ids.")
        f = v.astype(np.float64)
        return cls(
            measurement, np.asarray(ids), lambda rows: f[rows].mean(axis=1), v if v.dtype == bool else None
        )


def _reordered(outputs: Outputs, order: np.ndarray) -> Outputs:
    def take(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[order]

    return replace(
        outputs,
        ids=outputs.ids[order],
        labels=outputs.labels[order],
        probs=outputs.probs[order],
        logits=take(outputs.logits),
        features=take(outputs.features),
        groups=take(outputs.groups),
    )


def order_by_ids(baseline_ids: np.ndarray, candidate_ids: np.ndarray) -> np.ndarray:
    """The candidate's row for each baseline id, in the baseline's order (the callers have checked that
    both hold the same ids)."""
    position = {id_: i for i, id_ in enumerate(candidate_ids.tolist())}
    return np.array([position[id_] for id_ in baseline_ids.tolist()])


def align(baseline: Outputs, candidate: Outputs) -> tuple[Outputs, Outputs]:
    """The two outputs on the same examples in the same order (the candidate reordered by id if needed).

    Raises :class:`~assay.errors.DataError` when they are not the same examples with the same labels.
    """
    if baseline.n_classes != candidate.n_classes:
        raise DataError(
            f"Baseline and candidate predict different numbers of classes ({baseline.n_classes} vs "
            f"{candidate.n_classes} probability columns); compare models of the same task."
        )
    if baseline.fingerprint() == candidate.fingerprint():
        return baseline, candidate
    advice = "Run both models on the same dataset split (same ids and labels) before comparing them."
    base_ids, cand_ids = set(baseline.ids.tolist()), set(candidate.ids.tolist())
    if base_ids != cand_ids:
        row_numbers = [
            side for side, o in (("baseline", baseline), ("candidate", candidate))
            if o.ids.tolist() == np.arange(o.n).astype(str).tolist()
        ]  # fmt: skip
        hint = (
            f" The {' and '.join(row_numbers)} ids are row numbers: was an 'id' column missing?"
            if row_numbers
            else ""
        )
        raise DataError(
            f"Baseline and candidate outputs are not on the same examples: {len(base_ids)} and "
            f"{len(cand_ids)} ids, {len(base_ids & cand_ids)} in common (fingerprints "
            f"{baseline.fingerprint()[:12]} vs {candidate.fingerprint()[:12]}).{hint} {advice}"
        )
    aligned = _reordered(candidate, order_by_ids(baseline.ids, candidate.ids))
    differ = np.flatnonzero(aligned.labels != baseline.labels)
    if differ.size:
        first = differ[0]
        raise DataError(
            f"Baseline and candidate outputs have the same ids but {differ.size} different label(s), e.g. "
            f"id '{baseline.ids[first]}': {baseline.labels[first]} vs {aligned.labels[first]}. {advice}"
        )
    return baseline, aligned


def _paired(
    name: str,
    family: str,
    values: tuple[float, float],
    replicates: tuple[Replicates, Replicates],
    n: int,
    hits: tuple[np.ndarray, np.ndarray] | None,
    *,
    n_boot: int,
    seed: int,
    higher_is_better: bool | None,
    estimator: str,
    unit: str | None,
    details: dict[str, Any] | None = None,
) -> PairedResult:
    """Candidate − baseline of one metric on the same resamples of n paired examples. ``values`` and
    ``replicates`` are (baseline, candidate); with ``hits`` (0/1 outcomes of both models per example) the
    p-value is exact McNemar, otherwise the two-sided paired bootstrap's."""
    base_fn, cand_fn = replicates
    base, cand = [], []
    for rows in iter_bootstrap_indices(n, n_boot, seed):
        base.append(base_fn(rows))
        cand.append(cand_fn(rows))
    base_samples = np.concatenate(base).astype(np.float64)
    cand_samples = np.concatenate(cand).astype(np.float64)
    delta_samples = cand_samples - base_samples
    low, high = percentile_interval(delta_samples)
    info: dict[str, Any] = {
        "interval": "paired percentile bootstrap",
        "n_boot": n_boot,
        "seed": seed,
        "alternative": "two-sided",
    }
    if hits is not None:
        result = mcnemar_exact(*hits)
        p_value, test = result.p_value, "exact McNemar"
        info |= {"baseline_only_correct": result.b, "candidate_only_correct": result.c}
    else:
        p_value, test = bootstrap_p_value(delta_samples, 0.0, alternative="two-sided"), "paired bootstrap"
    comparison = Comparison(
        name=name,
        family=family,
        baseline=values[0],
        candidate=values[1],
        delta=values[1] - values[0],
        delta_ci_low=low,
        delta_ci_high=high,
        p_value=p_value,
        test=test,
        n=n,
        unit=unit,
        higher_is_better=higher_is_better,
        estimator=estimator,
        details={**info, **(details or {})},
    )
    return PairedResult(comparison, delta_samples, base_samples, cand_samples)


def compare_aligned(
    spec: MetricSpec, baseline: Outputs, candidate: Outputs, *, n_boot: int, seed: int
) -> PairedResult:
    """:func:`compare_metric` for outputs already aligned by :func:`align`."""
    hits = None
    if spec.interval == "wilson" and spec.per_example is not None:
        # A proportion of per-example successes (accuracy): paired 0/1 outcomes, so exact McNemar.
        hits = (
            spec.per_example(baseline.labels, baseline.probs) > 0.5,
            spec.per_example(candidate.labels, candidate.probs) > 0.5,
        )
    return _paired(
        spec.name,
        spec.family,
        (spec.fn(baseline.labels, baseline.probs), spec.fn(candidate.labels, candidate.probs)),
        (spec.resampler(baseline.labels, baseline.probs), spec.resampler(candidate.labels, candidate.probs)),
        baseline.n,
        hits,
        n_boot=n_boot,
        seed=seed,
        higher_is_better=spec.higher_is_better,
        estimator=spec.estimator,
        unit=spec.unit,
    )


def compare_per_example(
    baseline: PerExample, candidate: PerExample, *, n_boot: int = 1000, seed: int = 0
) -> PairedResult:
    """Compare two models' measurement of the same name from their per-example evidence, in pairs.

    The examples are matched by id (the candidate's are reordered to the baseline's); different sets of
    examples are a :class:`~assay.errors.DataError`, since an unpaired delta would not mean what the
    interval says. Delta interval: paired percentile bootstrap (the same resampled examples for both);
    p-value: exact McNemar when both have 0/1 hits, else the two-sided paired bootstrap p-value.
    """
    b, c = baseline.measurement, candidate.measurement
    if b.name != c.name:
        raise UsageError(f"Compare a measurement with itself: got '{b.name}' and '{c.name}'.")
    if b.value is None or c.value is None:
        raise UsageError(f"'{b.name}': both measurements need a value to be compared.")
    if np.array_equal(baseline.ids, candidate.ids):
        order = None
    else:
        ids = set(candidate.ids.tolist())
        if len(ids) != len(candidate.ids) or ids != set(baseline.ids.tolist()):
            raise DataError(
                f"'{b.name}' was measured on different examples for the two models ({len(baseline.ids)} and "
                f"{len(candidate.ids)} ids, {len(ids & set(baseline.ids.tolist()))} in common). "
                "Measure both with the same data, subset sizes and seed."
            )
        order = order_by_ids(baseline.ids, candidate.ids)

    def cand_fn(rows: np.ndarray) -> np.ndarray:
        return candidate.replicates(rows if order is None else order[rows])

    hits = None
    if baseline.hits is not None and candidate.hits is not None:
        hits = (baseline.hits, candidate.hits if order is None else candidate.hits[order])
    return _paired(
        b.name,
        b.family,
        (b.value, c.value),
        (baseline.replicates, cand_fn),
        len(baseline.ids),
        hits,
        n_boot=n_boot,
        seed=seed,
        higher_is_better=b.higher_is_better,
        estimator=b.estimator,
        unit=b.unit,
        details={"paired_on": "example ids"},
    )


def compare_metric(
    baseline: Outputs, candidate: Outputs, name: str, *, n_boot: int = 1000, seed: int = 0
) -> PairedResult:
    """Compare one registered metric, candidate − baseline, on the same examples.

    The delta's 95% CI is a paired percentile bootstrap (both models resampled with the same indices).
    The p-value tests H0 "no difference": exact McNemar for proportions of per-example successes such
    as accuracy (``test="exact McNemar"``), otherwise the two-sided paired bootstrap p-value
    (``test="paired bootstrap"``, see :func:`assay.stats.bootstrap_p_value`).
    """
    spec = METRICS.get(name)
    baseline, candidate = align(baseline, candidate)
    return compare_aligned(spec, baseline, candidate, n_boot=n_boot, seed=seed)


def _statistic(values: np.ndarray, statistic: str) -> np.ndarray:
    """The statistic along the last axis."""
    if statistic == "mean":
        return values.mean(axis=-1)
    return np.percentile(values, float(statistic[1:]), axis=-1)


def _resampled_statistic(
    samples: np.ndarray, statistic: str, rng: np.random.Generator, n_boot: int
) -> np.ndarray:
    rows = rng.integers(0, samples.shape[0], size=(n_boot, samples.shape[0]))
    return _statistic(samples[rows], statistic)


def compare_samples(
    name: str,
    baseline_samples: Sequence[float] | np.ndarray,
    candidate_samples: Sequence[float] | np.ndarray,
    statistic: str = "p50",
    *,
    n_boot: int = 1000,
    seed: int = 0,
    higher_is_better: bool = False,
    unit: str | None = None,
    family: str = "efficiency",
) -> PairedResult:
    """Compare a statistic (``p50``, ``p95``, ``p99`` or ``mean``) of two independent sets of samples.

    Timings of two models are separate runs, not pairs, so each set is resampled on its own (one seeded
    generator, baseline first); the delta's CI is the percentile interval of the differences of the
    replicates and the p-value the two-sided bootstrap p-value for H0 "no difference"
    (``test="bootstrap (unpaired)"``).
    """
    if statistic not in STATISTICS:
        raise UsageError(f"Unknown statistic '{statistic}' for '{name}'. Known: {', '.join(STATISTICS)}.")
    base, cand = (
        np.asarray(baseline_samples, dtype=np.float64),
        np.asarray(candidate_samples, dtype=np.float64),
    )
    if base.ndim != 1 or cand.ndim != 1 or base.size == 0 or cand.size == 0:
        raise UsageError(f"'{name}': both sample sets must be non-empty 1-D sequences of numbers.")
    rng = np.random.default_rng(seed)
    base_rep = _resampled_statistic(base, statistic, rng, n_boot)
    cand_rep = _resampled_statistic(cand, statistic, rng, n_boot)
    delta_samples = cand_rep - base_rep
    base_value, cand_value = float(_statistic(base, statistic)), float(_statistic(cand, statistic))
    low, high = percentile_interval(delta_samples)
    comparison = Comparison(
        name=name,
        family=family,
        baseline=base_value,
        candidate=cand_value,
        delta=cand_value - base_value,
        delta_ci_low=low,
        delta_ci_high=high,
        p_value=bootstrap_p_value(delta_samples, 0.0, alternative="two-sided"),
        test="bootstrap (unpaired)",
        n=int(min(base.size, cand.size)),
        unit=unit,
        higher_is_better=higher_is_better,
        estimator=f"{statistic} of the samples",
        details={
            "n_baseline": int(base.size),
            "n_candidate": int(cand.size),
            "statistic": statistic,
            "interval": "percentile bootstrap of independent resamples",
            "n_boot": n_boot,
            "seed": seed,
            "alternative": "two-sided",
        },
    )
    return PairedResult(comparison, delta_samples, base_rep, cand_rep, resampling=comparison.test)


def resample_statistic(measurement: Measurement, *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of one efficiency measurement's statistic (``details["statistic"]`` of
    ``details["samples"]``); an exact quantity without samples is its value, repeated."""
    samples = measurement.details.get("samples")
    if not samples:
        return np.full(n_boot, float(measurement.value if measurement.value is not None else np.nan))
    statistic = str(measurement.details.get("statistic", "p50"))
    return _resampled_statistic(
        np.asarray(samples, dtype=np.float64), statistic, np.random.default_rng(seed), n_boot
    )


def flags_by_side(baseline: Measurement | None, candidate: Measurement | None) -> dict[str, list[str]]:
    """``{"baseline": [...], "candidate": [...]}``: each side's timing flags (``details["flags"]`` of an
    efficiency measurement: outliers, blocks that disagree, a busy machine), sides without any left out."""
    sides = {"baseline": baseline, "candidate": candidate}
    return {
        side: [str(flag) for flag in m.details["flags"]]
        for side, m in sides.items()
        if m is not None and m.details.get("flags")
    }


def compare_measurements(
    baseline: Measurement, candidate: Measurement, *, n_boot: int = 1000, seed: int = 0
) -> PairedResult:
    """Compare two efficiency measurements of the same name.

    With raw samples in ``details["samples"]`` (and ``details["statistic"]``): :func:`compare_samples`,
    with either side's timing flags in ``details["flags"]`` (:func:`flags_by_side`).
    Without (parameters, size on disk): the values are exact counts, so the delta has no sampling
    uncertainty; its CI is the point itself and there is no p-value (``test="exact (no sampling)"``).
    """
    if baseline.value is None or candidate.value is None:
        raise UsageError(f"'{baseline.name}': both measurements need a value to be compared.")
    base_samples, cand_samples = baseline.details.get("samples"), candidate.details.get("samples")
    if base_samples and cand_samples:
        result = compare_samples(
            candidate.name,
            base_samples,
            cand_samples,
            str(candidate.details.get("statistic", "p50")),
            n_boot=n_boot,
            seed=seed,
            higher_is_better=bool(candidate.higher_is_better),
            unit=candidate.unit,
            family=candidate.family,
        )
        flags = flags_by_side(baseline, candidate)
        if not flags:
            return result
        # A comparison of flagged timings carries the flags, so the gate rule judged on it can say so.
        c = result.comparison
        return replace(result, comparison=replace(c, details={**c.details, "flags": flags}))
    delta = candidate.value - baseline.value
    comparison = Comparison(
        name=candidate.name,
        family=candidate.family,
        baseline=baseline.value,
        candidate=candidate.value,
        delta=delta,
        delta_ci_low=delta,
        delta_ci_high=delta,
        p_value=None,
        test="exact (no sampling)",
        unit=candidate.unit,
        higher_is_better=candidate.higher_is_better,
        estimator=candidate.estimator,
    )
    return PairedResult(
        comparison,
        np.full(n_boot, delta),
        np.full(n_boot, baseline.value),
        np.full(n_boot, candidate.value),
        resampling=comparison.test,
    )


def _churn_measurement(name: str, hits: int, n: int, estimator: str, higher_is_better: bool) -> Measurement:
    return Measurement.proportion(
        name, "churn", hits, n, higher_is_better=higher_is_better, estimator=estimator, count_key="count"
    )


def churn(baseline: Outputs, candidate: Outputs) -> list[Measurement]:
    """Prediction churn between two models on the same examples, each share with a Wilson 95% CI.

    ``churn``: share of examples whose top-1 prediction changed; ``churn_correct_to_wrong``: right
    before, wrong now; ``churn_wrong_to_correct``: wrong before, right now.
    """
    baseline, candidate = align(baseline, candidate)
    n = baseline.n
    flipped = int(np.count_nonzero(baseline.preds != candidate.preds))
    broke = int(np.count_nonzero(baseline.correct & ~candidate.correct))
    fixed = int(np.count_nonzero(~baseline.correct & candidate.correct))
    return [
        _churn_measurement("churn", flipped, n, "share of examples whose top-1 prediction changed", False),
        _churn_measurement(
            "churn_correct_to_wrong", broke, n, "share right under the baseline, wrong now", False
        ),
        _churn_measurement(
            "churn_wrong_to_correct", fixed, n, "share wrong under the baseline, right now", True
        ),
    ]

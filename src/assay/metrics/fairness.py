"""Fairness across groups: per-group metrics with intervals, gaps, ratios, worst group; demographic parity
and equalized odds (binary tasks); slice discovery on tabular features with false-discovery-rate control.

Per group g (pure functions of labels, predictions and one group label per example):

    accuracy        share of g's examples predicted right                       any task
    selection_rate  share of g's examples predicted positive (class 1)          binary tasks
    tpr, fpr        true / false positive rate in g                             binary tasks

Each rate has a Wilson interval on g's own examples. Across groups: ``gap`` = max − min, ``ratio`` =
min / max (1 = parity) and the worst group (lowest accuracy / TPR, highest FPR), with percentile-bootstrap
intervals over the examples. ``demographic_parity_difference`` is the selection-rate gap and
``equalized_odds_difference`` the larger of the TPR and FPR gaps: fairlearn's definitions
(``method="between_groups"``, ``agg="worst_case"``). A group with no examples of a class has no TPR (or
FPR); it is left out of that gap and named in ``details``.

Slice discovery (:func:`discover_slices`): every feature is cut into slices (its values when it has
few, else quantile bins); each slice's error rate is tested against the rest of the data with a one-sided
Fisher exact test (H1: more errors inside), and the p-values of all slices are adjusted together with
Benjamini–Hochberg (:func:`assay.stats.benjamini_hochberg`). A slice is reported when its adjusted p-value
is below ``fdr``: the expected share of false discoveries among the reported slices is then at most ``fdr``
(BH 1995, valid under independence or positive regression dependence, which overlapping slices of one
feature satisfy only approximately: the report says so).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import fisher_exact

from assay.errors import UsageError
from assay.measurement import Measurement
from assay.stats import benjamini_hochberg, bootstrap_ci, wilson_interval

FAMILY = "fairness"
MIN_GROUP = 1


def _arrays(labels: np.ndarray, preds: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, ...]:
    y, p, g = np.asarray(labels), np.asarray(preds), np.asarray(groups).astype(str)
    if not (y.ndim == p.ndim == g.ndim == 1 and y.shape == p.shape == g.shape):
        raise UsageError(
            f"Labels, predictions and groups must be 1-D of one length; got {y.shape}, {p.shape}, {g.shape}."
        )
    if y.size == 0:
        raise UsageError("No examples to measure fairness on.")
    return y, p, g


def is_binary(labels: np.ndarray, preds: np.ndarray) -> bool:
    return bool(np.isin(labels, (0, 1)).all() and np.isin(preds, (0, 1)).all())


# metric -> (selects the examples it is a rate over, the event counted, higher is better)
_RATES: dict[
    str,
    tuple[
        Callable[[np.ndarray, np.ndarray], np.ndarray], Callable[[np.ndarray, np.ndarray], np.ndarray], bool
    ],
] = {
    "accuracy": (lambda y, p: np.ones(y.shape, bool), lambda y, p: y == p, True),
    "selection_rate": (lambda y, p: np.ones(y.shape, bool), lambda y, p: p == 1, True),
    "tpr": (lambda y, p: y == 1, lambda y, p: p == 1, True),
    "fpr": (lambda y, p: y == 0, lambda y, p: p == 1, False),
}
_ESTIMATORS = {
    "accuracy": "share of the group's examples predicted right",
    "selection_rate": "share of the group's examples predicted positive (class 1)",
    "tpr": "share of the group's positives predicted positive",
    "fpr": "share of the group's negatives predicted positive",
}


def metrics_for(labels: np.ndarray, preds: np.ndarray) -> list[str]:
    """The per-group metrics the task allows: accuracy always, the binary rates for 0/1 tasks."""
    return list(_RATES) if is_binary(labels, preds) else ["accuracy"]


def group_rates(labels: np.ndarray, preds: np.ndarray, groups: np.ndarray, metric: str) -> dict[str, float]:
    """``metric`` in each group (NaN where the group has no example it is a rate over)."""
    y, p, g = _arrays(labels, preds, groups)
    base, event = _RATES[metric][:2]
    sel, hit = base(y, p), event(y, p) & base(y, p)
    out = {}
    for name in np.unique(g):
        inside = g == name
        n = int(sel[inside].sum())
        out[str(name)] = float(hit[inside].sum() / n) if n else float("nan")
    return out


def _gap_replicates(
    y: np.ndarray, p: np.ndarray, g: np.ndarray, metric: str, kind: str
) -> Callable[[np.ndarray], np.ndarray]:
    """Bootstrap rows -> the gap (max − min) or ratio (min / max) of ``metric`` across groups."""
    base, event = _RATES[metric][:2]
    names, codes = np.unique(g, return_inverse=True)
    k = names.size
    sel = base(y, p).astype(np.float64)
    hit = (event(y, p) & base(y, p)).astype(np.float64)

    def replicate(rows: np.ndarray) -> np.ndarray:
        b = rows.shape[0]
        keys = (codes[rows] + k * np.arange(b)[:, None]).ravel()
        den = np.bincount(keys, weights=sel[rows].ravel(), minlength=b * k).reshape(b, k)
        num = np.bincount(keys, weights=hit[rows].ravel(), minlength=b * k).reshape(b, k)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(den > 0, num / den, np.nan)
            high, low = np.nanmax(rate, axis=1), np.nanmin(rate, axis=1)
            return np.asarray(high - low if kind == "gap" else low / high)

    return replicate


def _interval(
    y: np.ndarray, p: np.ndarray, g: np.ndarray, metric: str, kind: str, n_boot: int, seed: int
) -> tuple[float, float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: a resample lost a whole group
        result = bootstrap_ci(
            _gap_replicates(y, p, g, metric, kind), y.size, n_boot=n_boot, seed=seed, vectorized=True
        )
    finite = result.samples[np.isfinite(result.samples)]
    low, high = np.quantile(finite, [0.025, 0.975]) if finite.size else (np.nan, np.nan)
    return result.estimate, float(low), float(high)


def fairness_measurements(
    labels: np.ndarray,
    preds: np.ndarray,
    groups: np.ndarray,
    *,
    attribute: str = "group",
    n_boot: int = 1000,
    seed: int = 0,
) -> list[Measurement]:
    """Per-group rates (Wilson), their gap, ratio and worst group (bootstrap), and for binary tasks the
    demographic-parity and equalized-odds differences; ``attribute`` names the grouping in every name."""
    y, p, g = _arrays(labels, preds, groups)
    out: list[Measurement] = []
    gaps: dict[str, float] = {}
    boot = {"interval": "percentile bootstrap over examples", "n_boot": n_boot, "seed": seed}
    for metric in metrics_for(y, p):
        base, event, higher = _RATES[metric]
        sel, hit = base(y, p), event(y, p) & base(y, p)
        rates: dict[str, float] = {}
        for name in np.unique(g):
            inside = g == name
            n, k = int(sel[inside].sum()), int(hit[inside].sum())
            key = f"{metric}[{attribute}={name}]"
            if n < MIN_GROUP:
                out.append(
                    Measurement.skipped(key, FAMILY, f"group '{name}' has no examples this rate is over")
                )
                continue
            rates[str(name)] = k / n
            out.append(
                Measurement.proportion(
                    key,
                    FAMILY,
                    k,
                    n,
                    higher_is_better=higher if metric != "selection_rate" else None,
                    estimator=_ESTIMATORS[metric],
                    details={"attribute": attribute, "group": str(name)},
                )
            )
        if len(rates) < 2:
            continue
        missing = sorted(set(np.unique(g).astype(str)) - set(rates))
        worst = min(rates, key=rates.__getitem__) if higher else max(rates, key=rates.__getitem__)
        common = {"attribute": attribute, "groups": rates, "worst_group": worst, "left_out": missing, **boot}
        for kind in ("gap", "ratio"):
            value, low, high = _interval(y, p, g, metric, kind, n_boot, seed)
            if kind == "gap":
                gaps[metric] = value
            out.append(
                Measurement(
                    name=f"{metric}_{kind}[{attribute}]",
                    family=FAMILY,
                    value=value,
                    ci_low=low,
                    ci_high=high,
                    n=int(y.size),
                    higher_is_better=kind == "ratio",
                    estimator=f"{'max − min' if kind == 'gap' else 'min / max'} of per-group {metric}",
                    details=common,
                )
            )
        lo, hi = wilson_interval(round(rates[worst] * int(sel[g == worst].sum())), int(sel[g == worst].sum()))
        out.append(
            Measurement(
                name=f"worst_group_{metric}[{attribute}]",
                family=FAMILY,
                value=rates[worst],
                ci_low=lo,
                ci_high=hi,
                n=int(sel[g == worst].sum()),
                higher_is_better=higher,
                estimator=f"{metric} of the group where it is {'lowest' if higher else 'highest'}",
                details={**common, "interval": "wilson on the worst group (chosen after looking)"},
            )
        )
    out.extend(_parity_measurements(y, p, g, attribute, gaps, n_boot, seed))
    return out


def _parity_measurements(
    y: np.ndarray,
    p: np.ndarray,
    g: np.ndarray,
    attribute: str,
    gaps: dict[str, float],
    n_boot: int,
    seed: int,
) -> list[Measurement]:
    dp, eo = f"demographic_parity_difference[{attribute}]", f"equalized_odds_difference[{attribute}]"
    if not is_binary(y, p):
        reason = "defined for binary tasks (labels and predictions in {0, 1}); this task is multiclass"
        return [Measurement.skipped(dp, FAMILY, reason), Measurement.skipped(eo, FAMILY, reason)]
    out = []
    if "selection_rate" in gaps:
        value, low, high = _interval(y, p, g, "selection_rate", "gap", n_boot, seed)
        out.append(
            Measurement(
                name=dp,
                family=FAMILY,
                value=value,
                ci_low=low,
                ci_high=high,
                n=int(y.size),
                higher_is_better=False,
                estimator="max − min over groups of the selection rate (fairlearn)",
                details={"attribute": attribute, "interval": "percentile bootstrap over examples"},
            )
        )
    if "tpr" in gaps and "fpr" in gaps:
        tpr, fpr = _gap_replicates(y, p, g, "tpr", "gap"), _gap_replicates(y, p, g, "fpr", "gap")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = bootstrap_ci(
                lambda rows: np.fmax(tpr(rows), fpr(rows)), y.size, n_boot=n_boot, seed=seed, vectorized=True
            )
        finite = result.samples[np.isfinite(result.samples)]
        out.append(
            Measurement(
                name=eo,
                family=FAMILY,
                value=max(gaps["tpr"], gaps["fpr"]),
                ci_low=float(np.quantile(finite, 0.025)),
                ci_high=float(np.quantile(finite, 0.975)),
                n=int(y.size),
                higher_is_better=False,
                estimator="max of the TPR gap and the FPR gap across groups (fairlearn, worst case)",
                details={
                    "attribute": attribute,
                    "tpr_gap": gaps["tpr"],
                    "fpr_gap": gaps["fpr"],
                    "interval": "percentile bootstrap over examples",
                },
            )
        )
    return out


# --- slice discovery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slice:
    feature: str
    description: str  # "age in (30, 45]" or "colour = red"
    n: int
    error_rate: float
    rest_error_rate: float
    p_value: float
    q_value: float  # Benjamini–Hochberg adjusted


def _slices_of(values: np.ndarray, bins: int, max_levels: int) -> list[tuple[str, np.ndarray]]:
    levels = np.unique(values)
    if levels.size <= max_levels:
        return [
            (f"= {level:g}" if isinstance(level, (float, np.floating)) else f"= {level}", values == level)
            for level in levels
        ]
    edges = np.unique(np.quantile(values.astype(np.float64), np.linspace(0, 1, bins + 1)))
    out = []
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        inside = (values >= lo) & (values <= hi) if i == 0 else (values > lo) & (values <= hi)
        out.append((f"in {'[' if i == 0 else '('}{lo:.4g}, {hi:.4g}]", inside))
    return out


def discover_slices(
    features: np.ndarray,
    correct: np.ndarray,
    feature_names: Sequence[str] | None = None,
    *,
    bins: int = 4,
    max_levels: int = 10,
    min_size: int = 30,
    fdr: float = 0.05,
) -> tuple[list[Slice], list[Slice]]:
    """Slices with significantly more errors than the rest, at false discovery rate ``fdr``.

    Returns (discoveries sorted by q-value, every slice tested). ``correct``: (N,) bool per example.
    """
    x = np.asarray(features)
    ok = np.asarray(correct, dtype=bool)
    if x.ndim != 2 or x.shape[0] != ok.shape[0]:
        raise UsageError(f"Need features (N, F) and correct (N,); got {x.shape} and {ok.shape}.")
    if not 0 < fdr < 1:
        raise UsageError(f"'fdr' must be strictly between 0 and 1. Got {fdr}.")
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(x.shape[1])]
    errors = ~ok
    total_err, n = int(errors.sum()), int(ok.size)
    tested: list[tuple[str, str, int, int, float]] = []
    for j, name in enumerate(names):
        for description, inside in _slices_of(x[:, j], bins, max_levels):
            size = int(inside.sum())
            if size < min_size or size == n:
                continue
            err_in = int(errors[inside].sum())
            table = [[err_in, size - err_in], [total_err - err_in, n - size - (total_err - err_in)]]
            p = float(fisher_exact(table, alternative="greater").pvalue)
            tested.append((name, f"{name} {description}", size, err_in, p))
    if not tested:
        return [], []
    q = benjamini_hochberg([t[4] for t in tested])
    slices = [
        Slice(name, desc, size, err_in / size, (total_err - err_in) / (n - size), p, float(qv))
        for (name, desc, size, err_in, p), qv in zip(tested, q, strict=True)
    ]
    found = sorted((s for s in slices if s.q_value < fdr), key=lambda s: (s.q_value, -s.error_rate))
    return found, slices


def slice_measurement(
    features: np.ndarray,
    correct: np.ndarray,
    feature_names: Sequence[str] | None = None,
    *,
    fdr: float = 0.05,
    **options: Any,
) -> Measurement:
    """``slices_found``: how many slices err significantly more than the rest (BH at ``fdr``); the
    slices, their error rates and q-values are in ``details``."""
    found, tested = discover_slices(features, correct, feature_names, fdr=fdr, **options)
    return Measurement(
        name="slices_found",
        family=FAMILY,
        value=float(len(found)),
        n=int(np.asarray(correct).size),
        higher_is_better=False,
        estimator=f"slices erring more than the rest: one-sided Fisher exact, Benjamini–Hochberg at {fdr:g}",
        details={
            "fdr": fdr,
            "tested": len(tested),
            "slices": [s.__dict__ for s in found],
            "note": "BH assumes independent or positively dependent tests; overlapping slices are nearly so",
            "interval": "none: a count of discoveries",
        },
    )

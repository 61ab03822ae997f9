"""Drift detectors for windows of live traffic, and their calibration to a false-alarm budget.

Every detector (a :class:`Detector` in the registry :data:`DETECTORS`: its statistic, its details, its
explanation and how its threshold is fitted, in one place) maps a window (its rows) and the reference's
*comparison half* to one statistic, larger = more drift; all but ``embeddings`` are ``−log10`` of a
p-value, so they share a scale:

    features     per-feature two-sample Kolmogorov–Smirnov (Smirnov's distribution, as scipy's
                 ``ks_2samp(method="asymp")``), Benjamini–Hochberg (or Holm) across features;
                 statistic ``−log10`` of the smallest adjusted p. Details add the PSI of every feature.
    embeddings   unbiased MMD² (Gretton et al. 2012) with a Gaussian kernel, bandwidth by the median
                 heuristic on the reference, through random Fourier features (Rahimi & Recht 2007): the
                 exact unbiased MMD² of the random-feature kernel, linear in rows.
    predictions  Pearson chi-square goodness of fit of the predicted-class counts to the reference's class
                 proportions (classes expected fewer than 5 times in a window are pooled).
    confidence   two-sample KS on the max probability.
    ood_rate     one-sided binomial test of the share of rows whose OOD score exceeds the reference's
                 95th percentile.
    accuracy     one-sided beta-binomial test of a drop in accuracy, predictive of the reference accuracy
                 (windows with at least ``MIN_ROWS`` labels).
    agreement    one-sided beta-binomial test of the disagreement with the parent model (shadow mode),
                 predictive of the agreement measured on the gating set.

Calibration (:func:`calibrate`): the reference is split at random into a comparison half and a
calibration half. ``n_resamples`` windows of the serving size are drawn with replacement (a bootstrap:
iid rows, as live windows are) from the calibration half and scored against the comparison half, so
their statistics follow the null distribution of live windows. The false-alarm budget ``B`` (expected
windows between false alarms) gives a per-window family alpha ``1/B``, split equally (or by ``weights``)
over the active detectors (a union bound: the family rate is at most ``1/B``). Each threshold is the
``1 − alpha_d`` quantile of its detector's null statistics: the empirical quantile when at least 20
resampled windows lie beyond it, else an exponential tail (peaks over threshold, shape 0) fitted to the
top 10%. ``agreement`` has no per-row parent outputs in the reference, so its threshold is the exact
predictive ``−log10 alpha_d``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import sparse
from scipy.special import bdtrc, chdtrc
from scipy.stats import betabinom, kstwo

from assay.errors import DataError, UsageError
from assay.plugins import Registry
from assay.serve.reference import Reference
from assay.stats import benjamini_hochberg, holm, wilson_interval

CALIBRATION_FORMAT = "assay.calibration/1"
# Every detector by name, in the order they run and report (the built-ins are registered at the end of
# this module; a plugin adds a Detector with DETECTORS.add or the entry-point group assay.drift_detector).
DETECTORS: Registry[Detector] = Registry("drift_detector")
P_FLOOR = 1e-300  # statistics are capped at 300 (−log10 of the smallest double we keep)
SMALLEST_WINDOW = 10  # rows
REFERENCE_WINDOWS = 2  # reference rows per window row calibrate needs: a comparison and a calibration half
MIN_ROWS = 30  # fewest labelled (or shadowed) rows a window needs before accuracy (or agreement) is tested
MIN_EXPECTED = 5.0  # chi-square bins expected fewer times than this in a window are pooled
OOD_QUANTILE = 0.95
PSI_BINS = 10
PSI_EPS = 1e-4  # bin shares are clipped below at this before the logarithm (an empty bin is not infinite)
DEFAULT_RESAMPLES = 2000
TAIL_FRACTION = 0.1
MIN_EXCEEDANCES = 20
_CHUNK = 250  # resampled windows per vectorised step: bounds memory at ~chunk x window x features

Correction = Literal["bh", "holm"]


def neg_log10(p: np.ndarray | float) -> np.ndarray:
    """``−log10 p`` with p clipped to [1e-300, 1]."""
    return np.asarray(-np.log10(np.clip(p, P_FLOOR, 1.0)))


# --- Kolmogorov–Smirnov ------------------------------------------------------------------------------


def ks_statistic(ref_sorted: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Two-sample KS statistic ``sup |F_ref − F_window|`` of each row of ``samples`` (B, n) against one
    sorted reference sample (m,), ties handled exactly.

    Between two consecutive window values the window's ECDF is constant and the reference's is monotone,
    so the supremum is attained at a window value or just below one: O(n log m) per window, no merge.
    """
    s = np.sort(np.atleast_2d(samples), axis=1)
    b, n = s.shape
    m = ref_sorted.shape[0]
    idx = np.arange(n)
    first = np.ones((b, n), dtype=bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    last = np.ones((b, n), dtype=bool)
    last[:, :-1] = s[:, :-1] != s[:, 1:]
    below = np.maximum.accumulate(np.where(first, idx, 0), axis=1)  # window rows strictly below the value
    upto = np.minimum.accumulate(np.where(last, idx, n - 1)[:, ::-1], axis=1)[:, ::-1] + 1  # rows <= value
    at = np.abs(np.searchsorted(ref_sorted, s, side="right") / m - upto / n).max(axis=1)
    before = np.abs(np.searchsorted(ref_sorted, s, side="left") / m - below / n).max(axis=1)
    return np.asarray(np.maximum(at, before))


@functools.lru_cache(maxsize=65536)
def _ks_log10_sf(n_eff: int, d: float) -> float:
    return float(neg_log10(float(kstwo.sf(d, n_eff))))


def ks_neg_log10_p(d: np.ndarray, n1: int, n2: int) -> np.ndarray:
    """``−log10`` of the two-sided KS p-value of statistics ``d`` for samples of sizes n1 and n2, by
    Smirnov's distribution ``kstwo.sf(d, round(n1·n2/(n1+n2)))`` (scipy's ``ks_2samp`` "asymp" method).

    ``kstwo`` costs ~0.1 ms a value, so it runs once per distinct statistic (memoised): the comparison
    half is trimmed to a multiple of the window, which puts every statistic on the grid ``j/m``.
    """
    n_eff = round(n1 * n2 / (n1 + n2))
    flat = np.asarray(d, dtype=np.float64).ravel()
    lcm = n1 * n2 // np.gcd(n1, n2)
    if lcm <= 10**9:
        flat = np.round(flat * lcm) / lcm  # one float per rational value, so the memo hits
    uniq, inverse = np.unique(flat, return_inverse=True)
    values = np.array([_ks_log10_sf(n_eff, float(u)) for u in uniq])
    return values[inverse].reshape(np.shape(d))


def min_adjusted_p(p: np.ndarray, correction: Correction = "bh") -> np.ndarray:
    """Smallest multiplicity-adjusted p-value of each row of ``p`` (B, k), vectorised.

    BH: ``min_j min(1, k·p₍ⱼ₎/j)`` (the first step-up adjusted value is the minimum over all). Holm:
    ``min(1, k·p₍₁₎)``. Equal to ``min(assay.stats.benjamini_hochberg(row))`` / ``min(holm(row))``.
    """
    ps = np.sort(np.atleast_2d(p), axis=1)
    k = ps.shape[1]
    if correction == "holm":
        return np.asarray(np.minimum(1.0, k * ps[:, 0]))
    return np.asarray(np.minimum(1.0, (k * ps / np.arange(1, k + 1)).min(axis=1)))


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = PSI_EPS) -> np.ndarray:
    """Population stability index ``Σ (a − e)·ln(a / e)`` over bins, shares clipped below at ``eps``."""
    e = np.clip(expected, eps, None)
    a = np.clip(actual, eps, None)
    return np.asarray(((a - e) * np.log(a / e)).sum(axis=-1))


def psi_edges(ref: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Inner bin edges for PSI: the reference's deciles (duplicates dropped, so ties make fewer bins)."""
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of ``values`` in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    return np.asarray(counts / max(1, values.size))


# --- MMD ---------------------------------------------------------------------------------------------


def median_heuristic(x: np.ndarray, max_rows: int = 1000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of (at most ``max_rows`` seeded) rows; 1.0 if it is 0."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] > max_rows:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_rows, replace=False)]
    sq = (x * x).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    med = float(np.median(np.sqrt(d2[np.triu_indices(x.shape[0], k=1)])))
    return med if med > 0 else 1.0


@dataclass(frozen=True, eq=False)
class FourierFeatures:
    """Random Fourier features of the Gaussian kernel ``exp(−‖x − y‖² / (2σ²))``:
    ``φ(x) = [cos(xW), sin(xW)] / √D`` with ``W ~ N(0, σ⁻² I)`` (d, D), so ``φ(x)·φ(y)`` is an unbiased
    estimate of the kernel and ``‖φ(x)‖² = 1`` up to rounding.

    Computed in float32, returned in float64: numpy's vectorised float32 cosine and sine are about 7x faster
    than float64's (this transform was a third of the monitor's work per served example), and each
    feature is within 1e-6 of float64's, far inside the statistic's sampling spread (about 1/window)."""

    omega: np.ndarray

    @classmethod
    def draw(cls, dim: int, bandwidth: float, n_features: int, seed: int) -> FourierFeatures:
        rng = np.random.default_rng([seed, 2])
        return cls(omega=(rng.standard_normal((dim, n_features)) / bandwidth).astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        proj = np.asarray(x, dtype=np.float32) @ self.omega
        d = self.omega.shape[1]
        phi = np.empty((proj.shape[0], 2 * d), dtype=np.float32)
        np.cos(proj, out=phi[:, :d])
        np.sin(proj, out=phi[:, d:])
        phi /= np.float32(np.sqrt(d))
        return phi.astype(np.float64)  # sums and the MMD² formula's cancellation stay in float64


def mmd2_unbiased_from_sums(sum_x: np.ndarray, n: int, sum_y: np.ndarray, m: int) -> np.ndarray:
    """Unbiased MMD² of the random-feature kernel from feature sums ``Σφ(x)`` (B, D) and ``Σφ(y)`` (D,):
    ``(‖Sx‖² − n)/(n(n−1)) + (‖Sy‖² − m)/(m(m−1)) − 2·Sx·Sy/(nm)`` (the diagonal terms are 1)."""
    sx = np.atleast_2d(sum_x)
    xx = ((sx * sx).sum(axis=1) - n) / (n * (n - 1))
    yy = (float(sum_y @ sum_y) - m) / (m * (m - 1))
    return np.asarray(xx + yy - 2 * (sx @ sum_y) / (n * m))


# --- the comparison half, prepared -------------------------------------------------------------------


def split_halves(n: int, window: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split into (comparison, calibration) row indices. The comparison half is trimmed to
    a multiple of the window (rows moved to the calibration half), so KS statistics lie on a grid."""
    perm = np.random.default_rng([seed, 1]).permutation(n)
    half = n // 2
    m = max(window, (half // window) * window)
    return np.sort(perm[:m]), np.sort(perm[m:])


@dataclass(frozen=True, eq=False)
class Baseline:
    """What the detectors compare a window with: the comparison half, sorted and summarised once."""

    window: int
    m: int
    feature_names: tuple[str, ...]
    inputs_sorted: np.ndarray  # (k, m)
    psi_edges: tuple[np.ndarray, ...]
    psi_shares: tuple[np.ndarray, ...]
    conf_sorted: np.ndarray
    mean_confidence: float
    class_share: np.ndarray  # (C,) smoothed predicted-class shares
    bin_of_class: np.ndarray  # (C,) chi-square bin of each class
    bin_share: np.ndarray
    ood_threshold: float
    ood_rate: float
    accuracy: tuple[float, float] | None  # Beta posterior (a, b) of the reference accuracy
    features: FourierFeatures | None
    phi_sum: np.ndarray | None
    bandwidth: float | None
    agreement: float | None
    n_reference: int
    correction: Correction = "bh"
    n_classes: int = field(default=0)


def fit_baseline(
    reference: Reference,
    rows: np.ndarray,
    *,
    window: int,
    bandwidth: float | None,
    n_random_features: int,
    seed: int,
    correction: Correction,
) -> Baseline:
    """Prepare the comparison rows ``rows`` of ``reference`` for windows of ``window`` rows."""
    inputs = reference.inputs[rows]
    m = rows.size
    # a reference without class outputs (a language model's prompts) compares its inputs alone: the
    # class-output fields stay empty and the detectors that read them are not supported
    probs = reference.probs[rows] if reference.probs is not None else np.full((m, 1), 1.0)
    conf = probs.max(axis=1)
    preds = probs.argmax(axis=1)
    c = max(reference.n_classes, 1)
    # +0.5 per class: a class never predicted on the reference still has a finite expected count
    share = (np.bincount(preds, minlength=c) + 0.5) / (m + 0.5 * c)
    frequent = share * window >= MIN_EXPECTED
    bin_of_class = np.where(frequent, np.cumsum(frequent) - 1, int(frequent.sum()))
    n_bins = int(bin_of_class.max()) + 1
    bin_share = np.bincount(bin_of_class, weights=share, minlength=n_bins)
    ood = reference.ood[rows] if reference.ood is not None else np.zeros(m)
    threshold = float(np.quantile(ood, OOD_QUANTILE))
    accuracy = None
    if reference.labels is not None:
        correct = int((preds == reference.labels[rows]).sum())
        accuracy = (correct + 0.5, m - correct + 0.5)  # Jeffreys posterior of the reference accuracy
    ff = phi_sum = None
    if reference.embeddings is not None and bandwidth is not None:
        ff = FourierFeatures.draw(reference.embeddings.shape[1], bandwidth, n_random_features, seed)
        phi_sum = ff.transform(reference.embeddings[rows]).sum(axis=0)
    edges = tuple(psi_edges(inputs[:, j]) for j in range(inputs.shape[1]))
    return Baseline(
        window=window,
        m=m,
        feature_names=reference.feature_names,
        inputs_sorted=np.sort(inputs, axis=0).T.copy(),
        psi_edges=edges,
        psi_shares=tuple(bin_shares(inputs[:, j], e) for j, e in enumerate(edges)),
        conf_sorted=np.sort(conf),
        mean_confidence=float(conf.mean()),
        class_share=share,
        bin_of_class=bin_of_class,
        bin_share=bin_share,
        ood_threshold=threshold,
        ood_rate=(float((ood > threshold).sum()) + 0.5) / (m + 1),
        accuracy=accuracy,
        features=ff,
        phi_sum=phi_sum,
        bandwidth=bandwidth,
        agreement=reference.agreement,
        n_reference=reference.n,
        correction=correction,
        n_classes=c,
    )


# --- statistics of a batch of windows ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Batch:
    """B windows of n rows each, as the detectors read them; ``None`` where the windows lack the data."""

    inputs: np.ndarray  # (B, n, k)
    confidence: np.ndarray  # (B, n)
    predictions: np.ndarray  # (B, n) int
    ood: np.ndarray  # (B, n)
    phi_sum: np.ndarray | None = None  # (B, D) sums of random features of the embeddings
    n_correct: np.ndarray | None = None  # (B,)
    n_labelled: np.ndarray | None = None  # (B,)
    n_disagree: np.ndarray | None = None  # (B,)
    n_shadow: np.ndarray | None = None  # (B,)


FeatureKS = tuple[np.ndarray, np.ndarray]  # KS statistics and -log10 p-values per window and feature


def features_pvalues(base: Baseline, inputs: np.ndarray) -> FeatureKS:
    """KS statistics and ``−log10`` p-values per window and feature, both (B, k)."""
    n = inputs.shape[1]
    d = np.stack([ks_statistic(base.inputs_sorted[j], inputs[:, :, j]) for j in range(inputs.shape[2])], 1)
    return d, ks_neg_log10_p(d, n, base.m)


def statistics(
    base: Baseline,
    batch: Batch,
    detectors: Sequence[str],
    feature_ks: FeatureKS | None = None,
) -> dict[str, np.ndarray]:
    """Each requested detector's statistic for every window of ``batch`` (B,), where it applies;
    ``feature_ks``: the batch's :func:`features_pvalues`, when the caller has them already. Names that
    are not registered (a calibration from a build with more detectors) are left out."""
    out: dict[str, np.ndarray] = {}
    for name in detectors:
        if name in DETECTORS:
            value = DETECTORS.get(name).statistic(base, batch, feature_ks)
            if value is not None:
                out[name] = value
    return out


def _chi2_counts(base: Baseline, predictions: np.ndarray) -> np.ndarray:
    b = predictions.shape[0]
    n_bins = base.bin_share.size
    flat = (np.arange(b)[:, None] * n_bins + base.bin_of_class[predictions]).ravel()
    return np.bincount(flat, minlength=b * n_bins).reshape(b, n_bins)


def _chi2_neg_log10_p(base: Baseline, predictions: np.ndarray) -> np.ndarray:
    n = predictions.shape[1]
    if base.bin_share.size < 2:
        return np.zeros(predictions.shape[0])
    expected = n * base.bin_share
    stat = (((_chi2_counts(base, predictions) - expected) ** 2) / expected).sum(axis=1)
    # the ufunc, not scipy.stats' chi2.sf: the same values at a seventh of the cost per window
    return neg_log10(chdtrc(base.bin_share.size - 1, stat))


def _agreement_prior(base: Baseline) -> tuple[float, float]:
    # Jeffreys prior updated with the gating set's agreement: the predictive of a window's disagreements
    assert base.agreement is not None
    return (1 - base.agreement) * base.n_reference + 0.5, base.agreement * base.n_reference + 0.5


# --- calibration -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Thresholds for windows of ``window`` rows, fitted once at release; JSON via ``to_dict``."""

    window: int
    false_alarm_windows: float
    thresholds: dict[str, float]
    alphas: dict[str, float]
    tails: dict[str, str]
    null_median: dict[str, float]
    n_resamples: int
    seed: int
    correction: Correction
    bandwidth: float | None
    n_random_features: int
    reference_digest: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"format": CALIBRATION_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        if not isinstance(data, Mapping) or data.get("format") != CALIBRATION_FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise DataError(
                f"Not an assay calibration record (format {got!r}; expected {CALIBRATION_FORMAT!r}). "
                "Recompute it with calibrate(reference, window=...)."
            )
        try:
            return cls(
                window=int(data["window"]),
                false_alarm_windows=float(data["false_alarm_windows"]),
                thresholds={str(k): float(v) for k, v in data["thresholds"].items()},
                alphas={str(k): float(v) for k, v in data["alphas"].items()},
                tails={str(k): str(v) for k, v in data["tails"].items()},
                null_median={str(k): float(v) for k, v in data["null_median"].items()},
                n_resamples=int(data["n_resamples"]),
                seed=int(data["seed"]),
                correction=data["correction"],
                bandwidth=None if data["bandwidth"] is None else float(data["bandwidth"]),
                n_random_features=int(data["n_random_features"]),
                reference_digest=str(data["reference_digest"]),
                seconds=float(data["seconds"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"Incomplete or malformed calibration record ({exc!r}). Recompute it.") from exc


def active_detectors(reference: Reference, detectors: Sequence[str] | None = None) -> tuple[str, ...]:
    """Detectors the reference can support (embeddings, labels, agreement), optionally a chosen subset."""
    known = DETECTORS.in_order()
    unknown = sorted(set(detectors or ()) - set(known))
    if unknown:
        raise UsageError(f"Unknown detector(s) {unknown}. Known: {', '.join(known)}.")
    chosen = tuple(
        d for d in known if DETECTORS.get(d).supported(reference) and (detectors is None or d in detectors)
    )
    if detectors is not None:
        missing = sorted(set(detectors) - set(chosen))
        if missing:
            raise UsageError(
                f"The reference cannot support detector(s) {missing} (no embeddings/labels/agreement)."
            )
    return chosen


def split_budget(
    active: Sequence[str], false_alarm_windows: float, weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Per-detector alphas summing to ``1 / false_alarm_windows``: equal, or proportional to ``weights``."""
    if not false_alarm_windows > 1:
        raise UsageError(
            f"'false_alarm_windows' must be > 1 (windows between false alarms). Got {false_alarm_windows}."
        )
    w = {d: 1.0 if weights is None else float(weights.get(d, 0.0)) for d in active}
    if any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
        raise UsageError(
            f"Detector weights must be >= 0 with a positive sum over {list(active)}. Got {weights}."
        )
    total = sum(w.values())
    return {d: v / total / false_alarm_windows for d, v in w.items() if v > 0}


def tail_threshold(null: np.ndarray, alpha: float) -> tuple[float, str]:
    """The ``1 − alpha`` quantile of null statistics: empirical when at least ``MIN_EXCEEDANCES``
    resamples lie beyond it, else an exponential tail fitted (maximum likelihood: the mean excess) to the
    values above the ``1 − TAIL_FRACTION`` quantile: ``u + scale·ln(p_u / alpha)``."""
    s = np.sort(np.asarray(null, dtype=np.float64))
    b = s.size
    if alpha * b >= MIN_EXCEEDANCES:
        return float(np.quantile(s, 1 - alpha, method="higher")), "empirical"
    u = float(s[max(0, b - max(MIN_EXCEEDANCES, int(TAIL_FRACTION * b)) - 1)])
    above = s[s > u]  # strictly above: discrete statistics put ties at u
    if above.size == 0:
        return u, "exponential"
    p_u = above.size / b
    return float(u + (above - u).mean() * np.log(max(p_u / alpha, 1.0))), "exponential"


def _resampled_batch(
    reference: Reference, rows: np.ndarray, idx: np.ndarray, phi: np.ndarray | None, with_labels: bool
) -> Batch:
    b, n = idx.shape
    take = rows[idx]
    probs = reference.probs[take] if reference.probs is not None else np.ones((b, n, 1))
    preds = probs.argmax(axis=2)
    phi_sum = None
    if phi is not None:
        # a (B x rows) count matrix times the rows' features: window sums without a (B, n, D) array
        counts = sparse.csr_matrix(
            (np.ones(idx.size), idx.ravel(), np.arange(0, idx.size + 1, n)), shape=(b, phi.shape[0])
        )
        phi_sum = np.asarray(counts @ phi)
    n_correct = n_labelled = None
    if with_labels and reference.labels is not None:
        n_correct = (preds == reference.labels[take]).sum(axis=1)
        n_labelled = np.full(b, n)
    return Batch(
        inputs=reference.inputs[take],
        confidence=probs.max(axis=2),
        predictions=preds,
        ood=reference.ood[take] if reference.ood is not None else np.zeros((b, n)),
        phi_sum=phi_sum,
        n_correct=n_correct,
        n_labelled=n_labelled,
    )


def calibrate(
    reference: Reference,
    *,
    window: int,
    false_alarm_windows: float = 1000,
    n_resamples: int | None = None,
    seed: int = 0,
    detectors: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    correction: Correction = "bh",
    n_random_features: int = 256,
) -> Calibration:
    """Fit each active detector's threshold for windows of ``window`` rows so that a window of unshifted
    traffic alarms with probability at most ``1 / false_alarm_windows`` (module docstring)."""
    started = time.perf_counter()
    if window < SMALLEST_WINDOW:
        raise UsageError(f"'window' must be >= {SMALLEST_WINDOW} rows. Got {window}.")
    if reference.n < REFERENCE_WINDOWS * window:
        raise UsageError(
            f"A reference of {reference.n} rows is too small for windows of {window}: it needs at least "
            f"{REFERENCE_WINDOWS * window} (a comparison and a calibration half). Use a smaller window or "
            "a larger gating set."
        )
    if correction not in ("bh", "holm"):
        raise UsageError(f"'correction' must be 'bh' or 'holm'. Got {correction!r}.")
    b = DEFAULT_RESAMPLES if n_resamples is None else int(n_resamples)
    if b < 100:
        raise UsageError(f"'n_resamples' must be >= 100. Got {n_resamples}.")
    active = active_detectors(reference, detectors)
    alphas = split_budget(active, false_alarm_windows, weights)
    cmp_rows, cal_rows = split_halves(reference.n, window, seed)
    bandwidth = None
    if reference.embeddings is not None and "embeddings" in alphas:
        bandwidth = median_heuristic(reference.embeddings[cmp_rows], seed=seed)
    base = fit_baseline(
        reference,
        cmp_rows,
        window=window,
        bandwidth=bandwidth,
        n_random_features=n_random_features,
        seed=seed,
        correction=correction,
    )
    phi = None
    if base.features is not None and reference.embeddings is not None:
        phi = base.features.transform(reference.embeddings[cal_rows])
    rng = np.random.default_rng([seed, 3])
    resampled = [d for d in alphas if DETECTORS.get(d).threshold != "exact"]
    null: dict[str, list[np.ndarray]] = {d: [] for d in resampled}
    for start in range(0, b, _CHUNK):
        idx = rng.integers(0, cal_rows.size, size=(min(_CHUNK, b - start), window))
        batch = _resampled_batch(reference, cal_rows, idx, phi, "accuracy" in alphas)
        for name, values in statistics(base, batch, resampled).items():
            null[name].append(values)
    thresholds: dict[str, float] = {}
    tails: dict[str, str] = {}
    medians: dict[str, float] = {}
    for name, alpha in alphas.items():
        kind = DETECTORS.get(name).threshold
        if kind == "exact":
            thresholds[name], tails[name], medians[name] = float(neg_log10(alpha)), "parametric", float("nan")
            continue
        values = np.concatenate(null[name])
        thresholds[name], tails[name] = tail_threshold(values, alpha)
        if kind == "floored":
            thresholds[name] = max(thresholds[name], float(neg_log10(alpha)))
        medians[name] = float(np.median(values))
    return Calibration(
        window=window,
        false_alarm_windows=float(false_alarm_windows),
        thresholds=thresholds,
        alphas=alphas,
        tails=tails,
        null_median={k: v for k, v in medians.items() if np.isfinite(v)},
        n_resamples=b,
        seed=seed,
        correction=correction,
        bandwidth=bandwidth,
        n_random_features=n_random_features,
        reference_digest=reference.digest(),
        seconds=time.perf_counter() - started,
    )


def baseline_for(reference: Reference, calibration: Calibration) -> Baseline:
    """The comparison half ``calibration`` was fitted against (same split, bandwidth and features)."""
    if reference.digest() != calibration.reference_digest:
        raise DataError(
            "This calibration was fitted on a different reference (digest mismatch). "
            "Recompute it with calibrate(reference, window=...) for this release."
        )
    cmp_rows, _ = split_halves(reference.n, calibration.window, calibration.seed)
    return fit_baseline(
        reference,
        cmp_rows,
        window=calibration.window,
        bandwidth=calibration.bandwidth,
        n_random_features=calibration.n_random_features,
        seed=calibration.seed,
        correction=calibration.correction,
    )


# --- one live window ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorResult:
    """One detector on one window: its statistic, the calibrated threshold, and why (details)."""

    name: str
    statistic: float
    threshold: float
    alarm: bool
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def explain(self) -> str:
        """One line saying what moved, from the details (for incidents, the dashboard and the CLI); empty
        when the details lack what the line needs. Never raises: the guard writes incidents with it."""
        try:
            return self._explain()
        except (KeyError, TypeError, ValueError, IndexError):
            return ""

    def _explain(self) -> str:
        return DETECTORS.get(self.name).explain(self.details) if self.name in DETECTORS else ""


@dataclass(frozen=True, eq=False)
class Window:
    """The rows of one live window. ``labels`` and ``shadow_predictions`` use −1 for rows without one."""

    inputs: np.ndarray  # (n, k) input summaries
    confidence: np.ndarray  # (n,)
    predictions: np.ndarray  # (n,) int
    ood: np.ndarray  # (n,)
    embeddings: np.ndarray | None = None  # (n, d), only when every row carried features
    labels: np.ndarray | None = None
    shadow_predictions: np.ndarray | None = None


def evaluate(base: Baseline, calibration: Calibration, window: Window) -> tuple[DetectorResult, ...]:
    """Every calibrated detector that applies to ``window``, with its details."""
    phi_sum = None
    if window.embeddings is not None and base.features is not None:
        phi_sum = base.features.transform(window.embeddings).sum(axis=0)[None]
    n_correct = n_labelled = n_disagree = n_shadow = None
    if window.labels is not None:
        has = window.labels >= 0
        if has.sum() >= MIN_ROWS:
            n_labelled = np.array([int(has.sum())])
            n_correct = np.array([int((window.predictions[has] == window.labels[has]).sum())])
    if window.shadow_predictions is not None:
        has = window.shadow_predictions >= 0
        if has.sum() >= MIN_ROWS:
            n_shadow = np.array([int(has.sum())])
            n_disagree = np.array([int((window.predictions[has] != window.shadow_predictions[has]).sum())])
    batch = Batch(
        inputs=window.inputs[None],
        confidence=window.confidence[None],
        predictions=window.predictions[None],
        ood=window.ood[None],
        phi_sum=phi_sum,
        n_correct=n_correct,
        n_labelled=n_labelled,
        n_disagree=n_disagree,
        n_shadow=n_shadow,
    )
    # the features' KS statistics serve the statistic and its details: computed once
    feature_ks = features_pvalues(base, batch.inputs) if "features" in calibration.thresholds else None
    stats = statistics(base, batch, tuple(calibration.thresholds), feature_ks)
    results = []
    for name, threshold in calibration.thresholds.items():
        if name not in stats:
            continue
        value = float(stats[name][0])
        details = DETECTORS.get(name).details(base, batch, feature_ks)
        results.append(DetectorResult(name, value, float(threshold), bool(value > threshold), details))
    return tuple(results)


def feature_details(
    base: Baseline, inputs: np.ndarray, ks: tuple[np.ndarray, np.ndarray], top: int = 3
) -> dict[str, Any]:
    """Per-feature KS statistic, p-value, adjusted p-value and PSI of one window (n, k), most shifted
    first, from the window's :func:`features_pvalues` ``ks``."""
    d, nlp = ks
    p = 10.0 ** -nlp[0]
    adjusted = holm(p) if base.correction == "holm" else benjamini_hochberg(p)
    rows: list[dict[str, Any]] = []
    for j, name in enumerate(base.feature_names):
        share = bin_shares(inputs[:, j], base.psi_edges[j])
        rows.append(
            {
                "name": name,
                "ks": float(d[0, j]),
                "p_value": float(p[j]),
                "p_adjusted": float(adjusted[j]),
                "psi": float(psi(base.psi_shares[j], share)),
            }
        )
    rows.sort(key=lambda r: (r["p_adjusted"], -r["psi"]))
    return {
        "features": rows,
        "most_shifted": [r["name"] for r in rows[:top] if r["p_adjusted"] < 0.05],
        "correction": "holm" if base.correction == "holm" else "benjamini-hochberg",
    }


# --- the detectors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detector:
    """One drift detector, all of it in one place.

    ``supported``: whether a reference carries what the detector compares with (embeddings, labels, an
    agreement). ``statistic``: its value on each window of a batch (B,), larger = more drift, or None
    where the windows lack the data. ``details``: what it saw in a batch of one window (plain JSON).
    ``explain``: one line from those details (KeyError and the like when they lack what it needs; the
    caller turns that into no line). Both ``statistic`` and ``details`` receive the batch's
    per-feature KS (:func:`features_pvalues`) when it was computed, or None. ``threshold``: how
    :func:`calibrate` fits the alarm level: ``resampled``, the 1 − alpha quantile over resampled
    reference windows; ``floored``, that but at least −log10 alpha (a predictive p-value, valid on its
    own, whose resampled null degenerates on a near-perfect reference); ``exact``, −log10 alpha (no
    per-row reference data to resample). The statistic and the reference's summary it reads are fitted
    once in :func:`fit_baseline`.
    """

    supported: Callable[[Reference], bool]
    statistic: Callable[[Baseline, Batch, FeatureKS | None], np.ndarray | None]
    details: Callable[[Baseline, Batch, FeatureKS | None], dict[str, Any]]
    explain: Callable[[dict[str, Any]], str]
    threshold: Literal["resampled", "floored", "exact"] = "resampled"


def _always(reference: Reference) -> bool:
    return True


def _has_class_outputs(reference: Reference) -> bool:
    return reference.probs is not None


def _window_rows(batch: Batch) -> int:
    return int(batch.confidence.shape[1])


def _features_statistic(base: Baseline, batch: Batch, ks: FeatureKS | None) -> np.ndarray:
    _, nlp = ks if ks is not None else features_pvalues(base, batch.inputs)
    return neg_log10(min_adjusted_p(10.0**-nlp, base.correction))


def _features_details(base: Baseline, batch: Batch, ks: FeatureKS | None) -> dict[str, Any]:
    return feature_details(
        base, batch.inputs[0], ks if ks is not None else features_pvalues(base, batch.inputs)
    )


def _features_line(d: dict[str, Any]) -> str:
    moved = [r for r in d["features"] if r["name"] in d["most_shifted"]]
    return "most shifted: " + (
        ", ".join(f"{r['name']} (KS {r['ks']:.3f}, PSI {r['psi']:.3f})" for r in moved) or "none"
    )


def _embeddings_statistic(base: Baseline, batch: Batch, ks: FeatureKS | None) -> np.ndarray | None:
    if batch.phi_sum is None or base.phi_sum is None:
        return None
    return mmd2_unbiased_from_sums(batch.phi_sum, _window_rows(batch), base.phi_sum, base.m)


def _embeddings_details(base: Baseline, batch: Batch, ks: FeatureKS | None) -> dict[str, Any]:
    value = _embeddings_statistic(base, batch, ks)
    return {
        "mmd2": None if value is None else float(value[0]),
        "bandwidth": base.bandwidth,
        "estimator": "unbiased MMD², Gaussian kernel, random Fourier features",
    }


def _embeddings_line(d: dict[str, Any]) -> str:
    return "" if d.get("mmd2") is None else f"MMD² {d['mmd2']:.4g}"


def _predictions_statistic(base: Baseline, batch: Batch, ks: FeatureKS | None) -> np.ndarray:
    return _chi2_neg_log10_p(base, batch.predictions)


def _predictions_details(base: Baseline, batch: Batch, ks: FeatureKS | None) -> dict[str, Any]:
    return {
        "counts": np.bincount(batch.predictions[0], minlength=base.n_classes).tolist(),
        "expected_share": base.class_share.tolist(),
        "bins": int(base.bin_share.size),
        "test": "chi-square goodness of fit (rare classes pooled)",
    }


def _predictions_line(d: dict[str, Any]) -> str:
    share = np.asarray(d["counts"]) / sum(d["counts"])
    top = int(np.argmax(np.abs(share - np.asarray(d["expected_share"]))))
    return f"class {top} predicted {share[top]:.1%}, reference {d['expected_share'][top]:.1%}"


def _confidence_statistic(base: Baseline, batch: Batch, ks: FeatureKS | None) -> np.ndarray:
    return ks_neg_log10_p(ks_statistic(base.conf_sorted, batch.confidence), _window_rows(batch), base.m)


def _confidence_details(base: Baseline, batch: Batch, ks: FeatureKS | None) -> dict[str, Any]:
    return {
        "ks": float(ks_statistic(base.conf_sorted, batch.confidence)[0]),
        "mean": float(batch.confidence.mean()),
        "reference_mean": base.mean_confidence,
        "test": "two-sample KS",
    }


def _confidence_line(d: dict[str, Any]) -> str:
    return f"mean confidence {d['mean']:.1%}, reference {d['reference_mean']:.1%}"


def _ood_rate_statistic(base: Baseline, batch: Batch, ks: FeatureKS | None) -> np.ndarray:
    k = (batch.ood > base.ood_threshold).sum(axis=1)
    return neg_log10(bdtrc(k - 1, _window_rows(batch), base.ood_rate))  # P(X >= k)


def _ood_rate_details(base: Baseline, batch: Batch, ks: FeatureKS | None) -> dict[str, Any]:
    k = int((batch.ood[0] > base.ood_threshold).sum())
    return {
        "rate": k / _window_rows(batch),
        "reference_rate": base.ood_rate,
        "score_threshold": base.ood_threshold,
    }


def _ood_rate_line(d: dict[str, Any]) -> str:
    return f"OOD rate {d['rate']:.1%}, reference {d['reference_rate']:.1%}"


def _accuracy_statistic(base: Baseline, batch: Batch, ks: FeatureKS | None) -> np.ndarray | None:
    if batch.n_correct is None or batch.n_labelled is None or base.accuracy is None:
        return None
    a, b = base.accuracy
    # beta-binomial predictive P(X <= k): carries the reference accuracy's own sampling uncertainty
    return neg_log10(betabinom.cdf(batch.n_correct, batch.n_labelled, a, b))


def _rate_details(name: str, hits: int, m: int, reference: float | None, rows: str) -> dict[str, Any]:
    low, high = wilson_interval(hits, m)
    return {name: hits / m, "ci_low": low, "ci_high": high, rows: m, f"reference_{name}": reference}


def _accuracy_details(base: Baseline, batch: Batch, ks: FeatureKS | None) -> dict[str, Any]:
    assert batch.n_correct is not None and batch.n_labelled is not None  # its statistic applied
    a, b = base.accuracy if base.accuracy is not None else (float("nan"), 1.0)
    return _rate_details(
        "accuracy", int(batch.n_correct[0]), int(batch.n_labelled[0]), a / (a + b), "n_labelled"
    )


def _agreement_statistic(base: Baseline, batch: Batch, ks: FeatureKS | None) -> np.ndarray | None:
    if batch.n_disagree is None or batch.n_shadow is None or base.agreement is None:
        return None
    a, b = _agreement_prior(base)
    return neg_log10(betabinom.sf(batch.n_disagree - 1, batch.n_shadow, a, b))


def _agreement_details(base: Baseline, batch: Batch, ks: FeatureKS | None) -> dict[str, Any]:
    assert batch.n_disagree is not None and batch.n_shadow is not None  # its statistic applied
    m = int(batch.n_shadow[0])
    return _rate_details("agreement", m - int(batch.n_disagree[0]), m, base.agreement, "n_shadow")


def _rate_line(name: str, rows: str, d: dict[str, Any]) -> str:
    reference = d.get(f"reference_{name}")
    against = "" if reference is None else f", reference {reference:.1%}"
    return f"{name} {d[name]:.1%} [{d['ci_low']:.1%}, {d['ci_high']:.1%}] on {d[rows]} examples{against}"


for _name, _detector in (
    ("features", Detector(_always, _features_statistic, _features_details, _features_line)),
    (
        "embeddings",
        Detector(
            lambda r: r.embeddings is not None, _embeddings_statistic, _embeddings_details, _embeddings_line
        ),
    ),
    (
        "predictions",
        Detector(_has_class_outputs, _predictions_statistic, _predictions_details, _predictions_line),
    ),
    (
        "confidence",
        Detector(_has_class_outputs, _confidence_statistic, _confidence_details, _confidence_line),
    ),
    ("ood_rate", Detector(_has_class_outputs, _ood_rate_statistic, _ood_rate_details, _ood_rate_line)),
    (
        "accuracy",
        Detector(
            lambda r: r.labels is not None,
            _accuracy_statistic,
            _accuracy_details,
            functools.partial(_rate_line, "accuracy", "n_labelled"),
            threshold="floored",
        ),
    ),
    (
        "agreement",
        Detector(
            lambda r: r.agreement is not None,
            _agreement_statistic,
            _agreement_details,
            functools.partial(_rate_line, "agreement", "n_shadow"),
            threshold="exact",
        ),
    ),
):
    DETECTORS.add(_name, _detector)

"""Calibration metrics and temperature scaling: pure functions of ``labels`` (N,) and ``probs`` (N, C).

All calibration errors here are top-label: each example contributes its top-1 confidence
``max_c p_c`` and whether that prediction is right.

Equal-width binning follows torchmetrics exactly: edges ``linspace(0, 1, n_bins + 1)``, bin k holds
``edge_k <= confidence < edge_{k+1}`` (a confidence on an edge goes to the bin above it), and a
confidence of exactly 1.0 falls past the last edge into a bin of its own. The assignment is made in
float64; torchmetrics casts confidences to float32 first, so a confidence within ~1e-7 of an edge can
land in the neighbouring bin there.

With ``d_i = correct_i − confidence_i``, the L1 error is ``ECE = (1/N) Σ_bins |Σ_{i in bin} d_i|``
(= Σ_bins (n_bin/N)·|accuracy_bin − confidence_bin|), and MCE is the largest
``|accuracy_bin − confidence_bin|`` over non-empty bins. The ``*_replicates`` factories compute the
same sums for a whole block of bootstrap resamples with one ``bincount``.

These binned plug-in errors are biased upwards at finite N (each bin's |gap| is inflated by its own
noise), most of all for a well-calibrated model, whose true error is 0 and whose plug-in error never is.
:func:`ece_debiased` removes that bias on the squared (L2) scale, where an unbiased estimator exists
(Kumar, Liang & Ma 2019), and :func:`consistency_test` tests perfect calibration (Bröcker & Smith 2007).
The MCE, a max over bins, gets a simultaneous interval (:func:`mce_interval`). docs/statistics.md says
why, with the coverage figures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import optimize
from scipy.special import logsumexp

from assay.errors import UsageError
from assay.outputs import softmax
from assay.stats import MonteCarloTest, clopper_pearson_interval, consistency_resampling

N_BINS = 15

Replicates = Callable[[np.ndarray], np.ndarray]

# What every binned plug-in calibration error's measurement says beside its number (the report shows it).
PLUG_IN_NOTE = (
    "binned plug-in estimate: biased upwards at finite n, most for a well-calibrated model, and so is its "
    "percentile interval (it can exclude a calibrated model's 0); ece_debiased removes the bias and its "
    "interval covers a calibrated model"
)


def top_label(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per example: the top-1 confidence and 1.0/0.0 for whether the top-1 prediction is right."""
    preds = probs.argmax(axis=1)
    confidence = probs[np.arange(labels.shape[0]), preds]
    return confidence, (preds == labels).astype(np.float64)


def equal_width_bins(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin index 0..n_bins of each confidence (n_bins only for confidence >= 1.0, as in torchmetrics)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges, confidence, side="right") - 1


def _binned_sums(bins: np.ndarray, n_slots: int, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per row of ``bins`` (b, N): the count in each of ``n_slots`` bins, then the sum there of each of
    ``values`` (b, N). ``bincount`` adds in index order, so a row's sums do not depend on the block."""
    rows = bins.shape[0]
    keys = (bins + n_slots * np.arange(rows)[:, None]).ravel()
    cells = rows * n_slots
    counts = np.bincount(keys, minlength=cells).reshape(rows, n_slots)
    sums = [np.bincount(keys, weights=v.ravel(), minlength=cells).reshape(rows, n_slots) for v in values]
    return counts, *sums


def _l1(sums: np.ndarray, n: int) -> np.ndarray:
    return np.abs(sums).sum(axis=-1) / n


def _max(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    gaps = np.divide(np.abs(sums), counts, out=np.zeros_like(sums), where=counts > 0)
    return gaps.max(axis=-1)


def ece_replicates(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> Replicates:
    """Index rows (b, N) -> the equal-width L1 ECE of each resample (b,)."""
    confidence, right = top_label(labels, probs)
    bins, gap = equal_width_bins(confidence, n_bins), right - confidence

    def replicate(rows: np.ndarray) -> np.ndarray:
        _, sums = _binned_sums(bins[rows], n_bins + 1, gap[rows])
        return _l1(sums, rows.shape[1])

    return replicate


def mce_replicates(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> Replicates:
    """Index rows (b, N) -> the equal-width max-norm calibration error of each resample (b,)."""
    confidence, right = top_label(labels, probs)
    bins, gap = equal_width_bins(confidence, n_bins), right - confidence

    def replicate(rows: np.ndarray) -> np.ndarray:
        counts, sums = _binned_sums(bins[rows], n_bins + 1, gap[rows])
        return _max(sums, counts)

    return replicate


def _whole(replicates: Replicates, n: int) -> float:
    return float(replicates(np.arange(n)[None, :])[0])


def ece(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error: top-label, ``n_bins`` equal-width bins, L1 (Guo et al. 2017).

    Equals torchmetrics ``multiclass_calibration_error(norm="l1", n_bins=n_bins)``.
    """
    return _whole(ece_replicates(labels, probs, n_bins), labels.shape[0])


def mce(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> float:
    """Maximum calibration error: top-label, ``n_bins`` equal-width bins, max norm over non-empty bins.

    Equals torchmetrics ``multiclass_calibration_error(norm="max", n_bins=n_bins)``.
    """
    return _whole(mce_replicates(labels, probs, n_bins), labels.shape[0])


def _squared_errors(
    counts: np.ndarray, sums: np.ndarray, squares: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The debiased and the plug-in squared L2 calibration error of each row of per-bin gap moments.

    In bin b: ``n_b`` examples, gap sum ``S_b`` and sum of squared gaps ``Q_b``, so the mean gap is
    ``d̄_b = S_b/n_b`` and the unbiased sample variance ``s²_b = (Q_b − S_b²/n_b)/(n_b − 1)``.
    Plug-in: ``Σ_b (n_b/N)·d̄_b²``. Since ``E[d̄_b²] = μ_b² + σ_b²/n_b`` and ``E[s²_b] = σ_b²``, the
    debiased ``Σ_b (n_b/N)·(d̄_b² − s²_b/n_b)`` over bins with ``n_b >= 2`` is unbiased for
    ``Σ_b P(b)·μ_b²`` given the counts (a bin with one example has no variance estimate and is left out:
    its expected share of the sum is below 1/N of one squared gap). Kumar et al. (2019) subtract the
    label's variance ``ȳ(1 − ȳ)/(n_b − 1)`` alone; the gap's also counts the spread of the confidences in
    the bin, which makes the estimator exactly unbiased; the two agree when a bin's confidences are equal.
    """
    filled = counts >= 2
    safe = np.where(filled, counts, 2)  # any count >= 2 where the bin is left out anyway
    spread = np.where(filled, (squares - sums**2 / safe) / (safe - 1), 0.0)
    mean_square = sums**2 / np.maximum(counts, 1)  # n_b·d̄_b², 0 in an empty bin
    debiased = (np.where(filled, mean_square, 0.0) - spread).sum(axis=-1) / n
    return debiased, mean_square.sum(axis=-1) / n


def _binned_squared_errors(bins: np.ndarray, gap: np.ndarray, n_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``bins``/``gap`` (b, N): the debiased and the plug-in squared L2 error (b,), (b,)."""
    counts, sums, squares = _binned_sums(bins, n_slots, gap, gap**2)
    return _squared_errors(counts, sums, squares, gap.shape[1])


def _squared_error_replicates(
    labels: np.ndarray, probs: np.ndarray, n_bins: int
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Index rows (b, N) -> the debiased and plug-in squared L2 errors of each resample (b,), (b,)."""
    confidence, right = top_label(labels, probs)
    bins, gap = equal_width_bins(confidence, n_bins), right - confidence
    return lambda rows: _binned_squared_errors(bins[rows], gap[rows], n_bins + 1)


def _root(squared: np.ndarray) -> np.ndarray:
    """The error on the probability scale: a negative squared estimate (noise around 0) reads as 0."""
    return np.sqrt(np.maximum(squared, 0.0))


def ece_debiased(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> float:
    """Debiased L2 calibration error: top-label, ``n_bins`` equal-width bins (the bins of :func:`ece`).

    ``sqrt(max(0, Σ_b (n_b/N)·(d̄_b² − s²_b/n_b)))``, the debiased plug-in of Kumar, Liang & Ma (2019),
    "Verified uncertainty calibration" (see :func:`_squared_errors`). Its square is unbiased for the
    binned population value ``Σ_b P(b)·(accuracy_b − confidence_b)²``, which is 0 for a calibrated
    model and, by Jensen, at least the square of the population's binned L1 ECE.
    """
    debiased, _ = _squared_error_replicates(labels, probs, n_bins)(np.arange(labels.shape[0])[None, :])
    return float(_root(debiased)[0])


def ece_debiased_replicates(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> Replicates:
    """Index rows (b, N) -> bootstrap replicates of :func:`ece_debiased`, recentred on the estimate (b,).

    A resample is drawn from the sample itself, whose squared error is the plug-in value; the debiased
    estimator is unbiased for that, so its resamples centre on the plug-in, above the estimate by
    ``bias = plug-in − debiased`` of the full sample. Each replicate is ``root(debiased* − bias)`` on the
    squared scale: their spread is the estimator's, their centre the estimate, and their percentile
    interval (and any paired delta or gate bound taken from them) is no longer pushed upwards by the bias.
    """
    squared = _squared_error_replicates(labels, probs, n_bins)
    debiased, plug_in = squared(np.arange(labels.shape[0])[None, :])
    bias = float(plug_in[0] - debiased[0])

    def replicate(rows: np.ndarray) -> np.ndarray:
        return _root(squared(rows)[0] - bias)

    return replicate


def plug_in_l2(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> float:
    """The plug-in L2 calibration error ``sqrt(Σ_b (n_b/N)·d̄_b²)`` that :func:`ece_debiased` debiases."""
    _, plug_in = _squared_error_replicates(labels, probs, n_bins)(np.arange(labels.shape[0])[None, :])
    return float(np.sqrt(plug_in[0]))


def consistency_test(
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    n_resamples: int,
    seed: int | Sequence[int],
    n_bins: int = N_BINS,
) -> MonteCarloTest:
    """Test of perfect top-label calibration by consistency resampling (Bröcker & Smith 2007).

    H0: ``P(top-1 right | confidence) = confidence``. Under H0 each example's correctness is a Bernoulli
    draw with its confidence; :func:`assay.stats.consistency_resampling` draws ``n_resamples`` sets of
    them (the confidences, hence the bins, stay as they are) and recomputes :func:`ece_debiased`. The
    statistic on the real outcomes goes through the same code, so an equal resample ties exactly.
    """
    confidence, right = top_label(labels, probs)
    bins = equal_width_bins(confidence, n_bins)

    def statistic(outcomes: np.ndarray) -> np.ndarray:
        debiased, _ = _binned_squared_errors(
            np.broadcast_to(bins, outcomes.shape), outcomes - confidence, n_bins + 1
        )
        return _root(debiased)

    observed = float(statistic(right[None, :])[0])
    return consistency_resampling(statistic, confidence, observed, n_resamples=n_resamples, seed=seed)


def mce_interval(
    labels: np.ndarray, probs: np.ndarray, confidence: float = 0.95, n_bins: int = N_BINS
) -> tuple[float, float, dict[str, Any]]:
    """A simultaneous interval for :func:`mce`, the largest |accuracy − confidence| over non-empty bins.

    A max over bins is biased upwards (the sparsest bin's noise wins) and the bootstrap does not repair
    it: resamples are noisier still, so a percentile interval sits above the estimate and misses a
    calibrated model's 0. Instead, with K non-empty bins and ``δ = (1 − confidence)/K``, each bin gets an
    interval for its accuracy (Clopper–Pearson at level δ/2) and for its mean confidence (Hoeffding at
    level δ/2: the confidences lie within the bin's edges), hence one for its |gap|. By the union bound
    all K hold at once with probability >= ``confidence``, and then so does the interval from the largest
    lower bound to the largest upper bound. It contains the estimate by construction. It covers the
    max over the bins this sample fills; a bin too rare to hold any example cannot be bounded.
    Returns (low, high, details).
    """
    conf, right = top_label(labels, probs)
    bins = equal_width_bins(conf, n_bins)
    slots = n_bins + 1
    counts = np.bincount(bins, minlength=slots)
    filled = counts > 0
    n = counts[filled]
    hits = np.bincount(bins, weights=right, minlength=slots)[filled]
    mean_conf = np.bincount(bins, weights=conf, minlength=slots)[filled] / n
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    lower_edge, upper_edge = np.r_[edges[:-1], 1.0][filled], np.r_[edges[1:], 1.0][filled]
    per_bin = (1 - confidence) / n.shape[0]
    acc_low, acc_high = clopper_pearson_interval(hits, n, 1 - per_bin / 2)
    half = (upper_edge - lower_edge) * np.sqrt(np.log(4 / per_bin) / (2 * n))
    conf_low, conf_high = np.maximum(mean_conf - half, lower_edge), np.minimum(mean_conf + half, upper_edge)
    gap_low, gap_high = acc_low - conf_high, acc_high - conf_low
    far = np.maximum(np.abs(gap_low), np.abs(gap_high))
    near = np.where((gap_low <= 0) & (gap_high >= 0), 0.0, np.minimum(np.abs(gap_low), np.abs(gap_high)))
    details = {
        "interval": "simultaneous over bins: Clopper-Pearson accuracy, Hoeffding confidence, Bonferroni",
        "bins": int(n.shape[0]),
        "smallest_bin": int(n.min()),
    }
    return float(near.max()), float(far.max()), details


def _equal_mass_slots(n: int, n_bins: int) -> np.ndarray:
    """Bin of each position 0..n-1 of a sorted sample: ``n_bins`` runs whose sizes differ by at most one
    (``numpy.array_split`` sizes; with n < n_bins the trailing bins are empty)."""
    sizes = np.full(n_bins, n // n_bins)
    sizes[: n % n_bins] += 1
    return np.repeat(np.arange(n_bins), sizes)


def adaptive_ece_replicates(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> Replicates:
    """Index rows (b, N) -> the equal-mass ECE of each resample (b,).

    Every resample is a multiset of the same examples, so sorting once and repeating each example by its
    resample count gives that resample's sorted order without sorting again.
    """
    confidence, right = top_label(labels, probs)
    order = np.lexsort((right, confidence))
    sorted_gap = (right - confidence)[order]
    n = labels.shape[0]
    slots = _equal_mass_slots(n, n_bins)

    def one(row: np.ndarray) -> float:
        copies = np.bincount(row, minlength=n)[order]
        sums = np.bincount(slots, weights=np.repeat(sorted_gap, copies), minlength=n_bins)
        return float(np.abs(sums).sum() / n)

    def replicate(rows: np.ndarray) -> np.ndarray:
        return np.array([one(row) for row in rows])

    return replicate


def adaptive_ece(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> float:
    """Adaptive (equal-mass) ECE: top-label, L1, ``n_bins`` bins holding equal numbers of examples.

    Examples are sorted by confidence (ties by correctness, so the result does not depend on the order
    of the examples) and cut into ``n_bins`` runs whose sizes differ by at most one;
    ``ACE = Σ_bins (n_bin/N)·|accuracy_bin − confidence_bin|`` (Nixon et al. 2019, with L1 norm).
    """
    return _whole(adaptive_ece_replicates(labels, probs, n_bins), labels.shape[0])


def reliability_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> dict[str, list]:
    """The data of a reliability diagram, binned exactly as :func:`ece` bins (JSON-ready lists).

    One entry per equal-width bin, plus a final [1.0, 1.0] bin when some confidence is exactly 1.0
    (torchmetrics' convention, see the module docstring). Empty bins have ``None`` confidence and
    accuracy. ``Σ count·|accuracy − confidence| / N`` over the bins is the ECE.
    """
    confidence, right = top_label(labels, probs)
    bins = equal_width_bins(confidence, n_bins)
    slots = n_bins + 1
    counts = np.bincount(bins, minlength=slots)
    conf_sum = np.bincount(bins, weights=confidence, minlength=slots)
    right_sum = np.bincount(bins, weights=right, minlength=slots)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    lower, upper = [*edges[:-1], 1.0], [*edges[1:], 1.0]
    shown = slots if counts[-1] > 0 else n_bins
    return {
        "bin_lower": [float(x) for x in lower[:shown]],
        "bin_upper": [float(x) for x in upper[:shown]],
        "confidence": [
            float(s / c) if c else None for s, c in zip(conf_sum[:shown], counts[:shown], strict=True)
        ],
        "accuracy": [
            float(s / c) if c else None for s, c in zip(right_sum[:shown], counts[:shown], strict=True)
        ],
        "count": [int(c) for c in counts[:shown]],
    }


# Search range for log T: temperatures between 0.01 and 100 cover sharpening and softening far beyond
# anything a trained network needs; a fit at a bound means the logits carry no usable signal.
_LOG_T_BOUNDS = (float(np.log(0.01)), float(np.log(100.0)))


def _check_logits(logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or not np.all(np.isfinite(z)):
        raise UsageError(f"'logits' must be a finite N x C array; got shape {z.shape}.")
    if labels is not None and labels.shape != (z.shape[0],):
        raise UsageError(f"'labels' must have shape ({z.shape[0]},) to match the logits; got {labels.shape}.")
    return z


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 minimising the mean NLL of ``softmax(logits / T)``.

    Fit on the validation split only, never on the test split it is then judged on. The NLL is
    minimised over log T in [log 0.01, log 100] by bounded Brent search: the NLL is convex in 1/T, hence
    unimodal in log T, so the search finds the global minimum.
    """
    z = _check_logits(logits, np.asarray(labels))
    z_true = z[np.arange(z.shape[0]), np.asarray(labels)]

    def mean_nll(log_t: float) -> float:
        inv_t = np.exp(-log_t)
        return float(np.mean(logsumexp(z * inv_t, axis=1) - z_true * inv_t))

    result = optimize.minimize_scalar(
        mean_nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6}
    )
    return float(np.exp(result.x))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities ``softmax(logits / T)``."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise UsageError(f"The temperature must be a positive finite number. Got {temperature}.")
    return softmax(_check_logits(logits) / temperature)

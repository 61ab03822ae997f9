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
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import optimize
from scipy.special import logsumexp

from assay.errors import UsageError
from assay.outputs import softmax

N_BINS = 15

Replicates = Callable[[np.ndarray], np.ndarray]


def top_label(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per example: the top-1 confidence and 1.0/0.0 for whether the top-1 prediction is right."""
    preds = probs.argmax(axis=1)
    confidence = probs[np.arange(labels.shape[0]), preds]
    return confidence, (preds == labels).astype(np.float64)


def equal_width_bins(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin index 0..n_bins of each confidence (n_bins only for confidence >= 1.0, as in torchmetrics)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges, confidence, side="right") - 1


def _binned_sums(bins: np.ndarray, gap: np.ndarray, n_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``bins``/``gap`` (b, N): the sum of gaps and the count in each of ``n_slots`` bins."""
    rows = bins.shape[0]
    keys = (bins + n_slots * np.arange(rows)[:, None]).ravel()
    sums = np.bincount(keys, weights=gap.ravel(), minlength=rows * n_slots).reshape(rows, n_slots)
    counts = np.bincount(keys, minlength=rows * n_slots).reshape(rows, n_slots)
    return sums, counts


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
        sums, _ = _binned_sums(bins[rows], gap[rows], n_bins + 1)
        return _l1(sums, rows.shape[1])

    return replicate


def mce_replicates(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> Replicates:
    """Index rows (b, N) -> the equal-width max-norm calibration error of each resample (b,)."""
    confidence, right = top_label(labels, probs)
    bins, gap = equal_width_bins(confidence, n_bins), right - confidence

    def replicate(rows: np.ndarray) -> np.ndarray:
        return _max(*_binned_sums(bins[rows], gap[rows], n_bins + 1))

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

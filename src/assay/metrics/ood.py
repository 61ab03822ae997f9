"""Out-of-distribution detection: scores from a classifier's outputs, and how well they separate.

Scores (higher = more in-distribution), all pure functions of arrays:

    msp          max softmax probability (Hendrycks & Gimpel 2017)
    max_logit    largest logit (Hendrycks et al. 2022)
    energy       ``T·logsumexp(logits / T)``, the negative free energy, T = 1 (Liu et al. 2020)
    mahalanobis  ``−min_k (f − μ_k)ᵀ Σ⁻¹ (f − μ_k)`` on penultimate features f, class means μ_k and one
                 shared covariance Σ fitted on in-distribution examples (Lee et al. 2018, without input
                 preprocessing or feature ensembles)

Detection metrics, with OOD as the positive class and ``−score`` as its detector:

    auroc           area under the ROC curve, ties counted one half (equals scikit-learn's roc_auc_score)
    aupr            average precision, OOD positive, step-wise (equals average_precision_score)
    fpr_at_95_tpr   share of OOD examples accepted as in-distribution at the threshold that accepts 95%
                    of in-distribution examples (the convention of Liu et al. 2020: ID is the TPR side)

Intervals are seeded percentile bootstraps over the pooled ID + OOD examples. The sort happens once: a
resample only changes how many examples each tie group holds, one ``bincount`` (no sort per replicate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.catalogue import OOD_METRICS, OOD_SCORES, OOD_SHIFTS, ood_metric
from assay.errors import UsageError
from assay.measurement import Measurement
from assay.stats import iter_bootstrap_indices

FAMILY = "ood"
SCORES = OOD_SCORES  # the names and directions are the catalogue's (assay.catalogue)
TPR_LEVEL = 0.95


def _logits(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise UsageError(f"OOD scores need logits of shape (N, C); got shape {z.shape}.")
    return z


def _logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=1, keepdims=True)
    return np.asarray(top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))


def msp_score(logits: np.ndarray) -> np.ndarray:
    """Max softmax probability per example."""
    z = _logits(logits)
    return np.asarray(np.exp(z.max(axis=1) - _logsumexp(z)))


def max_logit_score(logits: np.ndarray) -> np.ndarray:
    """Largest logit per example."""
    return np.asarray(_logits(logits).max(axis=1))


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy ``T·logsumexp(logits / T)`` per example (higher = more in-distribution)."""
    if temperature <= 0:
        raise UsageError(f"'temperature' must be > 0. Got {temperature}.")
    return np.asarray(temperature * _logsumexp(_logits(logits) / temperature))


@dataclass(frozen=True)
class Mahalanobis:
    """Class means and the shared precision matrix of in-distribution features."""

    means: np.ndarray  # (K, D)
    precision: np.ndarray  # (D, D)

    def score(self, features: np.ndarray) -> np.ndarray:
        """``−min_k`` squared Mahalanobis distance to the class means (higher = more in-distribution)."""
        f = np.asarray(features, dtype=np.float64)
        fp = f @ self.precision
        mp = self.means @ self.precision
        d2 = (
            np.einsum("nd,nd->n", fp, f)[:, None]
            - 2.0 * fp @ self.means.T
            + np.einsum("kd,kd->k", mp, self.means)[None, :]
        )
        return np.asarray(-d2.min(axis=1))


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray, shrinkage: float = 1e-6) -> Mahalanobis:
    """Class means and the tied (pooled within-class) covariance of ``features``.

    Estimator: ``Σ = (1/N) Σ_i (f_i − μ_{y_i})(f_i − μ_{y_i})ᵀ`` plus ``shrinkage · mean(diag Σ) · I`` so
    that dead ReLU units (zero variance) do not make it singular; the precision is its pseudo-inverse.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or y.shape != (f.shape[0],):
        raise UsageError(f"Need features (N, D) and labels (N,); got {f.shape} and {y.shape}.")
    classes = np.unique(y)
    means = np.stack([f[y == k].mean(axis=0) for k in classes])
    centred = f - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / f.shape[0]
    cov += shrinkage * max(float(np.mean(np.diag(cov))), 1e-12) * np.eye(cov.shape[0])
    return Mahalanobis(means=means, precision=np.linalg.pinv(cov, hermitian=True))


# --- detection metrics on per-group counts (one each = the plain metric; bootstrap counts = a replicate) -


@dataclass(frozen=True)
class _Sorted:
    """ID and OOD scores pooled and cut into tie groups of equal score, in ascending OOD-ness (``−score``).

    ``cell`` maps each pooled example to its group, offset by ``groups`` for OOD examples: the counts of
    a (resampled) set of examples per group and side are then one ``bincount``.
    """

    cell: np.ndarray  # (n,) in [0, 2 * groups): group of each pooled example, + groups if OOD
    groups: int


def _pool(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(id_scores, dtype=np.float64).ravel()
    b = np.asarray(ood_scores, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise UsageError(f"Need in-distribution and OOD scores; got {a.size} and {b.size}.")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise UsageError("OOD scores must be finite.")
    return np.concatenate([a, b]), np.concatenate([np.zeros(a.size, bool), np.ones(b.size, bool)])


def _sort(scores: np.ndarray, is_ood: np.ndarray) -> _Sorted:
    oodness = -scores
    order = np.argsort(oodness, kind="stable")
    ranked = oodness[order]
    group_sorted = np.cumsum(np.r_[True, ranked[1:] != ranked[:-1]]) - 1
    group = np.empty_like(group_sorted)
    group[order] = group_sorted
    groups = int(group_sorted[-1]) + 1
    return _Sorted(cell=group + groups * is_ood.astype(np.int64), groups=groups)


def _counts(s: _Sorted, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per tie group: how many OOD (positive) and ID (negative) examples each row of ``rows`` (b, m)
    holds, as two (b, G) float arrays."""
    b, cells = rows.shape[0], 2 * s.groups
    keys = (s.cell[rows] + cells * np.arange(b)[:, None]).ravel()
    counts = np.bincount(keys, minlength=b * cells).reshape(b, 2, s.groups).astype(np.float64)
    return counts[:, 1], counts[:, 0]


def _auroc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    neg_below = np.cumsum(neg, axis=1) - neg
    total = pos.sum(axis=1) * neg.sum(axis=1)
    return np.asarray((pos * (neg_below + 0.5 * neg)).sum(axis=1) / total)


def _aupr(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    # Thresholds from the most OOD-like group down: precision after each group, weighted by its recall step.
    tp = np.cumsum(pos[:, ::-1], axis=1)
    fp = np.cumsum(neg[:, ::-1], axis=1)
    precision = tp / np.maximum(tp + fp, 1e-300)
    return np.asarray((pos[:, ::-1] * precision).sum(axis=1) / pos.sum(axis=1))


def _fpr_at_tpr(pos: np.ndarray, neg: np.ndarray, level: float = TPR_LEVEL) -> np.ndarray:
    # Accepting as ID everything up to a group (ascending OOD-ness): the first group where ID TPR >= level.
    tpr = np.cumsum(neg, axis=1) / neg.sum(axis=1, keepdims=True)
    first = np.argmax(tpr >= level - 1e-12, axis=1)
    fpr = np.cumsum(pos, axis=1) / pos.sum(axis=1, keepdims=True)
    return np.asarray(fpr[np.arange(fpr.shape[0]), first])


# Each detection metric of the catalogue's OOD_METRICS (which says its direction): function, estimator.
_METRICS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], str]] = {
    "auroc": (_auroc, "AUROC, OOD positive, score −s, ties count 1/2"),
    "aupr": (_aupr, "average precision (AUPR-Out), OOD positive, step-wise"),
    "fpr_at_95_tpr": (_fpr_at_tpr, "FPR on OOD at the threshold accepting 95% of in-distribution examples"),
}


def _plain(id_scores: np.ndarray, ood_scores: np.ndarray, metric: str) -> float:
    s = _sort(*_pool(id_scores, ood_scores))
    return float(_METRICS[metric][0](*_counts(s, np.arange(s.cell.size)[None, :]))[0])


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """AUROC of telling OOD from ID with ``−score`` (0.5 = chance, 1 = perfect)."""
    return _plain(id_scores, ood_scores, "auroc")


def aupr(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Average precision with OOD as the positive class and ``−score`` as its detector."""
    return _plain(id_scores, ood_scores, "aupr")


def fpr_at_95_tpr(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Share of OOD examples scored at or above the threshold that keeps 95% of ID examples."""
    return _plain(id_scores, ood_scores, "fpr_at_95_tpr")


METRIC_NAMES = tuple(OOD_METRICS)


def detection_replicates(
    id_scores: np.ndarray, ood_scores: np.ndarray, metric: str
) -> Callable[[np.ndarray], np.ndarray]:
    """Index rows (b, n) into the pooled ID + OOD examples (ID first) -> ``metric`` on each resample."""
    return _replicates(_sort(*_pool(id_scores, ood_scores)), metric)


def _replicates(s: _Sorted, metric: str) -> Callable[[np.ndarray], np.ndarray]:
    fn = _METRICS[metric][0]

    def replicate(rows: np.ndarray) -> np.ndarray:
        pos, neg = _counts(s, rows)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample with no OOD (or ID) is NaN
            return fn(pos, neg)

    return replicate


def detection_measurements(
    id_scores: np.ndarray,
    ood_scores: np.ndarray,
    *,
    score: str,
    ood_set: str,
    n_boot: int = 1000,
    seed: int = 0,
    details: dict[str, Any] | None = None,
) -> list[Measurement]:
    """AUROC, AUPR and FPR@95%TPR of ``score`` on (ID, ``ood_set``), each with a bootstrap interval.

    Named ``ood_<metric>[<ood_set>:<score>]``; ``details`` records the set, the score, both counts.
    """
    scores, is_ood = _pool(id_scores, ood_scores)
    s = _sort(scores, is_ood)
    n_id, n_ood = int((~is_ood).sum()), int(is_ood.sum())
    # One set of resamples and group counts serves the three metrics (the same rows bootstrap_ci would
    # draw for each with this seed).
    estimates = {
        metric: float(fn(*_counts(s, np.arange(scores.size)[None, :]))[0])
        for metric, (fn, _) in _METRICS.items()
    }
    replicates: dict[str, list[np.ndarray]] = {metric: [] for metric in _METRICS}
    for rows in iter_bootstrap_indices(scores.size, n_boot, seed):
        pos, neg = _counts(s, rows)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample with no OOD (or ID) is NaN
            for metric, (fn, _) in _METRICS.items():
                replicates[metric].append(fn(pos, neg))
    out = []
    for metric, (_fn, estimator) in _METRICS.items():
        drawn = np.concatenate(replicates[metric])
        samples = drawn[np.isfinite(drawn)]
        low, high = np.quantile(samples, [0.025, 0.975]) if samples.size else (np.nan, np.nan)
        out.append(
            Measurement(
                name=ood_metric(metric, ood_set, score),
                family=FAMILY,
                value=estimates[metric],
                ci_low=float(low),
                ci_high=float(high),
                n=int(scores.size),
                higher_is_better=OOD_METRICS[metric],
                estimator=f"{estimator}; score {score}",
                details={
                    "ood_set": ood_set,
                    "score": score,
                    "n_in_distribution": n_id,
                    "n_ood": n_ood,
                    "interval": "percentile bootstrap over pooled ID + OOD examples",
                    "n_boot": n_boot,
                    "seed": seed,
                    **(details or {}),
                },
            )
        )
    return out


def scores_of(
    logits: np.ndarray, features: np.ndarray | None, mahalanobis: Mahalanobis | None
) -> dict[str, np.ndarray]:
    """Every score that these outputs allow (Mahalanobis needs features and a fit)."""
    out = {"msp": msp_score(logits), "max_logit": max_logit_score(logits), "energy": energy_score(logits)}
    if features is not None and mahalanobis is not None:
        out["mahalanobis"] = mahalanobis.score(features)
    return out


def ood_measurements(
    id_logits: np.ndarray,
    ood_logits: np.ndarray,
    *,
    ood_set: str,
    id_features: np.ndarray | None = None,
    ood_features: np.ndarray | None = None,
    mahalanobis: Mahalanobis | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    details: dict[str, Any] | None = None,
) -> list[Measurement]:
    """Every score (:data:`SCORES`) by every detection metric on one OOD set; Mahalanobis is ``skipped``
    with the reason when there are no features or no fit."""
    id_scores = scores_of(id_logits, id_features, mahalanobis)
    ood_scores = scores_of(ood_logits, ood_features, mahalanobis)
    out: list[Measurement] = []
    for score in SCORES:
        if score not in id_scores or score not in ood_scores:
            reason = "needs penultimate features of both sets and a fit on in-distribution features"
            out.extend(
                Measurement.skipped(ood_metric(metric, ood_set, score), FAMILY, reason) for metric in _METRICS
            )
            continue
        out.extend(
            detection_measurements(
                id_scores[score],
                ood_scores[score],
                score=score,
                ood_set=ood_set,
                n_boot=n_boot,
                seed=seed,
                details=details,
            )
        )
    return out


# --- OOD sets ---------------------------------------------------------------------------------------

SHIFTS = OOD_SHIFTS


def synthetic_shift(x: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """A far-OOD copy of images ``x`` (N, C, H, W) in [0, 1]: a new array, ``x`` is untouched.

    ``noise``: uniform noise on [0, 1] of the same shape; ``inverted``: ``1 − x``; ``rotated``: each image
    turned 90 degrees (for square images; upright-only datasets such as Fashion-MNIST never show it).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise UsageError(f"Synthetic shifts need images (N, C, H, W); got shape {x.shape}.")
    if kind == "noise":
        return np.random.default_rng(seed).random(x.shape, dtype=np.float32)
    if kind == "inverted":
        return np.asarray(1.0 - x, dtype=np.float32)
    if kind == "rotated":
        return np.ascontiguousarray(np.rot90(x, k=1, axes=(2, 3)))
    raise UsageError(f"Unknown synthetic shift '{kind}'. Known: {', '.join(SHIFTS)}.")


def digits_as_images(size: int = 28, limit: int | None = None, seed: int = 0) -> np.ndarray:
    """scikit-learn's bundled 8x8 digits (no download), scaled to [0, 1] and resized to ``size`` x
    ``size`` with bilinear interpolation: a real, near-OOD image set for 28x28 grayscale models."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32) / 16.0
    if limit is not None and limit < images.shape[0]:
        images = images[np.sort(np.random.default_rng(seed).choice(images.shape[0], limit, replace=False))]
    resized = zoom(images, (1, size / 8, size / 8), order=1)
    return np.clip(resized, 0.0, 1.0).astype(np.float32)[:, None]

"""Backdoor and poisoning detection on penultimate features of the training examples, class by class.

    spectral signatures    (Tran et al. 2018) centre the class's features, take the top right singular
                           vector; the score is the squared projection on it. Poisoned examples share a
                           direction the clean ones lack, so they score high. The top ``1.5·ε·n_c`` are
                           flagged (ε: the expected poisoned share, the paper's rule).
    robust whitening       the class's features whitened in their top ``components`` principal directions
                           with a covariance re-estimated without the currently flagged examples (the
                           robust-statistics step of SPECTRE, Hayase et al. 2021); the score is the
                           whitened squared norm, the top ``1.5·ε·n_c`` are flagged. Plain spectral
                           signatures miss a trigger whose direction is not the class's largest-variance
                           one; whitening puts every clean direction at unit variance first.
    activation clustering  (Chen et al. 2018) project the class's features on their top 10 principal
                           components, split them with 2-means; a cluster holding less than
                           ``max_share`` of the class is flagged as poisoned.

Both are pure functions of (features, labels) and return per-example scores and flags, which
:func:`backdoor_measurements` summarises per class with the suspicious example indices in ``details``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from assay.errors import UsageError
from assay.measurement import Measurement

FAMILY = "security"


@dataclass(frozen=True)
class Detection:
    scores: np.ndarray  # (N,) higher = more suspicious, comparable within a class
    flagged: np.ndarray  # (N,) bool


def _check(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    if f.ndim != 2 or y.shape != (f.shape[0],):
        raise UsageError(f"Need features (N, D) and labels (N,); got {f.shape} and {y.shape}.")
    return f, y


def _principal(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values (descending) and right singular vectors (rows) of ``centred`` (n, d).

    From the eigendecomposition of the d x d Gram matrix: the same directions as an SVD of the n x d
    matrix at a fraction of the cost for n >> d (tens of thousands of examples, ~100 features).
    """
    # Small dense algebra: BLAS threads only add synchronisation (and spin on a busy machine).
    with threadpool_limits(limits=1, user_api="blas"):
        eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(eigenvalues)[::-1]
    return np.sqrt(np.clip(eigenvalues[order], 0.0, None)), vectors[:, order].T


def spectral_signatures(features: np.ndarray, labels: np.ndarray, epsilon: float = 0.05) -> Detection:
    """Squared projection on the top singular vector of each class's centred features; flag 1.5·ε·n_c."""
    if not 0 < epsilon < 0.5:
        raise UsageError(f"'epsilon' (the expected poisoned share) must be in (0, 0.5). Got {epsilon}.")
    f, y = _check(features, labels)
    scores = np.zeros(y.size)
    flagged = np.zeros(y.size, dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        centred = f[idx] - f[idx].mean(axis=0)
        _, vt = _principal(centred)
        s = (centred @ vt[0]) ** 2
        scores[idx] = s
        k = min(idx.size, int(np.ceil(1.5 * epsilon * idx.size)))
        flagged[idx[np.argsort(-s, kind="stable")[:k]]] = True
    return Detection(scores=scores, flagged=flagged)


def robust_whitened(
    features: np.ndarray, labels: np.ndarray, epsilon: float = 0.05, *, components: int = 20, rounds: int = 3
) -> Detection:
    """Whitened squared norm in the top principal directions, the covariance re-fitted ``rounds`` times
    on the examples not flagged; flags the top 1.5·ε·n_c of each class."""
    if not 0 < epsilon < 0.5:
        raise UsageError(f"'epsilon' (the expected poisoned share) must be in (0, 0.5). Got {epsilon}.")
    f, y = _check(features, labels)
    scores = np.zeros(y.size)
    flagged = np.zeros(y.size, dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        fc = f[idx]
        quota = min(idx.size, int(np.ceil(1.5 * epsilon * idx.size)))
        clean = np.ones(idx.size, dtype=bool)
        s = np.zeros(idx.size)
        for _ in range(rounds + 1):
            centred = fc - fc[clean].mean(axis=0)
            sv, vt = _principal(centred[clean])
            k = min(components, int(np.sum(sv > 1e-9 * max(sv[0], 1e-300))))
            scale = sv[:k] / np.sqrt(clean.sum())
            z = centred @ vt[:k].T / scale
            s = np.einsum("nk,nk->n", z, z)
            clean = np.ones(idx.size, dtype=bool)
            clean[np.argsort(-s, kind="stable")[:quota]] = False
        scores[idx] = s
        flagged[idx[~clean]] = True
    return Detection(scores=scores, flagged=flagged)


def activation_clustering(
    features: np.ndarray, labels: np.ndarray, *, components: int = 10, max_share: float = 0.35, seed: int = 0
) -> Detection:
    """2-means on each class's top principal components; the smaller cluster is flagged if it holds less
    than ``max_share`` of the class. Score: distance to the larger cluster's centre over the distance
    between the two centres (comparable within a class)."""
    from sklearn.cluster import KMeans

    f, y = _check(features, labels)
    scores = np.zeros(y.size)
    flagged = np.zeros(y.size, dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if idx.size < 4:
            continue
        centred = f[idx] - f[idx].mean(axis=0)
        _, vt = _principal(centred)
        z = centred @ vt[: min(components, vt.shape[0])].T
        with threadpool_limits(limits=1):  # 2-means on a few thousand 10-d points: one thread is fastest
            km = KMeans(n_clusters=2, n_init=3, random_state=seed).fit(z)
        sizes = np.bincount(km.labels_, minlength=2)
        big = int(np.argmax(sizes))
        spread = max(float(np.linalg.norm(km.cluster_centers_[0] - km.cluster_centers_[1])), 1e-12)
        scores[idx] = np.linalg.norm(z - km.cluster_centers_[big], axis=1) / spread
        if sizes.min() / idx.size < max_share:
            flagged[idx[km.labels_ != big]] = True
    return Detection(scores=scores, flagged=flagged)


def backdoor_measurements(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    ids: np.ndarray | None = None,
    epsilon: float = 0.05,
    class_names: list[str] | None = None,
    max_listed: int = 50,
) -> list[Measurement]:
    """Per class and method: the share of training examples flagged as suspicious, the most suspicious
    example ids in ``details``. Activation clustering flags nothing in a clean class; spectral
    signatures and robust whitening always flag their 1.5·ε quota, so their share is a budget, not
    evidence: what they add is which examples to inspect first."""
    f, y = _check(features, labels)
    ids = np.arange(y.size).astype(str) if ids is None else np.asarray(ids).astype(str)
    out = []
    for method, detection in (
        ("spectral", spectral_signatures(f, y, epsilon)),
        ("robust_whitened", robust_whitened(f, y, epsilon)),
        ("activation_clustering", activation_clustering(f, y)),
    ):
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            name = class_names[int(c)] if class_names else str(c)
            flagged = idx[detection.flagged[idx]]
            order = flagged[np.argsort(-detection.scores[flagged], kind="stable")]
            details: dict[str, Any] = {
                "method": method,
                "class": name,
                "suspicious_ids": ids[order[:max_listed]].tolist(),
                "interval": "none: a detector's flags",
            }
            if method != "activation_clustering":
                details["epsilon"] = epsilon
            out.append(
                Measurement(
                    name=f"backdoor_flagged[{method}:{name}]",
                    family=FAMILY,
                    value=float(flagged.size / idx.size),
                    n=int(idx.size),
                    higher_is_better=False,
                    estimator=f"share of class-{name} training examples flagged ({method.replace('_', ' ')})",
                    details=details,
                )
            )
    return out

"""Label issues by confident learning (Northcutt, Jiang and Chuang, JAIR 2021) on out-of-fold probabilities.

- :func:`out_of_fold_probs`: stratified k-fold training of a quick model (64 whitened principal components,
  then L2-penalised multinomial logistic regression); each example's probabilities come from the model whose
  training folds did not hold it.
- :func:`confident_joint`: per-class thresholds t_j = mean predicted probability of class j over the examples
  labelled j; an example counts towards (given label, j*) where j* is its most probable class among those
  whose probability reaches their threshold. The joint is then calibrated: each row sums to its label's count.
- :func:`find_label_issues`: prune by noise rate: for each off-diagonal cell (i, j), the examples labelled i
  with the largest margin p_j - p_i, as many as the calibrated joint counts there.
- :func:`rank_by_self_confidence`: flagged examples, least likely label first.

The same method as cleanlab's ``find_label_issues(filter_by="prune_by_noise_rate")``; the tests compare them.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline

from assay.data.audit.findings import rate_finding
from assay.data.audit.registry import AuditContext, register
from assay.errors import DataError
from assay.measurement import Measurement


def out_of_fold_probs(
    x: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 3, seed: int = 0
) -> np.ndarray:
    """(N, n_classes) probabilities, each row from a model trained on the other folds."""
    x = x.reshape(x.shape[0], -1).astype(np.float32)
    counts = np.bincount(y, minlength=n_classes)
    if counts[counts > 0].min() < folds:
        raise DataError(
            f"Label issues need at least {folds} examples of every class present for {folds} folds; "
            f"the smallest class has {counts[counts > 0].min()}."
        )
    probs = np.zeros((len(y), n_classes))
    for fit_rows, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = make_pipeline(
            # Whitened components make the problem well conditioned (L-BFGS converges in a few dozen steps);
            # the L2 penalty keeps the low-variance components, now scaled up, from fitting noise.
            PCA(n_components=min(64, x.shape[1], len(fit_rows) - 1), whiten=True, random_state=seed),
            LogisticRegression(C=0.1, max_iter=500),
        )
        model.fit(x[fit_rows], y[fit_rows])
        probs[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    return probs


def class_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """t_j = mean of p_j over the examples labelled j (the expected self-confidence of class j)."""
    k = probs.shape[1]
    return np.array([probs[labels == j, j].mean() if (labels == j).any() else np.inf for j in range(k)])


def confident_joint(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(K, K) calibrated confident joint: rows the given label, columns the confident true label."""
    k = probs.shape[1]
    thresholds = class_thresholds(labels, probs)
    above = probs >= thresholds[None, :] - 1e-6
    confident = above.any(axis=1)
    masked = np.where(above, probs, -np.inf)
    true_label = masked.argmax(axis=1)
    joint = np.zeros((k, k))
    np.add.at(joint, (labels[confident], true_label[confident]), 1)
    # Calibrate: each row sums to the number of examples with that given label.
    label_counts = np.bincount(labels, minlength=k)
    row_sums = joint.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        calibrated = np.where(row_sums > 0, joint / row_sums * label_counts[:, None], 0.0)
    return calibrated


def find_label_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Boolean mask of likely label errors (prune by noise rate on the calibrated confident joint)."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise DataError(f"Probabilities of shape {probs.shape} do not match {labels.shape[0]} labels.")
    k = probs.shape[1]
    joint = confident_joint(labels, probs)
    prune = np.round(joint).astype(np.int64)
    np.fill_diagonal(prune, 0)
    issues = np.zeros(len(labels), dtype=bool)
    for i in range(k):
        rows = np.flatnonzero(labels == i)
        for j in range(k):
            if i == j or prune[i, j] == 0:
                continue
            margin = probs[rows, j] - probs[rows, i]
            take = rows[np.argsort(-margin, kind="stable")[: prune[i, j]]]
            issues[take] = True
    # Never more issues in a class than it has examples minus one.
    return issues


def rank_by_self_confidence(labels: np.ndarray, probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Indices of flagged examples, the lowest probability of the given label first."""
    flagged = np.flatnonzero(mask)
    return flagged[np.argsort(probs[flagged, labels[flagged]], kind="stable")]


@register("label_issues", "likely label errors: confident learning on out-of-fold probabilities")
def label_issues(ctx: AuditContext) -> list[Measurement]:
    if ctx.probs is None and not ctx.has_features:
        reason = "no numeric columns for the quick model (supply --label-probs)"
        return [Measurement.skipped("label_issues", "data", reason)]
    out = []
    k = len(ctx.data.class_names)
    for split_name in ("train", "val", "test") if ctx.probs is None else tuple(ctx.probs):
        split = ctx.data.splits.get(split_name)
        if split is None:
            continue
        if ctx.probs is not None:
            probs = np.asarray(ctx.probs[split_name], dtype=np.float64)
            source = "supplied probabilities"
        elif split_name == "train":
            probs = out_of_fold_probs(split.x, split.labels, k, ctx.config.label_folds, ctx.config.seed)
            source = (
                f"{ctx.config.label_folds}-fold out-of-fold whitened PCA-64 + logistic regression (C=0.1)"
            )
        else:
            continue  # by default the training split only: the quick model needs many examples
        mask = find_label_issues(split.labels, probs)
        ranked = rank_by_self_confidence(split.labels, probs, mask)
        names = ctx.data.class_names
        out.append(
            rate_finding(
                f"label_issues[{split_name}]",
                int(mask.sum()),
                split.n,
                f"share flagged by confident learning (prune by noise rate) on {source}",
                check="label_issues",
                examples=[
                    {
                        "id": str(split.ids[r]),
                        "label": names[int(split.labels[r])],
                        "suggested": names[int(probs[r].argmax())],
                        "label_probability": float(probs[r, split.labels[r]]),
                    }
                    for r in ranked[:12]
                ],
                flagged_ids=split.ids[ranked].tolist(),
                split=split_name,
                model_accuracy=float((probs.argmax(axis=1) == split.labels).mean()),
            )
        )
    return out

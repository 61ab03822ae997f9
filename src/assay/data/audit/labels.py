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
- :func:`model_reliability`: how much the model behind the probabilities learned (its out-of-fold accuracy
  with a Wilson interval against the majority-class rate) and whether that clears the bar below which its
  flags cannot be told apart from its own mistakes (the reasoning is in docs/data-audit.md).

The same method as cleanlab's ``find_label_issues(filter_by="prune_by_noise_rate")``; the tests compare them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline

from assay.data.audit.findings import rate_finding
from assay.data.audit.registry import AuditContext, register
from assay.errors import DataError
from assay.format import format_interval
from assay.measurement import Measurement
from assay.stats import wilson_interval


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


def model_reliability(
    labels: np.ndarray, probs: np.ndarray, min_lift: float, class_names: list[str]
) -> dict[str, Any]:
    """The out-of-fold accuracy of the model behind ``probs`` against the majority-class rate, and the bar.

    A model that learned nothing predicts the majority class and is right at the majority rate ``m``; its
    flags are the minority classes, not label errors. The lift ``(accuracy - m) / (1 - m)`` is the share of
    that model's disagreements with the labels the real one removes; the findings are reliable when the
    lift at the 95% Wilson lower bound of the accuracy reaches ``min_lift``. Returns the details a finding
    carries: the accuracy with its interval and n, the majority rate and class, the lifts, the accuracy the
    bar requires and ``reliable``.
    """
    n = int(labels.shape[0])
    correct = int((probs.argmax(axis=1) == labels).sum())
    low, high = wilson_interval(correct, n)
    counts = np.bincount(labels, minlength=probs.shape[1])
    majority = float(counts.max() / n)
    headroom = 1.0 - majority  # 0 when every example has one label: nothing to learn, nothing to flag
    lift_low = (low - majority) / headroom if headroom > 0 else 0.0
    return {
        "accuracy": correct / n,
        "ci_low": low,
        "ci_high": high,
        "n": n,
        "correct": correct,
        "interval": "wilson",
        "majority_rate": majority,
        "majority_class": class_names[int(counts.argmax())],
        "lift": (correct / n - majority) / headroom if headroom > 0 else 0.0,
        "lift_low": lift_low,
        "min_lift": min_lift,
        "required_accuracy": majority + min_lift * headroom,
        "reliable": bool(headroom > 0 and lift_low >= min_lift),
    }


def unreliable_message(model: dict[str, Any], supplied: bool) -> str:
    """Why the flags of a model below the bar mean little, and what to do, in one sentence."""
    bounds = {"ci_low": model["ci_low"], "ci_high": model["ci_high"]}
    accuracy = format_interval({"name": "accuracy", "value": model["accuracy"], **bounds})
    stronger = "out-of-fold probabilities of a stronger model"
    who, remedy = (
        ("the supplied probabilities are", f"supply {stronger}")
        if supplied
        else ("the quick model is", f"give it better features, or {stronger}")
    )
    return (
        f"{who} {accuracy} accurate out of fold (n = {model['n']:,}) against {model['majority_rate']:.1%} "
        f"for a model that learned nothing (always '{model['majority_class']}'), below the bar of "
        f"{model['required_accuracy']:.1%} at the interval's lower bound: the flags cannot be told apart "
        f"from the model's own mistakes; {remedy} (--label-probs)"
    )


@register("label_issues", "likely label errors: confident learning on out-of-fold probabilities")
def label_issues(ctx: AuditContext) -> list[Measurement]:
    if ctx.probs is None and not ctx.has_features:
        reason = "no numeric columns for the quick model (supply --label-probs)"
        return [Measurement.skipped("label_issues", "data", reason)]
    out = []
    k = len(ctx.data.class_names)
    supplied = ctx.probs is not None
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
        model = model_reliability(split.labels, probs, ctx.config.label_min_lift, names)
        # The marker every reader of findings honours (findings.unreliable): the count stays measured, but
        # the report, the CLI, the datasheet and the summary show it as no fact about the labels.
        marker: dict[str, Any] = (
            {} if model["reliable"] else {"unreliable": unreliable_message(model, supplied)}
        )
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
                model=model,
                **marker,
            )
        )
        out.append(accuracy_finding(split_name, model, source))
    return out


def accuracy_finding(split: str, model: dict[str, Any], source: str) -> Measurement:
    """The accuracy the label findings of ``split`` rest on, as a finding of its own (shown beside them)."""
    return rate_finding(
        f"label_model_accuracy[{split}]",
        model["correct"],
        model["n"],
        f"share of examples whose most probable class under the {source} is the given label; a model that "
        "learned nothing "
        f"gets {model['majority_rate']:.1%} (the majority class), label findings need "
        f"{model['required_accuracy']:.1%} at the lower bound",
        check="label_issues",
        higher_is_better=True,
        split=split,
        majority_rate=model["majority_rate"],
        required_accuracy=model["required_accuracy"],
        reliable=model["reliable"],
    )

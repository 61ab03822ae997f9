"""Privacy: a membership-inference audit comparing training members with held-out examples.

Attacks (each gives a score per example, higher = "more likely a member"):

    loss threshold  ``−loss`` of the true label (Yeom et al. 2018): members tend to have lower loss
    shadow model    Shokri et al. (2017), small: shadow models are trained on halves of data the target
                    never saw; a logistic-regression attack learns, from the shadows' outputs on their own
                    members and non-members, to tell them apart from (sorted top-3 probabilities, loss);
                    it then scores the target's outputs

Metrics, members positive: ``mia_auc`` (AUROC; 0.5 = the attack learns nothing) and ``mia_tpr_at_fpr``
(TPR at 0.1% FPR, the low-FPR regime Carlini et al. 2022 argue matters; the threshold is the most
permissive one whose FPR on non-members is at most 0.1%). Both have seeded percentile-bootstrap
intervals over the pooled members and non-members (the threshold is re-chosen in every replicate).
With fewer than 1000 non-members, 0.1% FPR means "no non-member above the threshold": the details say so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from assay.errors import UsageError
from assay.measurement import Measurement
from assay.metrics import ood
from assay.stats import bootstrap_ci

FAMILY = "privacy"
FPR_LEVEL = 0.001
_CLIP = 1e-12

# (inputs, labels) -> a function from inputs to probabilities (N, K): how a shadow model is trained.
TrainFn = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def loss_per_example(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    return np.asarray(-np.log(np.clip(p[np.arange(labels.size), labels], _CLIP, 1.0)))


def attack_features(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per example: the three largest probabilities (sorted) and the loss of the true label."""
    p = np.asarray(probs, dtype=np.float64)
    top = -np.sort(-p, axis=1)[:, : min(3, p.shape[1])]
    return np.column_stack([top, loss_per_example(p, labels)])


def _tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, level: float = FPR_LEVEL) -> np.ndarray:
    # Groups in ood's order are ascending in the membership score; thresholds run from the top down.
    tp = np.cumsum(pos[:, ::-1], axis=1) / pos.sum(axis=1, keepdims=True)
    fp = np.cumsum(neg[:, ::-1], axis=1) / neg.sum(axis=1, keepdims=True)
    allowed = fp <= level + 1e-12
    return np.asarray(np.where(allowed, tp, 0.0).max(axis=1))


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, level: float = FPR_LEVEL) -> float:
    """TPR on members at the most permissive threshold with FPR on non-members <= ``level``."""
    scores, is_member = ood._pool(-np.asarray(nonmember_scores), -np.asarray(member_scores))
    s = ood._sort(scores, is_member)
    pos, neg = ood._counts(s, np.arange(scores.size)[None, :])
    return float(_tpr_at_fpr(pos, neg, level)[0])


def membership_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """AUROC of telling members from non-members by the attack score (members positive)."""
    return ood.auroc(-np.asarray(nonmember_scores), -np.asarray(member_scores))


def _replicates(s: Any, metric: str) -> Callable[[np.ndarray], np.ndarray]:
    if metric == "auc":
        return ood._replicates(s, "auroc")

    def replicate(rows: np.ndarray) -> np.ndarray:
        pos, neg = ood._counts(s, rows)
        with np.errstate(invalid="ignore", divide="ignore"):
            return _tpr_at_fpr(pos, neg)

    return replicate


def attack_measurements(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    attack: str,
    n_boot: int = 1000,
    seed: int = 0,
    details: dict[str, Any] | None = None,
) -> list[Measurement]:
    """``mia_auc[<attack>]`` and ``mia_tpr_at_fpr[<attack>]`` with bootstrap intervals."""
    # ood's convention: the positive ("OOD") side is scored by −score, so pass −membership score.
    scores, is_member = ood._pool(-np.asarray(nonmember_scores), -np.asarray(member_scores))
    s = ood._sort(scores, is_member)
    n_m, n_n = int(is_member.sum()), int((~is_member).sum())
    common = {
        "attack": attack,
        "n_members": n_m,
        "n_nonmembers": n_n,
        "interval": "percentile bootstrap over pooled members and non-members",
        "n_boot": n_boot,
        "seed": seed,
        **(details or {}),
    }
    if n_n < 1 / FPR_LEVEL:
        common["note"] = f"{n_n} non-members: 0.1% FPR allows no false positive at all"
    out = []
    for metric, estimator in (
        ("auc", "AUROC of the attack score, members positive (0.5 = no leakage)"),
        ("tpr_at_fpr", "TPR on members at FPR <= 0.1% on non-members"),
    ):
        result = bootstrap_ci(_replicates(s, metric), scores.size, n_boot=n_boot, seed=seed, vectorized=True)
        finite = result.samples[np.isfinite(result.samples)]
        low, high = np.quantile(finite, [0.025, 0.975]) if finite.size else (np.nan, np.nan)
        out.append(
            Measurement(
                name=f"mia_{metric}[{attack}]",
                family=FAMILY,
                value=result.estimate,
                ci_low=float(low),
                ci_high=float(high),
                n=int(scores.size),
                higher_is_better=False,  # for the defender: less leakage is better
                estimator=f"{estimator}; {attack} attack",
                details=common,
            )
        )
    return out


def loss_attack_measurements(
    member_probs: np.ndarray,
    member_labels: np.ndarray,
    nonmember_probs: np.ndarray,
    nonmember_labels: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[Measurement]:
    """The loss-threshold attack on the target's own outputs."""
    return attack_measurements(
        -loss_per_example(member_probs, member_labels),
        -loss_per_example(nonmember_probs, nonmember_labels),
        attack="loss",
        n_boot=n_boot,
        seed=seed,
    )


def shadow_attack_scores(
    train_fn: TrainFn,
    shadow_x: np.ndarray,
    shadow_y: np.ndarray,
    target_probs: np.ndarray,
    target_labels: np.ndarray,
    *,
    n_shadows: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """Membership scores of the target's examples from a shadow-model attack.

    Each shadow is trained with ``train_fn`` on a random half of ``shadow_x`` (data the target never
    saw, from the same distribution); its outputs on that half are "member" and on the other half
    "non-member" examples for a logistic-regression attack, which then scores ``target_probs``.
    """
    from sklearn.linear_model import LogisticRegression

    if n_shadows < 1:
        raise UsageError(f"'n_shadows' must be >= 1. Got {n_shadows}.")
    rng = np.random.default_rng(seed)
    feats, member = [], []
    for _ in range(n_shadows):
        inside = np.zeros(len(shadow_y), dtype=bool)
        inside[rng.permutation(len(shadow_y))[: len(shadow_y) // 2]] = True
        predict = train_fn(shadow_x[inside], shadow_y[inside])
        probs = predict(shadow_x)
        feats.append(attack_features(probs, shadow_y))
        member.append(inside)
    attack = LogisticRegression(max_iter=1000)
    attack.fit(np.concatenate(feats), np.concatenate(member))
    return np.asarray(attack.predict_proba(attack_features(target_probs, target_labels))[:, 1])

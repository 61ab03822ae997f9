"""A gradient-free, character-level attack on text classifiers: greedy by the model's own confidence.

Threat model (recorded in every measurement): at most ``min(budget, ceil(fraction · len(text)))``
character edits per text, each one of

    delete   a letter removed (never a word's last character, so the words stay the words)
    swap     a letter replaced by one of its QWERTY neighbours (case kept)
    insert   a QWERTY neighbour of a letter typed after it (a fat finger)

on the letters of the text's most important words, where a word's importance is how much the model's
probability of the true class falls when the word is deleted (one query per word; Gao et al. 2018's
DeepWordBug ranks words the same way, by leave-one-out). Each step scores every candidate edit of the
``top_words`` most important words (one query each), applies the one that leaves the true class least
probable, and stops when the prediction flips or the budget is spent. Only the model's probabilities are
used (black box, score-based); the neighbour a swap or an insert types is drawn with the seed.

A query is one text the model scores; the clean text is one. An example the model gets wrong before any
edit is counted as not robust, with no attack run on it (its success is not defined).

Measurements (``<metric>[char_greedy-edits@<budget>]``):

    adv_accuracy   share of examples still classified correctly after the attack (Wilson); the gate
                   compares two models on it per example, paired
    adv_success    share of the correctly classified examples the attack flipped (Wilson)
    adv_edits      mean edits of the successful attacks (percentile bootstrap)
    adv_queries    mean queries per attacked example (percentile bootstrap), the most in ``details``
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.catalogue import TEXT_ATTACK, TEXT_EDITS, adversarial_accuracy, text_attack_metric
from assay.errors import UsageError
from assay.measurement import Measurement
from assay.metrics.text_robustness import QWERTY_NEIGHBOURS
from assay.stats import bootstrap_ci

FAMILY = "adversarial"
_WORD = re.compile(r"\S+")
Probabilities = Callable[[np.ndarray], np.ndarray]  # (N,) texts -> (N, C) class probabilities


@dataclass(frozen=True)
class TextAttackResult:
    """Per example: correct before and after the attack, the edits applied, the queries spent, the
    budget it had and the final text (the adversarial one where the attack succeeded)."""

    clean: np.ndarray  # (N,) bool
    correct: np.ndarray  # (N,) bool
    edits: np.ndarray  # (N,) int64
    queries: np.ndarray  # (N,) int64
    budgets: np.ndarray  # (N,) int64
    texts: np.ndarray  # (N,) object
    budget: int
    fraction: float
    top_words: int

    @property
    def success(self) -> np.ndarray:
        """Correct before the attack and wrong after it."""
        return self.clean & ~self.correct

    def describe(self) -> dict[str, Any]:
        return {
            "attack": TEXT_ATTACK,
            "max_edits": self.budget,
            "max_edits_share_of_characters": self.fraction,
            "edits": "delete a letter, swap it with a QWERTY neighbour, insert a neighbour after it",
            "positions": f"the letters of the {self.top_words} most important words (leave-one-out)",
            "greedy_by": "the model's probability of the true class",
            "white_box": False,
        }


def edit_budget(text: str, budget: int, fraction: float) -> int:
    """The edits allowed on ``text``: ``budget``, and at most ``ceil(fraction · len(text))``."""
    return min(budget, math.ceil(fraction * len(text)))


def _with_case(ch: str, like: str) -> str:
    return ch.upper() if like.isupper() else ch


def _candidates(text: str, word: re.Match[str], rng: np.random.Generator) -> list[str]:
    """Every one-edit variant of ``text`` at the letters of ``word`` (a match in ``text``)."""
    out: list[str] = []
    for j in range(word.start(), word.end()):
        ch = text[j]
        near = QWERTY_NEIGHBOURS.get(ch.lower())
        if near is None:
            continue
        if word.end() - word.start() > 1:
            out.append(text[:j] + text[j + 1 :])
        swap, typed = (_with_case(near[int(i)], ch) for i in rng.integers(0, len(near), 2))
        out.append(text[:j] + swap + text[j + 1 :])
        out.append(text[: j + 1] + typed + text[j + 1 :])
    return out


def _attack_one(
    probs: Probabilities, text: str, label: int, p_clean: np.ndarray, k: int, top_words: int,
    rng: np.random.Generator,
) -> tuple[bool, int, int, str]:  # fmt: skip
    """(still correct, edits, queries beyond the clean one, final text) for one correctly classified
    example with a budget of ``k`` edits."""
    words = list(_WORD.finditer(text))
    queries = 0
    if len(words) > 1:
        deleted = np.array([text[: w.start()] + text[w.end() :] for w in words], dtype=object)
        drops = p_clean[label] - probs(deleted)[:, label]
        queries += len(deleted)
        ranked = np.argsort(-drops, kind="stable")[:top_words]
    else:
        ranked = np.arange(len(words))
    current, edits = text, 0
    for _ in range(k):
        now = list(_WORD.finditer(current))  # edits never add or remove a word: the indices hold
        candidates = [c for w in ranked for c in _candidates(current, now[int(w)], rng)]
        if not candidates:
            break
        p = probs(np.array(candidates, dtype=object))
        queries += len(candidates)
        best = int(np.argmin(p[:, label]))
        current, edits = candidates[best], edits + 1
        if int(np.argmax(p[best])) != label:
            return False, edits, queries, current
    return True, edits, queries, current


def char_greedy_attack(
    probs: Probabilities,
    texts: np.ndarray,
    labels: np.ndarray,
    *,
    budget: int = 3,
    fraction: float = 0.1,
    top_words: int = 2,
    seed: int = 0,
) -> TextAttackResult:
    """The attack on each of ``texts`` (true ``labels``) through ``probs`` (texts -> probabilities)."""
    if budget < 0 or not 0 < fraction <= 1 or top_words < 1:
        raise UsageError(
            f"The text attack needs budget >= 0, 0 < fraction <= 1 and top_words >= 1; got {budget}, "
            f"{fraction} and {top_words}."
        )
    texts = np.asarray(texts, dtype=object)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(texts)
    p_clean = probs(texts) if n else np.zeros((0, 0))
    clean = p_clean.argmax(axis=1) == labels if n else np.zeros(0, dtype=bool)
    correct, out = clean.copy(), texts.copy()
    edits, queries = np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)
    budgets = np.array([edit_budget(str(t), budget, fraction) for t in texts], dtype=np.int64)
    for i in np.flatnonzero(clean & (budgets > 0)):
        rng = np.random.default_rng([seed, int(i)])
        kept, edits[i], spent, out[i] = _attack_one(
            probs, str(texts[i]), int(labels[i]), p_clean[i], int(budgets[i]), top_words, rng
        )
        correct[i] = kept
        queries[i] += spent
    return TextAttackResult(clean, correct, edits, queries, budgets, out, budget, fraction, top_words)


def _mean_measurement(
    name: str, values: np.ndarray, *, higher_is_better: bool | None, estimator: str, n_boot: int,
    seed: int, details: dict[str, Any],
) -> Measurement:  # fmt: skip
    v = np.asarray(values, dtype=np.float64)
    ci = bootstrap_ci(lambda rows: v[rows].mean(axis=1), len(v), n_boot=n_boot, seed=seed, vectorized=True)
    return Measurement(
        name=name, family=FAMILY, value=ci.estimate, ci_low=ci.ci_low, ci_high=ci.ci_high, n=len(v),
        higher_is_better=higher_is_better, estimator=estimator,
        details={"interval": "percentile bootstrap", "n_boot": n_boot, "seed": seed, **details},
    )  # fmt: skip


def per_example(result: TextAttackResult) -> dict[str, np.ndarray]:
    """Per-example robust correctness behind ``adv_accuracy`` (the one the gate pairs)."""
    return {adversarial_accuracy(TEXT_ATTACK, TEXT_EDITS, result.budget): result.correct}


def attack_measurements(
    result: TextAttackResult, *, n_boot: int = 1000, seed: int = 0, details: dict[str, Any] | None = None
) -> list[Measurement]:
    """Robust accuracy, success rate, mean edits and mean queries of one attack run."""
    n = int(result.clean.size)
    about = {**result.describe(), **(details or {})}

    def name(metric: str) -> str:
        return text_attack_metric(metric, result.budget)

    if n == 0:
        return [Measurement.skipped(name("accuracy"), FAMILY, "no examples to attack")]
    attacked = int(result.clean.sum())
    success = result.success
    out = [
        Measurement.proportion(
            name("accuracy"), FAMILY, int(result.correct.sum()), n, higher_is_better=True,
            estimator=f"accuracy under the greedy character attack, at most {result.budget} edits",
            details=about,
        ),
    ]  # fmt: skip
    if attacked:
        out.append(
            Measurement.proportion(
                name("success"), FAMILY, int(success.sum()), attacked, higher_is_better=False,
                estimator="share of correctly classified examples the attack flipped", details=about,
            )
        )  # fmt: skip
    else:
        out.append(Measurement.skipped(name("success"), FAMILY, "no example was classified correctly"))
    if success.any():
        out.append(
            _mean_measurement(
                name("edits"), result.edits[success], higher_is_better=True,
                estimator="mean character edits of the successful attacks", n_boot=n_boot, seed=seed,
                details=about,
            )
        )  # fmt: skip
    else:
        out.append(Measurement.skipped(name("edits"), FAMILY, "no attack succeeded within the budget"))
    out.append(
        _mean_measurement(
            name("queries"), result.queries, higher_is_better=None,
            estimator="mean texts scored by the model per example (the clean one included)",
            n_boot=n_boot, seed=seed,
            details={**about, "total": int(result.queries.sum()), "most": int(result.queries.max())},
        )
    )  # fmt: skip
    return out

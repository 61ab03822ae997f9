"""The greedy character attack (assay.metrics.text_attack) on planted models whose decision is known:
a keyword model it must break with one edit, a constant model it cannot break, and budgets it keeps."""

from __future__ import annotations

import numpy as np
import pytest

from assay.errors import UsageError
from assay.metrics import text_attack as ta
from assay.metrics.text_robustness import QWERTY_NEIGHBOURS

POSITIVE = [
    "the film was excellent",
    "excellent plot and a fine cast",
    "an Excellent, EXCELLENT and excellent evening",  # only the lower-case word counts
    "excellent",
    "we thought the sound was poor but the acting was excellent overall",
]
NEGATIVE = ["the film was dull", "a poor plot", "nothing good here at all"]


class Keyword:
    """Class 1 iff the word "excellent" is in the text, with probability 0.95; counts every text scored."""

    def __init__(self) -> None:
        self.scored = 0

    def __call__(self, texts: np.ndarray) -> np.ndarray:
        self.scored += len(texts)
        hit = np.array(["excellent" in str(t).split() or "excellent," in str(t) for t in texts])
        p1 = np.where(hit, 0.95, 0.05)
        return np.stack([1 - p1, p1], axis=1)


def data() -> tuple[np.ndarray, np.ndarray]:
    texts = np.array(POSITIVE + NEGATIVE, dtype=object)
    return texts, np.array([1] * len(POSITIVE) + [0] * len(NEGATIVE))


def test_the_keyword_is_found_with_one_edit() -> None:
    texts, y = data()
    model = Keyword()
    result = ta.char_greedy_attack(model, texts, y, budget=1, fraction=1.0, seed=0)
    assert result.clean.all()
    positive = y == 1
    assert result.success[positive].all() and not result.correct[positive].any()
    assert (result.edits[positive] == 1).all()
    for before, after in zip(texts[positive], result.texts[positive], strict=True):
        assert "excellent" not in after.split() and after != before
    # Nothing can put the keyword into a negative text with one character edit: they stay correct.
    assert result.correct[~positive].all() and (result.edits[~positive] == 1).all()
    assert list(result.texts[~positive]) != list(texts[~positive])  # the edit was spent, in vain
    # Every text the model scored is counted, the clean ones included.
    assert int(result.queries.sum()) == model.scored


def test_queries_are_bounded_by_words_and_the_letters_of_the_top_words() -> None:
    texts, y = data()
    result = ta.char_greedy_attack(Keyword(), texts, y, budget=2, fraction=1.0, top_words=2, seed=0)
    for text, queries, edits in zip(texts, result.queries, result.edits, strict=True):
        words = text.split()
        longest = sorted((len(w) for w in words), reverse=True)[:2]
        per_step = 3 * sum(longest)  # delete, swap and insert at each letter of the two longest words
        assert queries <= 1 + (len(words) if len(words) > 1 else 0) + edits * per_step
        assert edits <= 2


def test_a_budget_of_zero_reports_failure() -> None:
    texts, y = data()
    model = Keyword()
    result = ta.char_greedy_attack(model, texts, y, budget=0, seed=0)
    assert not result.success.any() and result.correct.all() and (result.edits == 0).all()
    assert (result.queries == 1).all() and model.scored == len(texts)
    by_name = {m.name: m for m in ta.attack_measurements(result, n_boot=50)}
    assert by_name["adv_success[char_greedy-edits@0]"].value == 0.0
    assert by_name["adv_accuracy[char_greedy-edits@0]"].value == 1.0
    assert by_name["adv_edits[char_greedy-edits@0]"].status == "skipped"


def test_the_budget_is_also_a_share_of_the_length() -> None:
    assert ta.edit_budget("excellent", 3, 0.1) == 1 and ta.edit_budget("x" * 25, 3, 0.1) == 3
    assert ta.edit_budget("x" * 15, 3, 0.1) == 2 and ta.edit_budget("", 3, 0.1) == 0


def test_a_constant_model_cannot_be_attacked() -> None:
    texts, y = data()

    def constant(batch: np.ndarray) -> np.ndarray:
        return np.tile([0.2, 0.8], (len(batch), 1))

    result = ta.char_greedy_attack(constant, texts, y, budget=3, fraction=1.0, seed=0)
    assert result.clean.sum() == len(POSITIVE)  # it is right on the positives only
    assert not result.success.any() and (result.correct == (y == 1)).all()
    by_name = {m.name: m for m in ta.attack_measurements(result, n_boot=50)}
    success = by_name["adv_success[char_greedy-edits@3]"]
    assert success.value == 0.0 and success.n == len(POSITIVE) and success.ci_low == 0.0
    assert by_name["adv_accuracy[char_greedy-edits@3]"].value == pytest.approx(len(POSITIVE) / len(y))


def test_the_edits_are_deletions_neighbour_swaps_or_neighbour_insertions() -> None:
    texts = np.array(["excellent"], dtype=object)
    result = ta.char_greedy_attack(Keyword(), texts, np.array([1]), budget=1, fraction=1.0, seed=3)
    after = str(result.texts[0])
    if len(after) == len("excellent") - 1:  # a deletion
        assert any(after == "excellent"[:j] + "excellent"[j + 1 :] for j in range(9))
    elif len(after) == len("excellent"):  # a swap with a QWERTY neighbour
        (j,) = [j for j in range(9) if after[j] != "excellent"[j]]
        assert after[j] in QWERTY_NEIGHBOURS["excellent"[j]]
    else:  # a neighbour typed after a letter
        (j,) = [j for j in range(9) if after[: j + 1] + after[j + 2 :] == "excellent"][:1]
        assert after[j + 1] in QWERTY_NEIGHBOURS["excellent"[j]]


def test_measurements_carry_the_threat_model_and_intervals() -> None:
    texts, y = data()
    result = ta.char_greedy_attack(Keyword(), texts, y, budget=1, fraction=1.0, seed=0)
    by_name = {m.name: m for m in ta.attack_measurements(result, n_boot=100, details={"subset": 8})}
    success = by_name["adv_success[char_greedy-edits@1]"]
    assert success.value == pytest.approx(len(POSITIVE) / len(y)) and success.ci_low < success.value
    assert success.details["max_edits"] == 1 and success.details["white_box"] is False
    assert by_name["adv_edits[char_greedy-edits@1]"].value == 1.0
    queries = by_name["adv_queries[char_greedy-edits@1]"]
    assert queries.value == pytest.approx(result.queries.mean()) and queries.details["total"] > len(y)
    assert queries.ci_low <= queries.value <= queries.ci_high
    assert ta.per_example(result)["adv_accuracy[char_greedy-edits@1]"].tolist() == result.correct.tolist()


def test_bad_settings_are_refused() -> None:
    texts, y = data()
    with pytest.raises(UsageError, match="budget"):
        ta.char_greedy_attack(Keyword(), texts, y, budget=-1)
    with pytest.raises(UsageError, match="fraction"):
        ta.char_greedy_attack(Keyword(), texts, y, fraction=0.0)

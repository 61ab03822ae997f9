"""The text perturbations (assay.metrics.text_robustness) on known strings: each changes only what it says
it changes, by a share that grows with severity, the same way for the same seed, and never breaks on an
empty or one-word text."""

from __future__ import annotations

import difflib
import math
import re

import numpy as np
import pytest

from assay import catalogue
from assay.errors import UsageError
from assay.metrics import robustness
from assay.metrics import text_robustness as tr

SENTENCE = (
    "The quick brown fox jumps over the lazy dog, and then it sleeps.\n"
    "Pack my box with five dozen liquor jugs! Sphinx of black quartz, judge my vow."
)
WORDS = SENTENCE.split()
LETTERS = sum(ch.isalpha() for ch in SENTENCE)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def changed_positions(a: str, b: str) -> int:
    """Characters of ``a`` not kept in ``b`` plus characters of ``b`` not in ``a`` (an edit count)."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    kept = sum(block.size for block in matcher.get_matching_blocks())
    return len(a) - kept + len(b) - kept


def is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(any(w == v for v in it) for w in short)


def test_the_perturbations_are_the_catalogues_in_order() -> None:
    assert tuple(tr.PERTURBATIONS) == catalogue.TEXT_PERTURBATIONS
    for p in tr.PERTURBATIONS.values():
        assert len(p.levels) == 5 and list(p.levels) == sorted(p.levels) and p.parameter


def test_the_qwerty_map_is_symmetric_and_local() -> None:
    assert set(tr.QWERTY_NEIGHBOURS["a"]) == set("qwsz")
    assert set(tr.QWERTY_NEIGHBOURS["g"]) == set("fhtyvb")
    assert set(tr.QWERTY_NEIGHBOURS["m"]) == set("njk")
    for key, near in tr.QWERTY_NEIGHBOURS.items():
        assert key not in near
        assert all(key in tr.QWERTY_NEIGHBOURS[other] for other in near), key


@pytest.mark.parametrize("severity", catalogue.SEVERITIES)
def test_casing_changes_only_case(severity: int) -> None:
    out = tr.casing(SENTENCE, rng(), severity)
    assert out != SENTENCE and out.lower() == SENTENCE.lower()
    flipped = sum(a != b for a, b in zip(SENTENCE, out, strict=True))
    assert flipped == math.ceil(tr.PERTURBATIONS["text_casing"].levels[severity - 1] * LETTERS)


def test_casing_leaves_letters_whose_case_does_not_flip_to_one_letter() -> None:
    out = tr.casing("ßßß straße", rng(), 5)
    assert "ß" in out and out.count("ß") == 4 and out.lower() == "ßßß straße"


@pytest.mark.parametrize("severity", catalogue.SEVERITIES)
def test_keyboard_replaces_letters_by_qwerty_neighbours_only(severity: int) -> None:
    out = tr.keyboard(SENTENCE, rng(), severity)
    assert len(out) == len(SENTENCE)
    swaps = [(a, b) for a, b in zip(SENTENCE, out, strict=True) if a != b]
    assert len(swaps) == math.ceil(tr.PERTURBATIONS["text_keyboard"].levels[severity - 1] * LETTERS)
    for a, b in swaps:
        assert a.isalpha() and b.lower() in tr.QWERTY_NEIGHBOURS[a.lower()]
        assert a.isupper() == b.isupper()  # the letter's case is kept


@pytest.mark.parametrize("severity", catalogue.SEVERITIES)
def test_typos_touch_letters_only_one_character_each(severity: int) -> None:
    out = tr.typo(SENTENCE, rng(), severity)
    k = math.ceil(tr.PERTURBATIONS["text_typo"].levels[severity - 1] * LETTERS)
    # Each edit deletes, inserts or substitutes one letter: at most 2 characters differ per edit.
    assert 0 < changed_positions(SENTENCE, out) <= 2 * k
    strip = re.compile("[A-Za-z]")
    assert strip.sub("", out) == strip.sub("", SENTENCE)  # spaces, digits and punctuation untouched
    assert len(out.split()) == len(WORDS)


def test_a_typo_is_a_deletion_an_insertion_or_a_substitution_by_thirds_of_its_draw() -> None:
    for u in np.linspace(0, 0.999, 60):
        out = tr._typo_edit("K", float(u))
        if u < 1 / 3:
            assert out == ""
        elif u < 2 / 3:
            assert len(out) == 2 and out[1] == "K" and out[0].isupper()
        else:
            assert len(out) == 1 and out != "K" and out.isupper()


@pytest.mark.parametrize("severity", catalogue.SEVERITIES)
def test_punctuation_changes_only_punctuation(severity: int) -> None:
    out = tr.punctuation(SENTENCE, rng(), severity)
    assert out != SENTENCE

    def no_marks(s: str) -> str:
        return "".join(ch for ch in s if ch not in tr.PUNCTUATION)

    assert no_marks(out) == no_marks(SENTENCE)
    k = math.ceil(tr.PERTURBATIONS["text_punctuation"].levels[severity - 1] * len(WORDS))
    changed = sum(a != b for a, b in zip(SENTENCE.split(), out.split(), strict=True))
    assert changed == k


@pytest.mark.parametrize("severity", catalogue.SEVERITIES)
def test_word_deletion_removes_words_and_keeps_order(severity: int) -> None:
    out = tr.word_deletion(SENTENCE, rng(), severity)
    kept = out.split()
    k = math.ceil(tr.PERTURBATIONS["text_word_deletion"].levels[severity - 1] * len(WORDS))
    assert len(kept) == len(WORDS) - k and is_subsequence(kept, WORDS)
    assert "\n" in out or "sleeps." not in kept or "Pack" not in kept  # the line break stays where it can


@pytest.mark.parametrize("severity", catalogue.SEVERITIES)
def test_word_repetition_says_words_twice(severity: int) -> None:
    out = tr.word_repetition(SENTENCE, rng(), severity)
    k = math.ceil(tr.PERTURBATIONS["text_word_repetition"].levels[severity - 1] * len(WORDS))
    said = out.split()
    assert len(said) == len(WORDS) + k
    deduplicated = [w for i, w in enumerate(said) if i == 0 or w != said[i - 1] or w in ("the",)]
    assert is_subsequence(WORDS, said) and len(deduplicated) >= len(WORDS)


@pytest.mark.parametrize("name", catalogue.TEXT_PERTURBATIONS)
def test_edits_grow_with_severity_and_are_nested(name: str) -> None:
    fn = tr.PERTURBATIONS[name].fn
    outs = [fn(SENTENCE, rng(3), s) for s in catalogue.SEVERITIES]
    counts = [changed_positions(SENTENCE, out) for out in outs]
    assert counts == sorted(counts) and counts[0] > 0 and counts[-1] > counts[0], counts


@pytest.mark.parametrize("name", catalogue.TEXT_PERTURBATIONS)
def test_same_seed_same_output_and_other_seeds_differ(name: str) -> None:
    texts = np.array([SENTENCE, "a short one", SENTENCE.upper()], dtype=object)
    first = tr.perturb(texts, name, 3, seed=7)
    assert list(first) == list(tr.perturb(texts, name, 3, seed=7))
    assert list(first) != list(tr.perturb(texts, name, 3, seed=8))
    # A text's copy does not depend on the others in the batch.
    assert tr.perturb(texts[:1], name, 3, seed=7)[0] == first[0]
    assert list(texts) == [SENTENCE, "a short one", SENTENCE.upper()]  # the input is left alone


@pytest.mark.parametrize("name", catalogue.TEXT_PERTURBATIONS)
@pytest.mark.parametrize("text", ["", "   ", "word", "  word\n", "!!!"])
def test_empty_and_one_word_texts_are_safe(name: str, text: str) -> None:
    for severity in catalogue.SEVERITIES:
        out = tr.PERTURBATIONS[name].fn(text, rng(), severity)
        assert isinstance(out, str)
        if name == "text_word_deletion":
            assert out == text  # the only word is never deleted
        if text.strip() == "":
            assert out == text


def test_unknown_names_and_severities_are_refused() -> None:
    with pytest.raises(UsageError, match="Unknown text perturbation"):
        tr.perturb(np.array(["x"], dtype=object), "text_synonyms", 1)
    with pytest.raises(UsageError, match="severity"):
        tr.typo(SENTENCE, rng(), 6)


def test_evaluation_is_the_corruptions_result_and_measurements() -> None:
    """A keyword model: correct iff 'fox' survives, so only word deletion (and typos on it) can hurt."""
    texts = np.array([f"{i} the quick brown fox jumps" for i in range(40)], dtype=object)
    y = np.ones(40, dtype=np.int64)

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.array([int("fox" in t) for t in batch])

    result = tr.evaluate_perturbations(predict, texts, y, ["text_casing", "text_word_deletion"], seed=0)
    assert result.clean.all()
    assert result.corrupted["text_casing"].shape == (5, 40)
    assert not result.corrupted["text_casing"].all()  # 'FOX' is not 'fox'
    deleted = result.corrupted["text_word_deletion"].mean(axis=1)
    assert list(deleted) == sorted(deleted, reverse=True) and deleted[-1] < 1  # nested deletions
    ms = {m.name: m for m in tr.perturbation_measurements(result, result, n_boot=50)}
    acc = ms[catalogue.corruption_accuracy("text_word_deletion", 5)]
    assert acc.value == pytest.approx(deleted[-1]) and acc.details["interval"] == "wilson"
    assert "share of words" in acc.estimator
    assert ms["corruption_mca"].value == pytest.approx(
        np.mean([result.corrupted[n].mean() for n in result.corrupted])
    )
    assert ms["corruption_mce"].value == pytest.approx(1.0)  # the model against itself
    assert set(robustness.per_example(result)) <= set(catalogue.trust_entries())

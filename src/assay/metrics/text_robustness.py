"""Text robustness: seeded perturbations of texts at 5 severities, and accuracy under them.

Six perturbations, none needing a lexicon (no synonyms, no language model), in the catalogue's order
(:data:`assay.catalogue.TEXT_PERTURBATIONS`); the severity is the share of the text's letters or words
edited, and each edits at least one where it can:

    text_typo             delete, insert or substitute a letter (a random one), on a share
                          (0.02, 0.04, 0.06, 0.1, 0.15) of the letters
    text_keyboard         a letter replaced by one of its QWERTY neighbours (case kept), same shares
    text_casing           a cased letter's case flipped, on a share (0.05, 0.1, 0.2, 0.35, 0.5) of them
    text_punctuation      a word's trailing punctuation removed, or a mark appended to a word without
                          one, on a share (0.05, 0.1, 0.2, 0.3, 0.5) of the words
    text_word_deletion    a share (0.05, 0.1, 0.15, 0.25, 0.35) of the words deleted (never the last one
                          left), the others in their order
    text_word_repetition  a share (0.05, 0.1, 0.2, 0.3, 0.5) of the words said twice

Each is a function ``(text, rng, severity) -> text``. The generator's draws do not depend on the
severity (a priority for every candidate position, and what to do there, drawn once), and the edits at a
severity are the first ``ceil(share · candidates)`` positions by priority: severity 4 edits a superset of
severity 3's positions, so accuracy falls smoothly with severity (the common random numbers of
:mod:`assay.metrics.robustness`). :func:`perturb` seeds one generator per (seed, perturbation, example),
so a text's perturbed copy does not depend on the other texts in the batch. Whitespace between words
(newlines too) is kept.

Results and measurements are the image corruptions' (:class:`~assay.metrics.robustness.CorruptionResult`,
``corruption_accuracy[text_typo@3]``, ``corruption_mca[text_typo]``, ``corruption_mca``; CE against a
baseline), so a gate compares two text models per example, paired, as it does two image models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.catalogue import SEVERITIES, TEXT_PERTURBATIONS
from assay.errors import UsageError
from assay.measurement import Measurement
from assay.metrics import robustness

PerturbFn = Callable[[str, np.random.Generator, int], str]

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _qwerty_neighbours() -> dict[str, str]:
    """Each letter's neighbours on a QWERTY keyboard: left and right on its row, and the two keys that
    touch it on the rows above and below (each row sits half a key right of the one above)."""
    where = {ch: (r, c) for r, row in enumerate(_ROWS) for c, ch in enumerate(row)}
    out: dict[str, str] = {}
    for ch, (r, c) in where.items():
        near = [(r, c - 1), (r, c + 1), (r - 1, c), (r - 1, c + 1), (r + 1, c - 1), (r + 1, c)]
        out[ch] = "".join(_ROWS[i][j] for i, j in near if 0 <= i < len(_ROWS) and 0 <= j < len(_ROWS[i]))
    return out


QWERTY_NEIGHBOURS: dict[str, str] = _qwerty_neighbours()
LETTERS = "abcdefghijklmnopqrstuvwxyz"
PUNCTUATION = ",.;:!?"
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class TextPerturbation:
    name: str
    levels: tuple[float, ...]  # the share edited at severities 1..5
    fn: PerturbFn
    parameter: str  # what ``levels`` are, for the report


def _share(name: str, severity: int) -> float:
    if severity not in SEVERITIES:
        raise UsageError(f"'severity' must be one of {SEVERITIES}. Got {severity}.")
    return PERTURBATIONS[name].levels[severity - 1]


def _chosen(n: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions 0..n-1 to edit at ``share`` (the first ``ceil(share·n)`` by a random priority), and one
    uniform draw per position for what to do there; the draws do not depend on ``share``."""
    priority = rng.permutation(n)
    draws = rng.random(n)
    k = min(n, math.ceil(share * n))
    chosen = np.zeros(n, dtype=bool)
    chosen[priority[:k]] = True
    return chosen, draws


def _pick(options: str, u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def _with_case(ch: str, like: str) -> str:
    return ch.upper() if like.isupper() else ch


def _edit_letters(
    text: str, rng: np.random.Generator, share: float, eligible: Callable[[str], bool],
    edit: Callable[[str, float], str],
) -> str:  # fmt: skip
    """``text`` with ``edit(letter, draw)`` (a string: empty deletes, two letters insert) in place of
    the chosen ``eligible`` characters."""
    at = [i for i, ch in enumerate(text) if eligible(ch)]
    chosen, draws = _chosen(len(at), share, rng)
    out = list(text)
    for j, i in enumerate(at):
        if chosen[j]:
            out[i] = edit(text[i], float(draws[j]))
    return "".join(out)


def _typo_edit(ch: str, u: float) -> str:
    """One of delete, insert (a letter before it) or substitute (another letter), by thirds of ``u``;
    the rest of ``u`` picks the letter."""
    op, rest = min(int(u * 3), 2), (u * 3) % 1.0
    if op == 0:
        return ""
    if op == 1:
        return _with_case(_pick(LETTERS, rest), ch) + ch
    others = LETTERS.replace(ch.lower(), "")
    return _with_case(_pick(others, rest), ch)


def _is_ascii_letter(ch: str) -> bool:
    return ch.lower() in QWERTY_NEIGHBOURS


def typo(text: str, rng: np.random.Generator, severity: int) -> str:
    """Letters (ASCII) deleted, doubled by a random letter before them, or replaced by another letter."""
    return _edit_letters(text, rng, _share("text_typo", severity), _is_ascii_letter, _typo_edit)


def keyboard(text: str, rng: np.random.Generator, severity: int) -> str:
    """Letters replaced by one of their QWERTY neighbours, in the letter's case."""

    def swap(ch: str, u: float) -> str:
        return _with_case(_pick(QWERTY_NEIGHBOURS[ch.lower()], u), ch)

    return _edit_letters(text, rng, _share("text_keyboard", severity), _is_ascii_letter, swap)


def _flippable(ch: str) -> bool:
    """A cased character whose case flips to one character and back (not 'ß', whose upper case is 'SS')."""
    flipped = ch.swapcase()
    return flipped != ch and len(flipped) == 1 and flipped.swapcase() == ch and flipped.lower() == ch.lower()


def casing(text: str, rng: np.random.Generator, severity: int) -> str:
    """Cased letters with their case flipped; nothing else changes (``lower()`` is the same)."""
    return _edit_letters(text, rng, _share("text_casing", severity), _flippable, lambda ch, u: ch.swapcase())


def _words(text: str) -> list[re.Match[str]]:
    return list(_WORD.finditer(text))


def _replace_words(text: str, words: list[re.Match[str]], new: dict[int, str]) -> str:
    """``text`` with word ``i`` replaced by ``new[i]``, the whitespace between words kept."""
    pieces: list[str] = []
    end = 0
    for i, w in enumerate(words):
        pieces += [text[end : w.start()], new.get(i, w.group())]
        end = w.end()
    pieces.append(text[end:])
    return "".join(pieces)


def punctuation(text: str, rng: np.random.Generator, severity: int) -> str:
    """On the chosen words: trailing punctuation removed where there is some, else a mark appended.
    The letters, digits and spaces are those of ``text``, in order."""
    words = _words(text)
    chosen, draws = _chosen(len(words), _share("text_punctuation", severity), rng)
    new: dict[int, str] = {}
    for i, w in enumerate(words):
        if not chosen[i]:
            continue
        word = w.group()
        stripped = word.rstrip(PUNCTUATION)
        new[i] = stripped if stripped and stripped != word else word + _pick(PUNCTUATION, float(draws[i]))
    return _replace_words(text, words, new)


def word_deletion(text: str, rng: np.random.Generator, severity: int) -> str:
    """The chosen words deleted, never all of them: a one-word text is left as it is."""
    words = _words(text)
    chosen, _ = _chosen(len(words), _share("text_word_deletion", severity), rng)
    if len(words) <= 1:  # the shares (at most 0.35) choose every word only of a one-word text
        return text
    return _join_kept(text, words, chosen)


def _join_kept(text: str, words: list[re.Match[str]], deleted: np.ndarray) -> str:
    """The words not ``deleted``, each followed by the whitespace that followed it (the last kept one by
    what followed the text's last word), after the text's leading whitespace."""
    kept = [i for i in range(len(words)) if not deleted[i]]
    if len(kept) == len(words):
        return text
    pieces = [text[: words[0].start()]]
    for j, i in enumerate(kept):
        pieces.append(words[i].group())
        if j + 1 < len(kept):
            pieces.append(text[words[i].end() : words[i + 1].start()])
    pieces.append(text[words[-1].end() :])
    return "".join(pieces)


def word_repetition(text: str, rng: np.random.Generator, severity: int) -> str:
    """The chosen words said twice, separated by a space."""
    words = _words(text)
    chosen, _ = _chosen(len(words), _share("text_word_repetition", severity), rng)
    new = {i: f"{w.group()} {w.group()}" for i, w in enumerate(words) if chosen[i]}
    return _replace_words(text, words, new)


_LETTER_SHARES = (0.02, 0.04, 0.06, 0.1, 0.15)
_WORD_SHARES = (0.05, 0.1, 0.2, 0.3, 0.5)
_DELETION_SHARES = (0.05, 0.1, 0.15, 0.25, 0.35)  # fewer than repeated: a text must keep its words
# In the catalogue's order: a perturbation's seed stream is its position.
PERTURBATIONS: dict[str, TextPerturbation] = {
    p.name: p
    for p in (
        TextPerturbation("text_typo", _LETTER_SHARES, typo, "share of letters"),
        TextPerturbation("text_keyboard", _LETTER_SHARES, keyboard, "share of letters"),
        TextPerturbation("text_casing", (0.05, 0.1, 0.2, 0.35, 0.5), casing, "share of cased letters"),
        TextPerturbation("text_punctuation", _WORD_SHARES, punctuation, "share of words"),
        TextPerturbation("text_word_deletion", _DELETION_SHARES, word_deletion, "share of words"),
        TextPerturbation("text_word_repetition", _WORD_SHARES, word_repetition, "share of words"),
    )
}
assert tuple(PERTURBATIONS) == TEXT_PERTURBATIONS


def perturb(texts: Sequence[str] | np.ndarray, name: str, severity: int, *, seed: int = 0) -> np.ndarray:
    """A perturbed copy of ``texts`` (an (N,) object array of ``str``) at ``severity`` 1..5, seeded per
    (seed, perturbation, example)."""
    if name not in PERTURBATIONS:
        raise UsageError(f"Unknown text perturbation '{name}'. Known: {', '.join(PERTURBATIONS)}.")
    p = PERTURBATIONS[name]
    stream = list(PERTURBATIONS).index(name)
    out = np.empty(len(texts), dtype=object)
    for i, text in enumerate(texts):
        out[i] = p.fn(str(text), np.random.default_rng([seed, stream, i]), severity)
    return out


def evaluate_perturbations(
    predict: Callable[[np.ndarray], np.ndarray],
    texts: np.ndarray,
    y: np.ndarray,
    names: Sequence[str] | None = None,
    *,
    seed: int = 0,
) -> robustness.CorruptionResult:
    """Run ``predict`` (texts -> predicted labels) on the clean and every perturbed copy of ``texts``."""
    wanted = list(PERTURBATIONS) if names is None else list(names)
    y = np.asarray(y)
    clean = predict(np.asarray(texts, dtype=object)) == y
    corrupted = {
        name: np.stack([predict(perturb(texts, name, s, seed=seed)) == y for s in SEVERITIES])
        for name in wanted
    }
    return robustness.CorruptionResult(clean=clean, corrupted=corrupted)


def perturbation_measurements(
    result: robustness.CorruptionResult,
    baseline: robustness.CorruptionResult | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    details: dict[str, Any] | None = None,
) -> list[Measurement]:
    """The image corruptions' measurements (:func:`assay.metrics.robustness.corruption_measurements`)
    for text perturbations: accuracy per (perturbation, severity), mCA, and CE against ``baseline``."""
    return robustness.corruption_measurements(
        result, baseline, n_boot=n_boot, seed=seed, details=details, described=PERTURBATIONS
    )

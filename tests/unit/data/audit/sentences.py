"""Planted label noise, and labelled sentences generated from a seeded vocabulary (no downloads).

Used by the label-issue tests and by benchmarks/data_audit.py --labels, which sweeps the same generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def flip_labels(y: np.ndarray, share: float, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``y`` with ``share`` of its labels moved to another class (uniformly); and the mask of those."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(y), int(share * len(y)), replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, n_classes, len(flipped))) % n_classes
    mask = np.zeros(len(y), bool)
    mask[flipped] = True
    return noisy, mask


def vocabulary(size: int, seed: int = 0) -> list[str]:
    """``size`` distinct pseudo-words of two or three consonant-vowel syllables, in a seeded order."""
    rng = np.random.default_rng(seed)
    onsets, vowels = list("bdfghklmnprstvz"), list("aeiou")
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.integers(2, 4))))
    return [str(w) for w in rng.permutation(sorted(words))]


def topic_sentences(
    n: int,
    n_classes: int,
    topic_share: float,
    length: tuple[int, int],
    seed: int,
    topic_words: int = 30,
    common_words: int = 300,
) -> tuple[list[str], np.ndarray]:
    """``n`` short sentences, each about one of ``n_classes`` topics (its label): every word is one of the
    topic's own ``topic_words`` with probability ``topic_share``, else one of ``common_words`` shared words
    (Zipf-distributed, as function words are). A low ``topic_share`` makes features that say little."""
    words = vocabulary(n_classes * topic_words + common_words)
    topics = np.array(words[: n_classes * topic_words]).reshape(n_classes, topic_words)
    common = np.array(words[n_classes * topic_words :])
    zipf = 1.0 / np.arange(1, common_words + 1)
    zipf /= zipf.sum()
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    texts = []
    for label in y:
        size = int(rng.integers(length[0], length[1] + 1))
        topical = rng.random(size) < topic_share
        chosen = np.where(
            topical,
            topics[label][rng.integers(0, topic_words, size)],
            common[rng.choice(common_words, size, p=zipf)],
        )
        texts.append(" ".join(chosen))
    return texts, y.astype(np.int64)


def bag_of_words(texts: list[str], buckets: int = 128) -> np.ndarray:
    """Word counts hashed into ``buckets`` columns (scikit-learn's HashingVectorizer), float32."""
    from sklearn.feature_extraction.text import HashingVectorizer

    counts = HashingVectorizer(n_features=buckets, alternate_sign=False, norm=None).transform(texts)
    return np.asarray(counts.toarray(), dtype=np.float32)


@dataclass(frozen=True)
class NoisySentences:
    texts: list[str]
    x: np.ndarray  # bag-of-words counts, standardised as the table loader does
    labels: np.ndarray  # with the planted noise
    planted: np.ndarray  # mask of the flipped labels


def noisy_sentences(case: str) -> NoisySentences:
    """1,200 labelled sentences on 10 topics with 12% of the labels flipped. ``weak``: 6 to 10 words, one
    in ten topical (the quick model is barely better than the majority class; the case of issue 13, where
    54.5% of the labels were flagged); ``strong``: 10 to 14 words, eight in ten topical."""
    share, length = {"weak": (0.1, (6, 10)), "strong": (0.8, (10, 14))}[case]
    texts, y = topic_sentences(1200, 10, share, length, seed=0)
    counts = bag_of_words(texts)
    spread = counts.std(axis=0)
    x = (counts - counts.mean(axis=0)) / np.where(spread == 0, 1.0, spread)
    labels, planted = flip_labels(y, 0.12, 10, seed=100)
    return NoisySentences(texts, x.astype(np.float32), labels, planted)

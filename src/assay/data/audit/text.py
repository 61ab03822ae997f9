"""Text near duplicates (MinHash LSH with an exact Jaccard re-check) and n-gram overlap with a corpus.

- :func:`shingles`: the set of character ``k``-grams of a text, lower-cased, whitespace collapsed.
- :func:`minhash_pairs`: pairs whose shingle sets have Jaccard similarity at least a threshold. Candidates
  come from MinHash LSH (datasketch) tuned to a similarity 0.15 below the threshold; every candidate's Jaccard
  is then computed exactly on the sets, so a reported pair is never a false positive (LSH can still miss a
  pair, rarely: see docs/data-audit.md).
- :func:`ngram_overlap`: per text, the share of its word ``n``-grams found in a reference corpus.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from assay.data.audit.search import Pairs
from assay.errors import MissingExtraError

LSH_MARGIN = 0.15
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip()


def shingles(text: str, k: int = 5) -> set[str]:
    t = normalise(text)
    if len(t) <= k:
        return {t} if t else set()
    return {t[s : s + k] for s in range(len(t) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def minhash_pairs(
    texts: Sequence[object], threshold: float = 0.8, k: int = 5, permutations: int = 128, seed: int = 1
) -> Pairs:
    """Pairs ``i < j`` with exact Jaccard >= ``threshold`` of their character shingles; distance = 1 - J.
    Missing values (non-strings) and empty texts take part in no pair."""
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:  # pragma: no cover - datasketch is a dependency
        raise MissingExtraError("datasketch", "audit") from None
    sets = [shingles(t, k) if isinstance(t, str) else set() for t in texts]
    # The LSH bands are tuned to a lower similarity than asked for: more candidates, fewer pairs missed near
    # the threshold; the exact re-check below drops the candidates that fall short.
    lsh = MinHashLSH(threshold=max(0.05, threshold - LSH_MARGIN), num_perm=permutations)
    candidates: set[tuple[int, int]] = set()
    for index, s in enumerate(sets):
        if not s:
            continue
        m = MinHash(num_perm=permutations, seed=seed)
        m.update_batch([g.encode() for g in s])
        for other in lsh.query(m):
            candidates.add((int(other), index))
        lsh.insert(index, m)
    if not candidates:
        return Pairs.empty()
    i, j = (np.array(v, dtype=np.int64) for v in zip(*sorted(candidates), strict=True))
    similarity = np.array([jaccard(sets[a], sets[b]) for a, b in zip(i, j, strict=True)])
    keep = similarity >= threshold
    return Pairs(i[keep], j[keep], 1.0 - similarity[keep])


def word_ngrams(text: str, n: int) -> set[int]:
    words = _WORD.findall(text.lower())
    return {hash(" ".join(words[s : s + n])) for s in range(len(words) - n + 1)}


def ngram_overlap(
    texts: Sequence[object], reference: Sequence[str], n: int = 13
) -> tuple[np.ndarray, np.ndarray]:
    """Per text, the share of its word n-grams that occur in ``reference`` (NaN for texts shorter than n
    words), and whether it shares at least one."""
    corpus: set[int] = set()
    for doc in reference:
        corpus |= word_ngrams(doc, n)
    share = np.full(len(texts), np.nan)
    for index, t in enumerate(texts):
        grams = word_ngrams(t, n) if isinstance(t, str) else set()
        if grams:
            share[index] = len(grams & corpus) / len(grams)
    return share, np.nan_to_num(share, nan=0.0) > 0

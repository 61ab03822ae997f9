"""Length buckets: every index once an epoch, the same batches for the same seed and epoch, other
batches for another epoch, and less padding than random batches of the same size on skewed lengths."""

from __future__ import annotations

import numpy as np
import pytest

from assay.errors import UsageError
from assay.train.batching import length_buckets, padded_tokens


def skewed(n: int, seed: int = 0) -> np.ndarray:
    """Token lengths like a corpus of quotes: most short, a long tail (log-normal), 2 to 512."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(3.0, 0.9, n)), 2, 512).astype(np.int64)


@pytest.mark.parametrize(("n", "batch_size", "chunk"), [(1003, 16, 50), (7, 3, 1), (5, 8, 2), (0, 4, 50)])
def test_every_index_once_and_batches_no_larger_than_asked(n: int, batch_size: int, chunk: int) -> None:
    batches = length_buckets(skewed(n), batch_size, seed=1, epoch=0, chunk=chunk)
    flat = np.concatenate(batches) if batches else np.array([], dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(n))
    assert all(1 <= b.shape[0] <= batch_size for b in batches)
    # only the last batch of each chunk may be short
    assert sum(b.shape[0] < batch_size for b in batches) <= -(-n // (batch_size * chunk))


def test_deterministic_per_seed_and_epoch() -> None:
    lengths = skewed(500)

    def draw(seed: int, epoch: int) -> list[list[int]]:
        return [b.tolist() for b in length_buckets(lengths, 16, seed=seed, epoch=epoch)]

    assert draw(0, 3) == draw(0, 3)
    assert draw(0, 3) != draw(0, 4)  # a new epoch, new batches
    assert draw(0, 3) != draw(1, 3)


def test_batches_hold_similar_lengths_and_pad_less_than_random_batches() -> None:
    lengths, batch_size = skewed(4000), 32
    buckets = length_buckets(lengths, batch_size, seed=0, epoch=0)
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(lengths.shape[0])
    random_batches = [shuffled[i : i + batch_size] for i in range(0, lengths.shape[0], batch_size)]
    real = int(lengths.sum())
    waste_buckets = padded_tokens(lengths, buckets) - real
    waste_random = padded_tokens(lengths, random_batches) - real
    # Sorting 1,600 texts at a time leaves neighbours a token or two apart; random batches of 32 pad
    # to the longest of 32 draws from a long tail, several times the median length.
    assert waste_buckets < 0.1 * waste_random
    assert padded_tokens(lengths, buckets) >= real


def test_padded_tokens_counts_each_batch_at_its_longest() -> None:
    lengths = np.array([3, 5, 2, 9])
    assert padded_tokens(lengths, [np.array([0, 1]), np.array([2, 3])]) == 5 * 2 + 9 * 2


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(UsageError, match="batch_size"):
        length_buckets([1, 2], 0, seed=0, epoch=0)

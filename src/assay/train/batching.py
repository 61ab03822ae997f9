"""Length-bucketed batches for dynamic padding: each batch holds texts of similar length.

A batch of texts is padded to its longest member, so batches drawn at random from texts of skewed
lengths spend most of their compute on padding tokens. Sorting everything by length would waste none
but would give every epoch the same batches in the same order (short texts first), which biases the
optimiser. The middle way, as in fairseq's and Hugging Face's length-grouped samplers: shuffle the
indices with the epoch's seed, cut them into chunks of ``chunk`` batches, sort each chunk by length
and cut it into batches, then shuffle the order of all the batches. Batches hold similar lengths, their
order and membership change with the epoch, and every index is used exactly once an epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from assay.errors import UsageError

CHUNK = 50  # batches sorted together: larger pads less, smaller keeps more randomness in a batch


def length_buckets(
    lengths: Sequence[int] | np.ndarray, batch_size: int, *, seed: int, epoch: int, chunk: int = CHUNK
) -> list[np.ndarray]:
    """The index batches of one epoch: every index of ``lengths`` exactly once, each batch of at most
    ``batch_size`` indices of similar length, the same for the same ``seed`` and ``epoch``.

    Only the last batch of each chunk may be short. The generator is seeded with ``(seed, epoch)``, so a
    resumed run draws the batches the uninterrupted one would have."""
    if batch_size < 1 or chunk < 1:
        raise UsageError(f"batch_size ({batch_size}) and chunk ({chunk}) must be at least 1.")
    sizes = np.asarray(lengths, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(sizes.shape[0])
    batches: list[np.ndarray] = []
    span = batch_size * chunk
    for start in range(0, order.shape[0], span):
        part = order[start : start + span]
        part = part[np.argsort(sizes[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, part.shape[0], batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def padded_tokens(lengths: Sequence[int] | np.ndarray, batches: list[np.ndarray]) -> int:
    """Tokens the batches hold once each is padded to its longest text (real tokens included)."""
    sizes = np.asarray(lengths, dtype=np.int64)
    return int(sum(int(sizes[b].max()) * b.shape[0] for b in batches if b.shape[0]))

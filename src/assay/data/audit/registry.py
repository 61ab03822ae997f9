"""The audit-check registry and the context every check reads.

A check is a function ``run(context) -> list[Measurement]`` registered by name; it applies to image data,
table data or both. The functions that do the work are pure functions on arrays in the check modules
(:mod:`~assay.data.audit.search`, :mod:`~assay.data.audit.pii`, ...); a check adapts one to the context.
Work that several checks share (the pair search over all splits) is computed once, on first use, by the
:class:`AuditContext`. Plugins add checks with ``CHECKS.add(name, AuditCheck(...))`` or the entry-point
group ``assay.audit_check``; the contract test in tests/contract/test_audit_checks.py covers them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from assay.data.audit.config import AuditConfig
from assay.data.audit.inputs import AuditData
from assay.data.audit.search import Pairs, exact_pairs, flat, group_pairs, near_pairs, row_hashes
from assay.data.audit.text import minhash_pairs
from assay.measurement import Measurement
from assay.plugins import Registry


@dataclass(frozen=True)
class AuditCheck:
    name: str
    description: str
    run: Callable[[AuditContext], list[Measurement]]
    kinds: frozenset[str] = frozenset({"image", "table"})
    needs: str | None = None  # "reference" or "probs": skipped (with the reason) when absent


CHECKS: Registry[AuditCheck] = Registry[AuditCheck]("audit_check")


def register(
    name: str, description: str, kinds: tuple[str, ...] = ("image", "table"), needs: str | None = None
) -> Callable[[Callable[[AuditContext], list[Measurement]]], Callable[[AuditContext], list[Measurement]]]:
    def add(fn: Callable[[AuditContext], list[Measurement]]) -> Callable[[AuditContext], list[Measurement]]:
        CHECKS.add(name, AuditCheck(name, description, fn, frozenset(kinds), needs))
        return fn

    return add


@dataclass
class AuditContext:
    """The data, the thresholds and the inputs some checks need, with shared work cached."""

    data: AuditData
    config: AuditConfig = field(default_factory=AuditConfig)
    reference: AuditData | None = None  # a reference corpus for contamination
    reference_texts: list[str] | None = None
    probs: Mapping[str, np.ndarray] | None = None  # out-of-fold probabilities per split, if supplied
    extra: dict[str, Any] = field(default_factory=dict)  # what checks hand to the report (datasheet)

    @cached_property
    def order(self) -> list[str]:
        return list(self.data.splits)

    @cached_property
    def split_of(self) -> np.ndarray:
        """Split position (in :attr:`order`) of each row of the stacked splits."""
        return np.concatenate(
            [np.full(self.data.splits[name].n, k) for k, name in enumerate(self.order)]
        ).astype(np.int64)

    @cached_property
    def ids(self) -> np.ndarray:
        return np.concatenate([self.data.splits[name].ids for name in self.order])

    @cached_property
    def raw(self) -> np.ndarray:
        """Every split's inputs stacked, flattened to (N, D) float32 (a view of :attr:`images`)."""
        return flat(self.images)

    @cached_property
    def images(self) -> np.ndarray:
        """Every split's inputs stacked in their own shape, float32."""
        return np.concatenate([self.data.splits[name].x for name in self.order]).astype(
            np.float32, copy=False
        )

    @cached_property
    def space(self) -> tuple[np.ndarray, str]:
        """Rows compared for near duplicates, and what they are: pixels, a thumbnail, or features."""
        data = self.data
        if data.kind == "table":
            return self.raw, "standardised numeric features"
        if self.raw.shape[1] <= self.config.max_pixels:
            return self.raw, "pixels"
        return thumbnail(self.images), "32x32 area-averaged thumbnail"

    @cached_property
    def hashes(self) -> np.ndarray:
        if self._raw_table:
            return np.concatenate([frame_hashes(self.data.splits[name].frame) for name in self.order])
        return row_hashes(self.raw)

    @property
    def _raw_table(self) -> bool:
        return self.data.kind == "table" and all(s.frame is not None for s in self.data.splits.values())

    @cached_property
    def exact(self) -> Pairs:
        if self._raw_table:
            return hash_group_pairs(self.hashes)
        return exact_pairs(self.raw, self.hashes)

    @property
    def has_features(self) -> bool:
        """False for a table with no numeric column (text only): nothing to measure distances on."""
        return bool(self.raw.shape[1] > 0)

    @cached_property
    def near(self) -> Pairs:
        if not self.has_features:
            return Pairs.empty()
        rows, _ = self.space
        threshold = self.config.image_distance if self.data.kind == "image" else self.config.table_distance
        pairs = near_pairs(rows, threshold, components=self.config.components, seed=self.config.seed)
        others = self._other_column_hashes
        if others is not None:  # a near row of a table also has the same values in every other column
            pairs = pairs.select(others[pairs.i] == others[pairs.j])
        return pairs

    @cached_property
    def _other_column_hashes(self) -> np.ndarray | None:
        """Per stacked table row, a digest of its non-numeric columns (None without any)."""
        frames = [self.data.splits[name].frame for name in self.order]
        if self.data.kind != "table" or any(f is None for f in frames):
            return None
        numeric = set(self.data.feature_columns)
        columns = [c for c in frames[0].columns if str(c) not in numeric]  # type: ignore[union-attr]
        if not columns:
            return None
        return np.concatenate([frame_hashes(f[columns]) for f in frames])  # type: ignore[index]

    @cached_property
    def text_pairs(self) -> dict[str, Pairs]:
        """Per text column, near-duplicate texts over all splits stacked (MinHash LSH, exact Jaccard)."""
        c = self.config
        out = {}
        for column in self.data.text_columns:
            texts: list[object] = []
            for name in self.order:
                frame = self.data.splits[name].frame
                texts += frame[column].tolist() if frame is not None else [None] * self.data.splits[name].n
            out[column] = minhash_pairs(texts, c.text_jaccard, c.shingle, c.minhash_permutations, c.seed + 1)
        return out


def thumbnail(images: np.ndarray, size: int = 32) -> np.ndarray:
    """(N, C, H, W) -> (N, C*size*size): each channel area-averaged onto a size x size grid."""
    n, _, h, w = images.shape
    rows = np.minimum((np.arange(h) * size) // h, size - 1)
    cols = np.minimum((np.arange(w) * size) // w, size - 1)
    pool_h = np.zeros((size, h), np.float32)
    pool_h[rows, np.arange(h)] = 1
    pool_w = np.zeros((size, w), np.float32)
    pool_w[cols, np.arange(w)] = 1
    pool_h /= pool_h.sum(axis=1, keepdims=True)
    pool_w /= pool_w.sum(axis=1, keepdims=True)
    return (pool_h @ images.astype(np.float32) @ pool_w.T).reshape(n, -1)


def frame_hashes(frame: Any) -> np.ndarray:
    """BLAKE2b-128 of each raw table row (values as text, missing values as one marker)."""
    import hashlib

    if frame is None:
        raise ValueError("frame_hashes needs a table.")
    text = frame.astype(str).where(frame.notna(), "\x00<NA>").to_numpy()
    return np.array(
        [hashlib.blake2b("\x1f".join(row).encode(), digest_size=16).digest() for row in text], dtype="S16"
    )


def hash_group_pairs(hashes: np.ndarray) -> Pairs:
    """All pairs ``i < j`` with equal digests (rows whose every value reads the same), distance 0."""
    i, j = group_pairs(hashes)
    return Pairs(i, j, np.zeros(len(i)))

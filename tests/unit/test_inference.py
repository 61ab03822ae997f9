from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from assay.data import Split
from assay.inference import infer
from tests.unit.tolerances import U64, assert_within, gamma


class CountingPredictor:
    """A linear 'model' that counts its calls, so a test can see whether the cache was used."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0
        self.w = np.random.default_rng(0).normal(size=(6, 3))

    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        self.calls += 1
        return x @ self.w, x


def split(n: int = 50) -> Split:
    rng = np.random.default_rng(1)
    return Split(rng.random((n, 6), dtype=np.float32), rng.integers(0, 3, n), np.arange(n).astype(str))


def test_outputs_are_computed_once_and_cached(tmp_path: Path) -> None:
    p, s = CountingPredictor(), split()
    first = infer(p, s, batch_size=20, cache_dir=tmp_path, model_digest="abc")
    assert p.calls == 3  # 50 examples in batches of 20
    again = infer(p, s, batch_size=20, cache_dir=tmp_path, model_digest="abc")
    assert p.calls == 3  # served from the cache
    np.testing.assert_array_equal(again.probs, first.probs)
    assert again.features is not None and again.features.shape == (50, 6)
    # Float64 dot products of 6 terms, in batches of 20 or all at once (BLAS may pick another kernel, and
    # another order, for another shape): each within gamma(6) (|x| @ |w|) of the exact value.
    x = s.x.astype(np.float64)
    bound = 2 * gamma(6, U64) * (np.abs(x) @ np.abs(p.w))
    assert_within(first.logits, x @ p.w, bound, "the cached logits")  # type: ignore[arg-type]


def test_a_different_model_split_or_grouping_misses_the_cache(tmp_path: Path) -> None:
    p, s = CountingPredictor(), split()
    infer(p, s, cache_dir=tmp_path, model_digest="abc")
    infer(p, s, cache_dir=tmp_path, model_digest="def")
    infer(p, replace(s, groups=np.array(["g"] * s.n)), cache_dir=tmp_path, model_digest="abc")
    assert p.calls == 3 and len(list(tmp_path.glob("*.npz"))) == 3


def test_a_corrupt_cache_entry_is_recomputed(tmp_path: Path) -> None:
    p, s = CountingPredictor(), split()
    infer(p, s, cache_dir=tmp_path, model_digest="abc")
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"truncated")
    out = infer(p, s, cache_dir=tmp_path, model_digest="abc")
    assert p.calls == 2 and out.n == 50

"""The pair search against brute force and scikit-learn, and pHash against the imagehash package."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.neighbors import NearestNeighbors

from assay.data.audit.phash import correlation, hamming, hash_pairs, phash
from assay.data.audit.search import exact_pairs, near_pairs, row_hashes
from assay.errors import UsageError

from .conftest import smooth_images


def _sklearn_pairs(
    a: np.ndarray, threshold: float, b: np.ndarray | None = None
) -> dict[tuple[int, int], float]:
    """Reference: scikit-learn's exact radius neighbours (Euclidean), converted to RMS."""
    fa = a.reshape(len(a), -1).astype(np.float64)
    fb = fa if b is None else b.reshape(len(b), -1).astype(np.float64)
    radius = threshold * np.sqrt(fa.shape[1])
    nn = NearestNeighbors(radius=radius, algorithm="brute").fit(fb)
    distances, indices = nn.radius_neighbors(fa)
    out = {}
    for i, (ds, js) in enumerate(zip(distances, indices, strict=True)):
        for d, j in zip(ds, js, strict=True):
            if b is None and j <= i:
                continue
            out[(i, int(j))] = d / np.sqrt(fa.shape[1])
    return out


def _planted_set(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = smooth_images(n, seed)
    for k in range(0, 40, 2):  # 20 near copies at increasing noise, straddling the threshold
        x[k + 1] = np.clip(x[k] + rng.normal(0, 0.001 * (k + 1), x[k].shape), 0, 1)
    return x


@pytest.mark.parametrize("components", [4, 64, 1000])
def test_near_pairs_match_sklearn_radius_neighbours(components: int) -> None:
    x = _planted_set(300, 3)
    ours = near_pairs(x, 0.03, components=components)
    reference = _sklearn_pairs(x, 0.03)
    assert 10 <= len(reference) < 20  # some planted copies lie within the threshold, some beyond
    assert {(int(i), int(j)) for i, j in zip(ours.i, ours.j, strict=True)} == set(reference)
    for i, j, d in zip(ours.i, ours.j, ours.distance, strict=True):
        assert d == pytest.approx(reference[(int(i), int(j))], rel=1e-5, abs=1e-7)
        assert i < j


def test_near_pairs_between_two_sets_match_sklearn() -> None:
    a, b = smooth_images(150, 4), smooth_images(200, 5)
    b[:12] = np.clip(a[30:42] + np.random.default_rng(0).normal(0, 0.008, a[30:42].shape), 0, 1)
    ours = near_pairs(a, 0.02, b)
    reference = _sklearn_pairs(a, 0.02, b)
    assert {(int(i), int(j)) for i, j in zip(ours.i, ours.j, strict=True)} == set(reference)
    assert {(30 + k, k) for k in range(12)} <= set(reference)


def test_exact_pairs_are_the_identical_rows() -> None:
    x = smooth_images(50, 6)
    x[40] = x[3]
    x[41] = x[3]
    x[45] = x[7]
    x[46] = x[7] + np.float32(1e-7)  # not identical: one value differs in the last bit
    pairs = exact_pairs(x)
    assert {(int(i), int(j)) for i, j in zip(pairs.i, pairs.j, strict=True)} == {
        (3, 40),
        (3, 41),
        (40, 41),
        (7, 45),
    }
    assert (pairs.distance == 0).all()
    assert len(set(row_hashes(x).tolist())) == 50 - 3


def test_too_loose_a_threshold_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("assay.data.audit.search.MAX_CANDIDATES", 100)
    with pytest.raises(UsageError, match="too loose"):
        near_pairs(smooth_images(100, 0), 1.0)


def test_phash_equals_imagehash_on_32x32_images() -> None:
    imagehash = pytest.importorskip("imagehash")
    x = smooth_images(20, 8, size=32)
    grey = np.rint(x[:, 0] * 255).astype(np.uint8)
    ours = phash(grey.astype(np.float64)[:, None])
    for k in range(len(grey)):
        theirs = imagehash.phash(Image.fromarray(grey[k], mode="L"))
        bits = theirs.hash.flatten()
        expected = int("".join("1" if b else "0" for b in bits), 2)
        assert int(ours[k]) == expected


def test_phash_ignores_brightness_and_contrast() -> None:
    x = smooth_images(30, 9, size=28)
    changed = 0.5 * x + 0.4
    assert (hamming(phash(x), phash(changed)) <= 2).all()
    rms = np.sqrt(((x - changed) ** 2).mean(axis=(1, 2, 3)))
    assert rms.min() > 0.05  # far apart in pixels
    np.testing.assert_allclose(correlation(x, changed), 1.0, atol=1e-6)


def test_hash_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(10)
    base = rng.integers(0, 2**63, 60, dtype=np.int64).astype(np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, (60, 3)).astype(np.uint64)
    near = base ^ flips[:, 0] ^ np.where(np.arange(60)[:, None] % 2 == 0, flips[:, 1:2], np.uint64(0)).ravel()
    hashes = np.concatenate([base, near])
    for bits in (0, 1, 2, 3):
        ours = hash_pairs(hashes, bits)
        d = hamming(hashes[:, None], hashes[None, :])
        ii, jj = np.nonzero(np.triu(d <= bits, k=1))
        assert {(int(i), int(j)) for i, j in zip(ours.i, ours.j, strict=True)} == set(
            zip(ii.tolist(), jj.tolist(), strict=True)
        )
        assert (ours.distance == d[ours.i, ours.j]).all()

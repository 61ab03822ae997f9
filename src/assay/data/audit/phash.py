"""Perceptual hashes of images: the 64-bit DCT pHash, vectorised over a whole split.

pHash (as in the ``imagehash`` package): the grey image resized to 32x32, its 2-D type-II DCT, the 8x8
lowest frequencies, each bit set where a coefficient exceeds their median. Resizing and the DCT rows are
one (8, W) and one (8, H) matrix, so a split hashes with two matrix products. Resizing here is bilinear
(pixel centres aligned), where imagehash uses Pillow's Lanczos filter: hashes of one image agree exactly
when it is already 32x32, and within a few bits otherwise.

Because the median splits the 64 coefficients in two halves, pHash ignores changes of brightness and
contrast: a copy with its levels changed keeps (nearly) the same hash where its pixel distance is large.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import fft

from assay.data.audit.search import Pairs

HASH_SIZE = 8
RESIZED = 32


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation with pixel centres aligned (half-pixel offsets)."""
    matrix = np.zeros((n_out, n_in))
    if n_in == n_out:
        return np.eye(n_in)
    position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    weight = position - low
    np.add.at(matrix, (np.arange(n_out), low), 1 - weight)
    np.add.at(matrix, (np.arange(n_out), high), weight)
    return matrix


def phash(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) images -> (N,) uint64 pHashes (bit 63 = the DC coefficient)."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 4:
        x = x.mean(axis=1)  # grey: the mean over channels
    if x.ndim != 3:
        raise ValueError(f"Images must be (N, H, W) or (N, C, H, W); got shape {images.shape}.")
    dct_rows = fft.dct(np.eye(RESIZED), axis=0)[:HASH_SIZE]  # (8, 32): dct(v)[:8] = dct_rows @ v
    left = dct_rows @ _resize_matrix(x.shape[1], RESIZED)  # (8, H)
    right = dct_rows @ _resize_matrix(x.shape[2], RESIZED)  # (8, W)
    coefficients = (left @ x @ right.T).reshape(x.shape[0], HASH_SIZE * HASH_SIZE)
    bits = coefficients > np.median(coefficients, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of paired uint64 hashes."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def hash_pairs(hashes: np.ndarray, max_bits: int) -> Pairs:
    """All pairs ``i < j`` whose hashes differ in at most ``max_bits`` bits (distance = bits).

    Pigeonhole: split 64 bits into ``max_bits + 1`` bands; two hashes within ``max_bits`` agree on at least
    one band, so pairs sharing a band value are the candidates, and each is re-checked on all 64 bits.
    """
    n_bands = max_bits + 1
    edges = np.linspace(0, 64, n_bands + 1).astype(int)
    candidates: list[np.ndarray] = []
    for lo, hi in itertools.pairwise(edges):
        band = (hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(band, kind="stable")
        sorted_band = band[order]
        starts = np.flatnonzero(np.r_[True, sorted_band[1:] != sorted_band[:-1]])
        sizes = np.diff(np.r_[starts, len(band)])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
            members = np.sort(order[start : start + size])
            a, b = np.triu_indices(size, k=1)
            candidates.append(members[a] * len(hashes) + members[b])
    if not candidates:
        return Pairs.empty()
    keys = np.unique(np.concatenate(candidates))
    i, j = keys // len(hashes), keys % len(hashes)
    bits = hamming(hashes[i], hashes[j])
    keep = bits <= max_bits
    return Pairs(i[keep].astype(np.int64), j[keep].astype(np.int64), bits[keep].astype(np.float64))


def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of paired flattened images (1 where both are constant and equal)."""
    out = np.empty(a.shape[0])
    for s in range(0, a.shape[0], 16384):
        u = a[s : s + 16384].reshape(min(16384, a.shape[0] - s), -1).astype(np.float64)
        v = b[s : s + 16384].reshape(u.shape[0], -1).astype(np.float64)
        u -= u.mean(axis=1, keepdims=True)
        v -= v.mean(axis=1, keepdims=True)
        nu, nv = np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (u * v).sum(axis=1) / (nu * nv)
        r[(nu == 0) & (nv == 0)] = 1.0
        out[s : s + u.shape[0]] = np.nan_to_num(r, nan=0.0)
    return out

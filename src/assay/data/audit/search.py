"""Exact and near-duplicate search on arrays: the engine of the duplicate, leakage and contamination checks.

- :func:`row_hashes`: a 128-bit BLAKE2b digest of each row's canonical bytes (little-endian float32).
- :func:`exact_pairs`: every pair of rows with equal digests, each checked by comparing the bytes.
- :func:`near_pairs`: every pair of rows whose root-mean-square difference is at most a threshold.

:func:`near_pairs` is exact, not approximate. Rows are projected on their leading principal components;
an orthonormal projection never lengthens a distance, so every pair within the threshold is also within
it in the projection. The projected pairs are found with a blocked matrix product (float32, with a
rounding allowance), and every candidate is then re-measured in the full space in float64: what comes
back is exactly the set of pairs within the threshold, each with its true distance.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np

from assay.errors import UsageError

_ROWS, _COLS = 1024, 8192  # tile of the candidate search: 8M float32 distances (32 MiB) at a time
MAX_CANDIDATES = 5_000_000  # more candidate pairs than this means the threshold is far too loose


@dataclass(frozen=True)
class Pairs:
    """Index pairs ``(i[k], j[k])`` with ``i < j`` (one set) or into two sets, and their distances."""

    i: np.ndarray  # int64
    j: np.ndarray  # int64
    distance: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.i.shape[0])

    @classmethod
    def empty(cls) -> Pairs:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))

    def select(self, mask: np.ndarray) -> Pairs:
        return Pairs(self.i[mask], self.j[mask], self.distance[mask])


def flat(x: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, D) float32, contiguous."""
    return np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float32)


def row_hashes(x: np.ndarray) -> np.ndarray:
    """BLAKE2b-128 of each row's little-endian float32 bytes, as an (N,) array of 16-byte strings."""
    rows = np.ascontiguousarray(flat(x), dtype="<f4")
    return np.array([hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows], dtype="S16")


def group_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``i < j`` with ``keys[i] == keys[j]``."""
    _, inverse = np.unique(keys, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.r_[True, inverse[order][1:] != inverse[order][:-1], True])
    i_list: list[np.ndarray] = [np.zeros(0, np.int64)]
    j_list: list[np.ndarray] = [np.zeros(0, np.int64)]
    for start, stop in itertools.pairwise(bounds):
        if stop - start > 1:
            members = order[start:stop]  # ascending: the sort is stable
            a, b = np.triu_indices(int(stop - start), k=1)
            i_list.append(members[a])
            j_list.append(members[b])
    return np.concatenate(i_list).astype(np.int64), np.concatenate(j_list).astype(np.int64)


def exact_pairs(x: np.ndarray, hashes: np.ndarray | None = None) -> Pairs:
    """All pairs ``i < j`` of identical rows (equal digests, confirmed byte for byte), distance 0."""
    hashes = row_hashes(x) if hashes is None else hashes
    i, j = group_pairs(hashes)
    rows = flat(x)
    same = (rows[i] == rows[j]).all(axis=1) if len(i) else np.zeros(0, bool)  # a digest collision fails here
    return Pairs(i[same], j[same], np.zeros(int(same.sum())))


def _projection(x: np.ndarray, components: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and an orthonormal (D, k) basis of the leading principal components of a row sample (eigenvectors
    of its covariance): any orthonormal basis keeps the search exact, a good one keeps it fast."""
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= 10_000 else x[rng.choice(len(x), 10_000, replace=False)]
    mean = sample.mean(axis=0, dtype=np.float64).astype(np.float32)
    if x.shape[1] <= components:
        return mean, np.eye(x.shape[1], dtype=np.float32)
    centred = (sample - mean).astype(np.float64)
    if centred.shape[0] < centred.shape[1]:  # fewer rows than columns: the thin SVD is the cheaper route
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        basis = vt[:components].T
    elif centred.shape[1] > 1024:  # wide rows: a randomised SVD finds the leading components quickly
        from sklearn.utils.extmath import randomized_svd

        _, _, vt = randomized_svd(centred, components, random_state=seed)
        basis = vt.T
    else:
        _, vectors = np.linalg.eigh(centred.T @ centred)
        basis = vectors[:, ::-1][:, :components]
    return mean, np.ascontiguousarray(basis, dtype=np.float32)


def _rms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square difference of paired rows, in float64, in chunks."""
    out = np.empty(a.shape[0], np.float64)
    for s in range(0, a.shape[0], 65536):
        d = a[s : s + 65536].astype(np.float64) - b[s : s + 65536]
        out[s : s + 65536] = np.sqrt((d * d).mean(axis=1))
    return out


def near_pairs(
    x: np.ndarray,
    threshold: float,
    y: np.ndarray | None = None,
    *,
    components: int = 64,
    seed: int = 0,
) -> Pairs:
    """Every pair with root-mean-square difference ``<= threshold``: within ``x`` (``i < j``), or between
    rows of ``x`` (``i``) and rows of ``y`` (``j``). Exact: see the module docstring."""
    a = flat(x)
    b = a if y is None else flat(y)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return Pairs.empty()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Rows of {a.shape[1]} and {b.shape[1]} values cannot be compared.")
    dims = a.shape[1]
    radius = threshold * np.sqrt(dims)
    mean, basis = _projection(a if y is None else np.concatenate([a, b]), components, seed)
    # Sort both sets by the length of their centred rows: |‖a‖ − ‖b‖| <= ‖a − b‖, so a row can only be
    # within the radius of rows whose length is within the radius of its own, a window of the sorted order.
    len_a = np.linalg.norm(a - mean, axis=1)
    len_b = len_a if y is None else np.linalg.norm(b - mean, axis=1)
    order_a = np.argsort(len_a, kind="stable")
    order_b = order_a if y is None else np.argsort(len_b, kind="stable")
    sa, sb = len_a[order_a], len_b[order_b]
    za = (a[order_a] - mean) @ basis
    zb = za if y is None else (b[order_b] - mean) @ basis
    na, nb = (za * za).sum(axis=1), (zb * zb).sum(axis=1)
    # float32 cancellation in |a|² + |b|² − 2ab is about 1e-6 of the norms: allow 4e-6 of the largest
    # possible sum (a per-row bound), and re-check every candidate in float64 below.
    bound = radius * radius + 4e-6 * (na + nb.max()) + 1e-6
    slack = 1e-4 * (1.0 + sb[-1])  # float32 rounding of the lengths themselves
    i_list: list[np.ndarray] = [np.zeros(0, np.int64)]
    j_list: list[np.ndarray] = [np.zeros(0, np.int64)]
    found = 0
    for r0 in range(0, za.shape[0], _ROWS):
        r1 = min(r0 + _ROWS, za.shape[0])
        lo = int(np.searchsorted(sb, sa[r0] - radius - slack, side="left"))
        hi = int(np.searchsorted(sb, sa[r1 - 1] + radius + slack, side="right"))
        if y is None:
            lo = max(lo, r0)  # within one set, the upper triangle of the sorted order suffices
        for c0 in range(lo, hi, _COLS):
            c1 = min(c0 + _COLS, hi)
            tile = za[r0:r1] @ zb[c0:c1].T
            tile *= -2.0
            tile += na[r0:r1, None]
            tile += nb[None, c0:c1]
            hit = tile <= bound[r0:r1, None]
            some = np.flatnonzero(hit.any(axis=1))  # hits are rare: look for them in those rows alone
            rows, cols = np.nonzero(hit[some])
            rows = some[rows] + r0
            cols += c0
            if y is None:
                upper = cols > rows
                rows, cols = rows[upper], cols[upper]
            i_list.append(order_a[rows])
            j_list.append(order_b[cols])
            found += rows.shape[0]
            if found > MAX_CANDIDATES:
                raise UsageError(
                    f"More than {MAX_CANDIDATES:,} pairs lie within a distance of {threshold}: the threshold "
                    "is far too loose for near duplicates. Lower it."
                )
    i, j = np.concatenate(i_list).astype(np.int64), np.concatenate(j_list).astype(np.int64)
    if y is None:  # report each pair once with i < j
        i, j = np.minimum(i, j), np.maximum(i, j)
    distance = _rms(a[i], b[j])
    keep = distance <= threshold
    return Pairs(i[keep], j[keep], distance[keep])

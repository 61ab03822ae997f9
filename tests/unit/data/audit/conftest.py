"""Small seeded data with planted defects for the audit checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.datasets import load_digits

from assay.data.audit import AuditData


def smooth_images(n: int, seed: int, size: int = 16) -> np.ndarray:
    """(n, 1, size, size) images in [0, 1]: random blobs, far apart from each other in pixel space."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    centres = rng.uniform(-0.7, 0.7, (n, 3, 2))
    widths = rng.uniform(0.15, 0.4, (n, 3))
    x = np.zeros((n, size, size))
    for k in range(3):
        d2 = (yy[None] - centres[:, k, 0, None, None]) ** 2 + (xx[None] - centres[:, k, 1, None, None]) ** 2
        x += np.exp(-d2 / (2 * widths[:, k, None, None] ** 2))
    x = 0.1 + 0.8 * x / x.max(axis=(1, 2), keepdims=True)
    return x[:, None].astype(np.float32)


@dataclass(frozen=True)
class Planted:
    data: AuditData
    exact: set[tuple[str, str]]  # (test id, train id)
    near: set[tuple[str, str]]
    brightness: set[tuple[str, str]]
    within_train: set[tuple[str, str]]  # (later train id, earlier train id)


@pytest.fixture
def planted() -> Planted:
    """300 train, 100 test blobs; 5 test images copied from train exactly, 5 with noise (RMS ~0.01),
    3 with changed brightness and contrast, and 4 exact repeats inside train."""
    rng = np.random.default_rng(7)
    train, test = smooth_images(300, 1), smooth_images(100, 2)
    y_train, y_test = rng.integers(0, 3, 300), rng.integers(0, 3, 100)
    exact, near, bright, within = set(), set(), set(), set()
    for k in range(5):
        test[k] = train[10 + k]
        exact.add((f"test-{k}", f"train-{10 + k}"))
    for k in range(5, 10):
        test[k] = np.clip(train[20 + k] + rng.normal(0, 0.01, train[0].shape), 0, 1)
        near.add((f"test-{k}", f"train-{20 + k}"))
    for k in range(10, 13):
        test[k] = 0.6 * train[40 + k] + 0.3  # levels changed: far in pixels, same pHash, correlation 1
        bright.add((f"test-{k}", f"train-{40 + k}"))
    for k in range(4):
        train[200 + k] = train[100 + k]
        within.add((f"train-{200 + k}", f"train-{100 + k}"))
    data = AuditData.from_arrays(
        {"train": (train, y_train), "test": (test, y_test)}, name="planted", class_names=["a", "b", "c"]
    )
    return Planted(data, exact, near, bright, within)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits as (N, 1, 8, 8) images in [0, 1]."""
    bunch = load_digits()
    return (bunch.images / 16.0)[:, None].astype(np.float32), bunch.target.astype(np.int64)

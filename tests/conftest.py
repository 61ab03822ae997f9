"""Shared fixtures. Every test gets its own store folder, so nothing touches ./.assay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assay.data.sources import FASHION_MNIST_DIR


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "assay-home"
    monkeypatch.setenv("ASSAY_HOME", str(home))
    monkeypatch.delenv("ASSAY_DB_URL", raising=False)
    return home


@pytest.fixture
def image_npz(tmp_path: Path) -> Path:
    """A small, learnable 3-class image set: each class is a bright bar in a different place, plus noise."""
    rng = np.random.default_rng(0)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        x = rng.uniform(0, 0.3, (n, 12, 12)).astype(np.float32)
        for cls in range(3):
            x[y == cls, 4 * cls : 4 * cls + 4, :] += 0.6
        return np.clip(x, 0, 1), y

    x_train, y_train = make(600)
    x_test, y_test = make(300)
    path = tmp_path / "bars.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (make setup installs it)",
)

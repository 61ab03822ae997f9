"""Shared fixtures. Every test gets its own store folder, so nothing touches ./.assay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assay.data.sources import FASHION_MNIST_DIR

# The xdist group of the tests that keep both cores busy for minutes (a local Ray cluster, SmolLM2's
# gate). `make test` runs pytest with --dist loadgroup, so they run one after another on one worker while
# the other worker takes the rest; side by side they took twice as long as alone.
BOTH_CORES = "both-cores"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "assay-home"
    monkeypatch.setenv("ASSAY_HOME", str(home))
    monkeypatch.delenv("ASSAY_DB_URL", raising=False)
    return home


def make_bars(
    rng: np.random.Generator, n: int, *, noise: float = 0.3, bar: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 12x12 images of 3 classes: a bright horizontal bar in one of three places, plus noise."""
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, noise, (n, 12, 12)).astype(np.float32)
    for cls in range(3):
        x[y == cls, 4 * cls : 4 * cls + 4, :] += bar
    return np.clip(x, 0, 1), y


def write_bars(path: Path, n_train: int, n_test: int, **options: float) -> Path:
    rng = np.random.default_rng(0)
    x_train, y_train = make_bars(rng, n_train, **options)
    x_test, y_test = make_bars(rng, n_test, **options)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture
def image_npz(tmp_path: Path) -> Path:
    """A small, learnable 3-class image set: each class is a bright bar in a different place, plus noise."""
    return write_bars(tmp_path / "bars.npz", 600, 300)


needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (make setup installs it)",
)

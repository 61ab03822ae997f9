"""A tiny learnable image task and a small CNN trained on it, shared by the compression tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assay.compress import Context
from assay.data import Dataset, DataSpec, load_dataset, parse_data_arg
from assay.models import ZooModel, build_model, default_spec
from assay.train import TrainConfig, train
from assay.train.loop import seed_everything

TINY_CNN = {"channels": [8, 16], "hidden": 32, "dropout": 0.0}


def bars(path: Path, seed: int = 0) -> Path:
    """Three classes of 12x12 images: a bright horizontal bar in one of three places, plus noise."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        x = rng.uniform(0, 0.4, (n, 12, 12)).astype(np.float32)
        for cls in range(3):
            x[y == cls, 4 * cls : 4 * cls + 4, :] += 0.5
        return np.clip(x, 0, 1), y

    x_train, y_train = make(900)
    x_test, y_test = make(400)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture(scope="session")
def bars_spec(tmp_path_factory: pytest.TempPathFactory) -> DataSpec:
    return parse_data_arg(f"npz:{bars(tmp_path_factory.mktemp('bars') / 'bars.npz')}")


@pytest.fixture(scope="session")
def bars_data(bars_spec: DataSpec) -> Dataset:
    return load_dataset(bars_spec)


@pytest.fixture(scope="session")
def tiny_cnn(bars_data: Dataset) -> ZooModel:
    spec = default_spec("cnn", bars_data.input_shape, bars_data.n_classes, TINY_CNN)
    seed_everything(0)
    return train(build_model(spec), bars_data, TrainConfig(epochs=4, precision="fp32"), progress=False).model


@pytest.fixture(scope="session")
def ctx(bars_data: Dataset) -> Context:
    """One context for the session, so each model is exported to ONNX once (as within a search)."""
    return Context(bars_data, finetune_epochs=1)

"""A tiny learnable image task and a small CNN trained on it, shared by the compression tests."""

from __future__ import annotations

import pytest

from assay.compress import Context
from assay.data import Dataset, DataSpec, load_dataset, parse_data_arg
from assay.models import ZooModel, build_model, default_spec
from assay.train import TrainConfig, train
from assay.train.loop import seed_everything
from tests.conftest import write_bars

TINY_CNN = {"channels": [8, 16], "hidden": 32, "dropout": 0.0}


@pytest.fixture(scope="session")
def bars_spec(tmp_path_factory: pytest.TempPathFactory) -> DataSpec:
    # Noisier than the shared fixture, so that compression can visibly change predictions.
    path = write_bars(tmp_path_factory.mktemp("bars") / "bars.npz", 900, 400, noise=0.4, bar=0.5)
    return parse_data_arg(f"npz:{path}")


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

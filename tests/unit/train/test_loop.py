from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from assay.data import load_dataset, parse_data_arg
from assay.env import cpu_supports_bf16
from assay.errors import TrainingError, UsageError
from assay.models import build_model, default_spec
from assay.train import TrainConfig, train
from assay.train.loop import resolve_precision, seed_everything


@pytest.fixture
def bars(image_npz: Path):  # type: ignore[no-untyped-def]
    return load_dataset(parse_data_arg(f"npz:{image_npz}"))


def test_learns_and_leaves_the_input_untouched(bars) -> None:  # type: ignore[no-untyped-def]
    model = build_model(
        default_spec("cnn", bars.input_shape, bars.n_classes, {"channels": [4], "hidden": 16})
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, bars, TrainConfig(epochs=3, batch_size=32, precision="fp32"), progress=False)
    assert result.history["val_accuracy"][result.best_epoch - 1] > 0.9  # chance is 1/3
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert result.energy.joules > 0 and result.energy.method in ("measured", "estimated")
    assert result.environment["seeds"] == {"train": 0}


def test_deterministic_with_a_seed(bars) -> None:  # type: ignore[no-untyped-def]
    spec = default_spec("mlp", bars.input_shape, bars.n_classes, {"hidden": [16]})
    runs = []
    for _ in range(2):
        seed_everything(3)  # the initial weights too
        runs.append(
            train(
                build_model(spec),
                bars,
                TrainConfig(epochs=2, batch_size=64, precision="fp32", seed=3),
                progress=False,
            )
        )
    for key, value in runs[0].model.state_dict().items():
        assert torch.equal(value, runs[1].model.state_dict()[key])
    assert runs[0].history == runs[1].history


def test_early_stopping_keeps_the_best_epoch(bars) -> None:  # type: ignore[no-untyped-def]
    spec = default_spec("mlp", bars.input_shape, bars.n_classes, {"hidden": [64]})
    # A large learning rate on a tiny set overfits quickly: validation loss turns up and training stops.
    result = train(
        build_model(spec),
        bars,
        TrainConfig(epochs=30, batch_size=16, lr=0.05, patience=2, precision="fp32"),
        progress=False,
    )
    losses = result.history["val_loss"]
    assert result.epochs_run < 30
    assert losses[result.best_epoch - 1] == min(losses)
    assert result.epochs_run - result.best_epoch == 2


def test_precision_resolution() -> None:
    assert resolve_precision("fp32") == "fp32"
    assert resolve_precision("auto") == ("bf16" if cpu_supports_bf16() else "fp32")
    if not cpu_supports_bf16():
        with pytest.raises(UsageError, match="no native bf16"):
            resolve_precision("bf16")


@pytest.mark.skipif(not cpu_supports_bf16(), reason="CPU has no native bf16")
def test_bf16_trains_too(bars) -> None:  # type: ignore[no-untyped-def]
    model = build_model(
        default_spec("cnn", bars.input_shape, bars.n_classes, {"channels": [4], "hidden": 16})
    )
    result = train(model, bars, TrainConfig(epochs=2, batch_size=32, precision="bf16"), progress=False)
    assert result.precision == "bf16"
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast keeps fp32 weights
    assert max(result.history["val_accuracy"]) > 0.9


def test_divergence_raises_instead_of_returning_random_weights(bars) -> None:  # type: ignore[no-untyped-def]
    spec = default_spec("mlp", bars.input_shape, bars.n_classes, {"hidden": [16]})
    config = TrainConfig(epochs=3, batch_size=32, lr=1e12, precision="fp32")
    with pytest.raises(TrainingError, match=r"Training diverged: .*lr=1e\+12"):
        train(build_model(spec), bars, config, progress=False)


def test_unknown_training_options_are_refused() -> None:
    with pytest.raises(ValidationError, match="epoch"):
        TrainConfig.model_validate({"epoch": 1})

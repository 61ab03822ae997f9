"""The inference copy (BatchNorm folded, channels-last) computes the module's function and leaves it alone;
the server falls back to the stored predictor when a copy disagrees."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from assay.models import build_model, default_spec, save_model
from assay.models.adapters import load_artifact
from assay.models.loaded import LoadedModel
from assay.models.predictor import FastTorchPredictor, TorchPredictor, _fold_batchnorm, inference_copy
from assay.serve.served import serving_predictor
from tests.unit.tolerances import U64, assert_same_decisions, assert_within, network_forward


def _trained_looking_cnn() -> nn.Module:
    """A CNN whose BatchNorms have non-trivial statistics and affine terms, as after training."""
    torch.manual_seed(0)
    model = build_model(default_spec("cnn", (1, 28, 28), 10))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.normal_(1, 0.3)
            m.bias.data.normal_(0, 0.3)
    return model.eval()


def test_the_copy_computes_the_modules_logits_and_features() -> None:
    model = _trained_looking_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = np.random.default_rng(1).random((64, 1, 28, 28), dtype=np.float32)
    want_logits, want_features = TorchPredictor(model).logits_and_features(x)
    fast = FastTorchPredictor(model)
    logits, features = fast.logits_and_features(x)
    # Each float32 computation (the copy's folded channels-last kernels, the module's) lies within the
    # float32 rounding bound of the module's function computed in float64 (tests/unit/tolerances.py); the
    # same holds on any CPU, whose kernels sum in another order.
    ref = network_forward(model, x)
    for who, (lg, ft) in {"copy": (logits, features), "module": (want_logits, want_features)}.items():
        assert_within(lg, ref.logits, ref.logits_bound, f"the {who}'s logits")
        assert_within(ft, ref.features, ref.features_bound, f"the {who}'s features")
    assert_same_decisions(ref.logits, ref.logits_bound, logits, want_logits, max_undecided=0.02)
    # The same function, not only nearby numbers: in float64 the copy is the module to float64 rounding
    # (a fold that dropped BatchNorm's eps, 1e-5 of the variance, would show 1e8 times over).
    exact = network_forward(model, x, u=U64)
    logits64, features64 = FastTorchPredictor(copy.deepcopy(model).double()).logits_and_features(
        x.astype(np.float64)
    )
    assert_within(logits64, exact.logits, exact.logits_bound, "the float64 copy's logits")
    assert_within(features64, exact.features, exact.features_bound, "the float64 copy's features")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())  # all folded
    conv = next(m for m in fast.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for name, tensor in model.state_dict().items():  # the caller's module is untouched
        assert torch.equal(tensor, before[name]) and tensor.is_contiguous(), name


def test_only_a_batchnorm_right_after_a_convolution_is_folded() -> None:
    holder = nn.Module()
    holder.body = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)
    )
    holder.eval()
    _fold_batchnorm(holder)
    kinds = [type(m).__name__ for m in holder.body]
    assert kinds == ["Conv2d", "ReLU", "BatchNorm2d", "Conv2d"]  # the one after the ReLU stays


def test_a_model_without_convolutions_keeps_its_layout() -> None:
    mlp = build_model(default_spec("mlp", (8,), 3)).eval()
    copy = inference_copy(mlp)
    assert all(p.is_contiguous() for p in copy.parameters())
    x = np.random.default_rng(2).random((5, 8), dtype=np.float32)
    np.testing.assert_array_equal(
        FastTorchPredictor(mlp).logits_and_features(x)[0], TorchPredictor(mlp).logits_and_features(x)[0]
    )


def _loaded_cnn(tmp_path: Path) -> LoadedModel:
    return load_artifact(save_model(_trained_looking_cnn(), tmp_path / "m"))


def test_the_server_runs_the_copy_once_it_agrees(tmp_path: Path) -> None:
    loaded = _loaded_cnn(tmp_path)
    assert isinstance(serving_predictor(loaded, (1, 28, 28), "m@v1"), FastTorchPredictor)


def test_a_disagreeing_copy_is_not_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = _loaded_cnn(tmp_path)

    class Wrong(FastTorchPredictor):
        def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            logits, features = super().logits_and_features(x)
            return logits + 0.01, features

    monkeypatch.setattr(LoadedModel, "fast_predictor", lambda self: Wrong(self.module))
    with caplog.at_level(logging.WARNING, logger="assay.serve.served"):
        chosen = serving_predictor(loaded, (1, 28, 28), "m@v1")
    assert chosen is loaded.predictor
    assert "serving the model as stored" in caplog.text


def test_other_backends_serve_their_own_predictor(tmp_path: Path) -> None:
    import json

    folder = save_model(_trained_looking_cnn(), tmp_path / "m")
    manifest = json.loads((folder / "spec.json").read_text())
    (folder / "spec.json").write_text(json.dumps({**manifest, "precision": "bf16"}))
    loaded = load_artifact(folder)
    assert not loaded.torch_fp32 and loaded.fast_predictor() is loaded.predictor

"""Model folders on every backend: old folders load as torch fp32; broken folders give clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assay.errors import DataError
from assay.models import build_model, count_parameters, default_spec, save_model
from assay.models.adapters import load_artifact
from assay.models.backends import ONNX_FILE


def _folder(tmp_path: Path) -> Path:
    model = build_model(default_spec("mlp", (8,), 3, {"hidden": [4]}))
    return save_model(model, tmp_path / "m")


def test_a_folder_without_backend_is_torch_fp32(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    manifest = json.loads((folder / "spec.json").read_text())
    assert "backend" not in manifest  # as every folder written before compression existed
    loaded = load_artifact(folder)
    assert loaded.backend == "torch" and loaded.predictor.name == "torch-fp32" and loaded.module is not None
    assert loaded.parameters == count_parameters(loaded.module) == 8 * 4 + 4 + 4 * 3 + 3
    logits, features = loaded.predictor.logits_and_features(np.zeros((2, 8), np.float32))
    assert logits.shape == (2, 3) and features is not None and features.shape == (2, 4)


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    manifest = json.loads((folder / "spec.json").read_text())
    (folder / "spec.json").write_text(json.dumps({**manifest, "backend": "tensorrt"}))
    with pytest.raises(
        DataError, match="unknown backend 'tensorrt'; this assay runs torch, torchao, onnxruntime"
    ):
        load_artifact(folder)


def test_broken_folders_name_the_problem(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "spec.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable model manifest"):
        load_artifact(folder)
    spec = {"arch": "mlp", "n_features": 8, "n_classes": 3, "hidden": [4], "dropout": 0.0}
    (folder / "spec.json").write_text(json.dumps({"spec": spec, "backend": "onnxruntime"}))
    with pytest.raises(DataError, match="the ONNX model file is missing"):
        load_artifact(folder)
    (folder / ONNX_FILE).write_bytes(b"not an onnx graph")
    with pytest.raises(DataError, match="ONNX Runtime cannot load this model"):
        load_artifact(folder)
    with pytest.raises(DataError, match="not a model folder"):
        load_artifact(tmp_path / "nothing-here")

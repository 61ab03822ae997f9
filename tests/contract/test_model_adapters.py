"""The contract every model adapter in assay.models.adapters.ADAPTERS keeps, run over every registered name.

An adapter describes itself and the frameworks it runs on; it is the one adapter that claims a small
model of its own kind; it stages that model into a fresh folder without writing outside it; the staged
folder loads (through the adapter and, once its manifest is written as ``assay models import`` writes it,
through :func:`~assay.models.adapters.load_artifact`) into a model that gives one finite logit per class
for each input, the same both ways. A new adapter needs its small model in ``SAMPLES`` (a test checks
that every registered name has one).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from assay.models import build_model, default_spec, save_model
from assay.models.adapters import ADAPTERS, adapter_for, load_artifact
from assay.models.io import SPEC

CLASSES = 3


@dataclass(frozen=True)
class Sample:
    """A small model of one adapter's kind: what a user passes (source, weights) and inputs it takes."""

    source: str
    weights: Path | None
    inputs: np.ndarray


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.head = nn.Linear(8, CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


_NET_SOURCE = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def build():
    return Net()
"""


def _rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)


def _net() -> _Net:
    torch.manual_seed(0)
    return _Net().eval()


def _zoo(root: Path) -> Sample:
    model = build_model(default_spec("mlp", (4,), CLASSES, {"hidden": [8]}))
    save_model(model, root / "zoo")
    return Sample(str(root / "zoo"), None, _rows())


def _torch(root: Path) -> Sample:
    (root / "net.py").write_text(_NET_SOURCE)
    save_file(_net().state_dict(), root / "net.safetensors")
    return Sample(f"{root / 'net.py'}:build", root / "net.safetensors", _rows())


def _export(root: Path) -> Sample:
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(_net(), (torch.from_numpy(_rows()),), dynamic_shapes=({0: batch},))
    torch.export.save(program, root / "net.pt2")
    return Sample(str(root / "net.pt2"), None, _rows())


def _onnx(root: Path) -> Sample:
    """A two-layer MLP written as an ONNX graph by hand (no exporter), batch dimension free."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weights = {
        "w1": rng.normal(size=(4, 8)).astype(np.float32),
        "b1": np.zeros(8, np.float32),
        "w2": rng.normal(size=(8, CLASSES)).astype(np.float32),
        "b2": np.zeros(CLASSES, np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["features"]),
        helper.make_node("MatMul", ["features", "w2"], ["z"]),
        helper.make_node("Add", ["z", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 8]),
        ],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), root / "mlp.onnx")
    return Sample(str(root / "mlp.onnx"), None, _rows())


def _hf(root: Path) -> Sample:
    from tests.unit.models.test_adapter_hf import TEXTS, tiny_classifier

    tiny_classifier(root / "bert", num_labels=CLASSES)
    return Sample(str(root / "bert"), None, np.array(TEXTS[:6], dtype=object))


# A small model of each adapter's kind (written under a fresh folder).
SAMPLES: dict[str, Callable[[Path], Sample]] = {
    "zoo": _zoo, "torch": _torch, "export": _export, "onnx": _onnx, "hf": _hf,
}  # fmt: skip


def test_every_adapter_has_a_sample() -> None:
    assert set(ADAPTERS.names()) <= set(SAMPLES)


@pytest.mark.parametrize("name", ADAPTERS.names())
def test_an_adapter_claims_stages_and_loads_its_kind_of_model(name: str, tmp_path: Path) -> None:
    adapter = ADAPTERS.get(name)
    assert adapter.name == name and adapter.description.strip()
    frameworks = adapter.frameworks()
    assert frameworks and all(isinstance(k, str) and isinstance(v, str) for k, v in frameworks.items())
    (tmp_path / "src").mkdir()
    sample = SAMPLES[name](tmp_path / "src")
    assert adapter_for(sample.source) is adapter  # it claims its kind, and no other adapter does
    folder = tmp_path / "staged"
    fields = adapter.stage(sample.source, sample.weights, folder)
    assert isinstance(fields, dict) and folder.is_dir()
    assert set(tmp_path.iterdir()) == {tmp_path / "src", folder}  # nothing written beside the folder
    assert not any(p.is_symlink() for p in folder.rglob("*"))
    spec = dict(fields.pop("spec", {}) or {})
    manifest = {**fields, "adapter": name, "spec": {"arch": name, **spec}}  # as assay models import writes it
    logits, _ = adapter.load(folder, manifest).predictor.logits_and_features(sample.inputs)
    assert logits.shape == (len(sample.inputs), CLASSES) and np.isfinite(logits).all()
    if name != "zoo":  # a zoo folder keeps the manifest assay wrote with the model
        (folder / SPEC).write_text(json.dumps(manifest, sort_keys=True))
    stored, _ = load_artifact(folder).predictor.logits_and_features(sample.inputs)
    np.testing.assert_array_equal(stored, logits)

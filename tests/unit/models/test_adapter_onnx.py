"""The onnx adapter: a user's MLP and CNN exported to ONNX (torch.onnx.export with dynamo, a dynamic batch
and a fixed one; external data in a subfolder) answer through stage + load as the modules do; files that
reach outside their folder, that are not ONNX, or that assay cannot feed are refused with the file and the
reason, and the staging folder holds nothing beyond what stage copied before it refused.

Tolerance: ONNX Runtime's float32 logits and features against the module computed in float64, within the
probabilistic rounding bound of :func:`tests.unit.tolerances.network_forward` (8 sigma of float32 rounding
through each layer, folded batch norm included, whatever order ONNX Runtime's kernels sum in).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from onnx import TensorProto, helper  # noqa: E402 - after the skips

from assay.compress.base import quiet  # noqa: E402
from assay.errors import DataError, UsageError  # noqa: E402
from assay.models.adapters import ADAPTERS, adapter_for, load_artifact  # noqa: E402
from assay.models.adapters.onnx import MODEL  # noqa: E402
from assay.models.backends import OnnxPredictor  # noqa: E402
from assay.models.loaded import LoadedModel  # noqa: E402
from assay.models.zoo import count_parameters  # noqa: E402
from tests.unit.models.test_adapter_export import STATIC_BATCH, N, inputs, make_module  # noqa: E402
from tests.unit.tolerances import assert_within, network_forward  # noqa: E402

WEIGHTS = "weights/w.bin"  # the external data file, in a subfolder of the model's folder


class _Both(nn.Module):
    """The module with (logits, features) outputs, as assay's own exports have."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.module.features(x)  # type: ignore[operator]
        return self.module.head(features), features  # type: ignore[operator]


def export_onnx(module: nn.Module, x: np.ndarray, path: Path, *, dynamic: bool) -> Path:
    """torch.onnx.export (dynamo) traced on ``STATIC_BATCH`` examples; the dynamic export names its
    outputs logits and features, the static one keeps the exporter's names."""
    example = torch.from_numpy(x[:STATIC_BATCH])
    names = {"input_names": ["input"], "output_names": ["logits", "features"]} if dynamic else {}
    with quiet():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamic_shapes=({0: "batch"},) if dynamic else None,
            dynamo=True,
            optimize=True,
            external_data=False,
            **names,  # type: ignore[arg-type]
        )
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    made = {
        "mlp-dynamic": export_onnx(
            _Both(make_module("mlp")), inputs("mlp"), root / "mlp-d.onnx", dynamic=True
        ),
        "mlp-static": export_onnx(make_module("mlp"), inputs("mlp"), root / "mlp-s.onnx", dynamic=False),
        "cnn-dynamic": export_onnx(make_module("cnn"), inputs("cnn"), root / "cnn-d.onnx", dynamic=True),
        "cnn-static": export_onnx(make_module("cnn"), inputs("cnn"), root / "cnn-s.onnx", dynamic=False),
    }
    external = root / "external" / "model.onnx"
    (external.parent / "weights").mkdir(parents=True)
    proto = onnx.load(str(made["mlp-dynamic"]))
    onnx.save_model(proto, str(external), save_as_external_data=True, location=WEIGHTS, size_threshold=0)
    made["mlp-external"] = external
    return made


def stage_and_load(source: Path, folder: Path) -> tuple[dict[str, Any], LoadedModel]:
    adapter = ADAPTERS.get("onnx")
    fields = adapter.stage(str(source), None, folder)
    return fields, adapter.load(folder, {**fields, "adapter": "onnx", "spec": {"arch": "onnx"}})


@pytest.mark.parametrize("name", ["mlp-dynamic", "mlp-static", "mlp-external", "cnn-dynamic", "cnn-static"])
def test_the_onnx_file_answers_as_the_module_does(
    exported: dict[str, Path], tmp_path: Path, name: str
) -> None:
    kind = name.split("-")[0]
    module, x = make_module(kind), inputs(kind)
    folder = tmp_path / "model"
    fields, loaded = stage_and_load(exported[name], folder)
    external = [WEIGHTS] if name.endswith("external") else []
    assert fields["external_data"] == external
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == sorted([MODEL, *external])
    assert loaded.weights == folder / MODEL and loaded.network is None and loaded.adapter == "onnx"
    assert fields["exported_shape"][0] == (STATIC_BATCH if name.endswith("static") else None)
    if kind == "mlp":  # the CNN's exporter may fold its batch norm into the convolution
        assert loaded.parameters == count_parameters(module)
    reference = network_forward(module, x)
    for n in (N, 1):  # a fixed-batch graph runs 10 examples as 4 + 4 + 2 padded, and 1 padded
        logits, features = loaded.predictor.logits_and_features(x[:n])
        assert_within(logits, reference.logits[:n], reference.logits_bound[:n], f"{name} logits")
        if kind == "mlp":  # named features, or the static export's second output of rank 2
            assert features is not None
            assert_within(features, reference.features[:n], reference.features_bound[:n], f"{name} features")
        else:
            assert features is None


def test_a_stored_folder_loads_through_its_manifest(exported: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "model"
    fields = ADAPTERS.get("onnx").stage(str(exported["mlp-external"]), None, folder)
    (folder / "spec.json").write_text(json.dumps({**fields, "adapter": "onnx", "spec": {"arch": "onnx"}}))
    loaded = load_artifact(folder)
    x = inputs("mlp")
    reference = network_forward(make_module("mlp"), x)
    assert_within(loaded.predictor.logits_and_features(x)[0], reference.logits, reference.logits_bound, "mlp")
    assert adapter_for(str(exported["mlp-external"])).name == "onnx"


def test_the_predictor_takes_the_output_names(exported: dict[str, Path]) -> None:
    x = inputs("mlp")
    named = OnnxPredictor(exported["mlp-dynamic"])  # the zoo's names: logits and features
    logits_only = OnnxPredictor(exported["mlp-dynamic"], features=None)
    swapped = OnnxPredictor(exported["mlp-dynamic"], logits="features", features="logits")
    logits, features = named.logits_and_features(x)
    assert features is not None and logits.shape == (N, 3) and features.shape == (N, 16)
    assert np.array_equal(logits_only.logits_and_features(x)[0], logits)
    assert logits_only.logits_and_features(x)[1] is None
    assert np.array_equal(swapped.logits_and_features(x)[0], features)


# --- refusals ---------------------------------------------------------------------------------------


def _relocated(source: Path, target: Path, location: str) -> Path:
    """A copy of the external-data model ``source`` at ``target`` whose tensors name ``location``."""
    proto = onnx.load(str(source), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(target))
    return target


def _outside_setups(exported: dict[str, Path], tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Models in tmp_path/user/ whose external data is a real copy of the weights, outside that folder
    (reached three ways), or another file the folder must keep to itself."""
    weights = exported["mlp-external"].parent / WEIGHTS
    outside = tmp_path / "outside.bin"
    outside.write_bytes(weights.read_bytes())
    user = tmp_path / "user"
    (user / "weights").mkdir(parents=True)
    (user / "weights" / "link.bin").symlink_to(outside)
    (user / "w.bin").write_bytes(weights.read_bytes())
    source = exported["mlp-external"]
    return {
        "a parent path": (
            _relocated(source, user / "a.onnx", "../outside.bin"),
            "points outside the model's",
        ),
        "an absolute path": (_relocated(source, user / "b.onnx", str(outside)), "points outside the model's"),
        "a link out": (_relocated(source, user / "c.onnx", "weights/link.bin"), "points outside the model's"),
        "a missing file": (_relocated(source, user / "d.onnx", "nowhere.bin"), "is missing"),
        "a winding path": (_relocated(source, user / "e.onnx", "weights/../w.bin"), "not a plain relative"),
        "the model file": (_relocated(source, user / "model.onnx", "model.onnx"), "the model's own file"),
    }


@pytest.mark.parametrize(
    "what",
    ["a parent path", "an absolute path", "a link out", "a missing file", "a winding path", "the model file"],
)
def test_external_data_must_stay_in_the_models_folder(
    exported: dict[str, Path], tmp_path: Path, what: str
) -> None:
    path, reason = _outside_setups(exported, tmp_path)[what]
    folder = tmp_path / "model"
    with pytest.raises(DataError) as refused:
        ADAPTERS.get("onnx").stage(str(path), None, folder)
    message = str(refused.value)
    assert re.match(rf"{re.escape(str(path))}: the tensor '[\w.]+' keeps its data in '", message), message
    assert reason in message
    assert sorted(p.name for p in folder.iterdir()) == [MODEL]  # the copy stage made first, nothing else


def test_a_stored_model_is_checked_again_when_loaded(exported: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "model"
    fields = ADAPTERS.get("onnx").stage(str(exported["mlp-external"]), None, folder)
    (tmp_path / "outside.bin").write_bytes((folder / WEIGHTS).read_bytes())
    _relocated(folder / MODEL, folder / MODEL, "../outside.bin")
    with pytest.raises(DataError, match="points outside the model's folder"):
        ADAPTERS.get("onnx").load(folder, {**fields, "adapter": "onnx", "spec": {"arch": "onnx"}})


def _graph_file(path: Path, inputs: list[tuple[str, int]], outputs: list[tuple[str, list[Any]]]) -> Path:
    """A one-node graph (Identity of the first input, or Add of two) with the given inputs and outputs."""
    values = [helper.make_tensor_value_info(name, kind, ["n", 8]) for name, kind in inputs]
    node = helper.make_node(
        "Add" if len(inputs) == 2 else "Identity", [n for n, _ in inputs], [outputs[0][0]]
    )
    extra = [helper.make_node("Identity", [outputs[0][0]], [name]) for name, _ in outputs[1:]]
    results = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs]
    graph = helper.make_graph([node, *extra], "g", values, results)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_files_assay_cannot_feed_are_refused(exported: dict[str, Path], tmp_path: Path) -> None:
    adapter = ADAPTERS.get("onnx")
    float_ = TensorProto.FLOAT
    two = _graph_file(tmp_path / "two.onnx", [("a", float_), ("b", float_)], [("y", ["n", 8])])
    with pytest.raises(DataError, match=rf"{re.escape(str(two))}: the graph takes 2 inputs \(a, b\)"):
        adapter.stage(str(two), None, tmp_path / "a")
    ints = _graph_file(tmp_path / "ints.onnx", [("ids", TensorProto.INT64)], [("y", ["n", 8])])
    with pytest.raises(DataError, match=r"the graph's input 'ids' is INT64; assay feeds float32"):
        adapter.stage(str(ints), None, tmp_path / "b")
    flat = _graph_file(tmp_path / "flat.onnx", [("x", float_)], [("y", ["n"])])
    with pytest.raises(DataError, match=r"flat\.onnx: the graph's logits output .* its outputs: y of rank 1"):
        adapter.stage(str(flat), None, tmp_path / "c")
    text = tmp_path / "notes.onnx"
    text.write_text("these are not the weights you are looking for\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(text))}: not an ONNX model"):
        adapter.stage(str(text), None, tmp_path / "d")
    assert sorted(os.listdir(tmp_path / "d")) == [MODEL]
    with pytest.raises(UsageError, match="holds its own weights"):
        adapter.stage(str(exported["mlp-dynamic"]), text, tmp_path / "e")
    assert adapter.claims("a/Model.ONNX") and not adapter.claims("model.pt2")


def test_outputs_named_logits_and_features_are_taken_in_any_order(tmp_path: Path) -> None:
    float_ = TensorProto.FLOAT
    path = _graph_file(tmp_path / "g.onnx", [("x", float_)], [("features", ["n", 8]), ("logits", ["n", 8])])
    fields = ADAPTERS.get("onnx").stage(str(path), None, tmp_path / "model")
    assert (fields["logits"], fields["features"]) == ("logits", "features")
    three = _graph_file(tmp_path / "h.onnx", [("x", float_)], [("out", ["n", 8]), ("aux", ["n"])])
    fields = ADAPTERS.get("onnx").stage(str(three), None, tmp_path / "other")
    assert (fields["logits"], fields["features"]) == ("out", None)  # a second output of rank 1 is no features

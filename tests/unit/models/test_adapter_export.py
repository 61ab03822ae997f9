"""The export adapter: a user's MLP and CNN, exported with torch.export (a dynamic batch, and a fixed one),
answer through stage + load as the modules do; programs that would run code are refused before torch reads
them, and nothing from them runs.

Tolerance: the program's float32 logits and features are compared with the module computed in float64,
within the probabilistic rounding bound of :func:`tests.unit.tolerances.network_forward` (8 sigma of
float32 rounding through each layer, whatever the kernels' summation order); a wrong weight, a wrong row
order or a padded row leaking into an answer is off by far more. Gradients are compared with the
two-layer MLP's gradient worked out in float64, within Higham's deterministic bound for its two dot
products (gamma(hidden + classes) of their absolute terms).
"""

from __future__ import annotations

import builtins
import copy
import io
import json
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from assay.errors import DataError, UsageError
from assay.models.adapters import ADAPTERS, adapter_for, load_artifact
from assay.models.adapters.export import PROGRAM
from assay.models.adapters.files import in_batches_of
from assay.models.loaded import LoadedModel
from assay.models.safeload import UnsafeFileError
from assay.models.zoo import count_parameters
from tests.unit.tolerances import assert_within, gamma, network_forward

STATIC_BATCH = 4
N = 10  # two full chunks of the static batch and a padded one of 2


class Mlp(nn.Module):
    """A user's MLP on 8 features; forward returns (logits, features)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.out = nn.Linear(16, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.out(f)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.head(f), f


class Cnn(nn.Module):
    """A user's CNN on 1x8x8 images (batch norm with non-trivial statistics); forward returns logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()
        )
        self.out = nn.Linear(64, 3)
        norm = self.body[1]
        assert isinstance(norm, nn.BatchNorm2d)
        with torch.no_grad():
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.2, 0.2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.out(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.out(x + y)


def make_module(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return (Mlp() if kind == "mlp" else Cnn()).eval()


def inputs(kind: str, n: int = N, seed: int = 1) -> np.ndarray:
    shape = (8,) if kind == "mlp" else (1, 8, 8)
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def export_program(module: nn.Module, x: np.ndarray, path: Path, *, dynamic: bool) -> Path:
    """``torch.export.save`` of the module traced on ``STATIC_BATCH`` examples of ``x``."""
    example = torch.from_numpy(x[:STATIC_BATCH])
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(module, (example,), dynamic_shapes=shapes), str(path))
    return path


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """mlp/cnn x dynamic/static programs, and a few for the refusals (exporting is the slow part)."""
    root = tmp_path_factory.mktemp("programs")
    made = {}
    for kind in ("mlp", "cnn"):
        for dynamic in (True, False):
            name = f"{kind}-{'dynamic' if dynamic else 'static'}"
            made[name] = export_program(
                make_module(kind), inputs(kind), root / f"{name}.pt2", dynamic=dynamic
            )
    made["train"] = export_program(
        make_module("cnn").train(), inputs("cnn"), root / "train.pt2", dynamic=True
    )
    two = torch.export.export(TwoInputs(), (torch.zeros(2, 8), torch.zeros(2, 8)))
    torch.export.save(two, str(root / "two.pt2"))
    made["two"] = root / "two.pt2"
    return made


def stage_and_load(source: Path, folder: Path) -> tuple[dict[str, Any], LoadedModel]:
    adapter = ADAPTERS.get("export")
    fields = adapter.stage(str(source), None, folder)
    manifest = {**fields, "adapter": "export", "spec": {"arch": "export"}}
    return fields, adapter.load(folder, manifest)


@pytest.mark.parametrize("name", ["mlp-dynamic", "mlp-static", "cnn-dynamic", "cnn-static"])
def test_the_program_answers_as_the_module_does(programs: dict[str, Path], tmp_path: Path, name: str) -> None:
    kind = name.split("-")[0]
    module, x = make_module(kind), inputs(kind)
    fields, loaded = stage_and_load(programs[name], tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [PROGRAM]
    assert loaded.weights == tmp_path / "model" / PROGRAM and loaded.adapter == "export"
    assert loaded.parameters == count_parameters(module)
    assert fields["exported_shape"] == [None if name.endswith("dynamic") else STATIC_BATCH, *x.shape[1:]]
    reference = network_forward(module, x)
    for batch in (x, x[:1]):  # a static program runs a single example padded to its batch
        logits, features = loaded.predictor.logits_and_features(batch)
        n = len(batch)
        assert_within(logits, reference.logits[:n], reference.logits_bound[:n], f"{name} logits")
        if kind == "mlp":
            assert features is not None
            assert_within(features, reference.features[:n], reference.features_bound[:n], f"{name} features")
        else:
            assert features is None  # the program returns the logits alone


def test_a_stored_folder_loads_through_its_manifest(programs: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "model"
    fields = ADAPTERS.get("export").stage(str(programs["cnn-static"]), None, folder)
    (folder / "spec.json").write_text(json.dumps({**fields, "adapter": "export", "spec": {"arch": "export"}}))
    loaded = load_artifact(folder)
    x = inputs("cnn")
    reference = network_forward(make_module("cnn"), x)
    assert_within(loaded.predictor.logits_and_features(x)[0], reference.logits, reference.logits_bound, "cnn")
    assert adapter_for(str(programs["cnn-static"])).name == "export"


@pytest.mark.parametrize("name", ["mlp-dynamic", "mlp-static"])
def test_gradients_flow_through_the_program(programs: dict[str, Path], tmp_path: Path, name: str) -> None:
    """d(sum of logits)/dx of y = W2 relu(W1 x + b1) + b2 is W1^T (relu'(W1 x + b1) * (W2^T 1))."""
    _, loaded = stage_and_load(programs[name], tmp_path / "model")
    network = loaded.network
    assert network is not None and loaded.differentiable is network
    network.eval()  # the white-box attacks do this; an exported module alone would refuse it
    x = torch.from_numpy(inputs("mlp")).requires_grad_(True)
    (grad,) = torch.autograd.grad(network(x).sum(), x)

    module = make_module("mlp")
    w1, b1 = (t.detach().double().numpy() for t in (module.body[0].weight, module.body[0].bias))
    w2 = module.out.weight.detach().double().numpy()
    x64 = x.detach().double().numpy()
    pre = x64 @ w1.T + b1
    # Each row's ReLU pattern must be decided: no pre-activation within float32 rounding of zero.
    assert np.all(np.abs(pre) > gamma(9) * (np.abs(x64) @ np.abs(w1).T + np.abs(b1)))
    upstream = (pre > 0) * w2.sum(axis=0)
    want = upstream @ w1
    bound = gamma(16 + 3) * (((pre > 0) * np.abs(w2).sum(axis=0)) @ np.abs(w1))
    assert_within(grad.numpy(), want, bound, f"{name} gradient")


def test_in_batches_of_pads_with_the_last_example_and_drops_its_outputs() -> None:
    seen: list[np.ndarray] = []

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        assert len(batch) == 4
        seen.append(batch)
        return batch * 10, None

    x = np.arange(6, dtype=np.float32)[:, None]
    logits, features = in_batches_of(4, x, run, np.concatenate)
    assert features is None and np.array_equal(logits, x * 10)
    assert np.array_equal(seen[1][:, 0], [4, 5, 5, 5])
    assert in_batches_of(None, x, run=lambda b: (b, b), cat=np.concatenate)[0] is x


# --- refusals ---------------------------------------------------------------------------------------
# Each payload creates the file MARKER in the working directory (the test's own folder) if anything runs it.

MARKER = "created"


class Creates:
    """Unpickled, it creates MARKER (``builtins.open(MARKER, "w")``)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (MARKER, "w"))


Change = Callable[[str, bytes], bytes]  # (member under the archive's root, its bytes) -> new bytes


def rewritten(source: Path, target: Path, change: Change, add: dict[str, bytes] | None = None) -> Path:
    """A copy of the archive ``source`` with each member's bytes passed through ``change``, and the
    members ``add`` added."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            zout.writestr(info, change(info.filename[len(root) + 1 :], zin.read(info.filename)))
        for name, data in (add or {}).items():
            zout.writestr(f"{root}/{name}", data)
    return target


def _keep(name: str, data: bytes) -> bytes:
    return data


def _member(member: str, edit: Callable[[Any], None]) -> Change:
    """Edit the JSON member ``member`` in place."""

    def change(name: str, data: bytes) -> bytes:
        if name != member:
            return data
        document = json.loads(data)
        edit(document)
        return json.dumps(document).encode()

    return change


def _program(edit: Callable[[dict[str, Any]], None]) -> Change:
    return _member("models/model.json", edit)


def _saved_payload() -> bytes:
    buffer = io.BytesIO()
    torch.save(Creates(), buffer)
    return buffer.getvalue()


def sample_inputs_payload(name: str, data: bytes) -> bytes:
    return _saved_payload() if name == "data/sample_inputs/model.pt" else data


def _sympy(program: dict[str, Any]) -> None:
    size = program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]
    size["as_expr"]["expr_str"] = f"__import__('builtins').open({MARKER!r}, 'w')"


def _from_file(program: dict[str, Any]) -> None:
    """A first node ``aten.from_file(MARKER, shared=True)``, which creates the file when it runs."""
    graph = program["graph_module"]["graph"]
    meta = copy.deepcopy(graph["tensor_values"]["x"])
    meta["sizes"], meta["strides"] = [{"as_int": 4}], [{"as_int": 1}]
    graph["tensor_values"]["made"] = meta
    arguments = {"filename": {"as_string": MARKER}, "shared": {"as_bool": True}, "size": {"as_int": 4}}
    node = {
        "target": "torch.ops.aten.from_file.default",
        "inputs": [{"name": k, "arg": v, "kind": 1} for k, v in arguments.items()],
        "outputs": [{"as_tensor": {"name": "made"}}],
        "metadata": {},
        "name": "made",
        "is_hop_single_tensor_return": None,
    }
    graph["nodes"].insert(0, node)


# FX writes `getattr(self.out, "<name>")` into the forward it generates: a quote in a parameter's name
# closes the string, and what follows runs with the program.
_INJECTED = f'weight"), open({MARKER!r}, "w"), ("'


def _parameter_name(name: str, data: bytes) -> bytes:
    """Rename the parameter ``out.bias`` to ``out.<_INJECTED>``, in the program and its weights config."""
    if name == "models/model.json":
        program = json.loads(data)
        for spec in program["graph_module"]["signature"]["input_specs"]:
            if spec.get("parameter", {}).get("parameter_name") == "out.bias":
                spec["parameter"]["parameter_name"] = f"out.{_INJECTED}"
        return json.dumps(program).encode()
    if name == "data/weights/model_weights_config.json":
        config = json.loads(data)
        config["config"][f"out.{_INJECTED}"] = config["config"].pop("out.bias")
        return json.dumps(config).encode()
    return data


PAYLOADS: dict[str, tuple[Change, str]] = {
    "a pickle with a payload as its sample inputs": (sample_inputs_payload, "not on the allow-list"),
    "a symbolic shape that sympy would evaluate": (_program(_sympy), "not made of sympy's size expressions"),
    "a graph node that creates a file": (_program(_from_file), "calls aten.from_file.default, which reads"),
    "a parameter name that is code": (_parameter_name, "is not made of dotted words"),
}


@pytest.mark.parametrize("what", list(PAYLOADS))
def test_torch_alone_would_run_it(
    programs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """Each planted payload does run under torch.export.load, module() and a call (so each refusal below
    is a guard that matters)."""
    monkeypatch.chdir(tmp_path)
    path = rewritten(programs["mlp-dynamic"], tmp_path / "p.pt2", PAYLOADS[what][0])
    try:
        module = torch.export.load(str(path)).module(check_guards=False)
        module(torch.zeros(STATIC_BATCH, 8))
    except Exception:  # the payload's return value breaks the program; the file is made before that
        pass
    assert (tmp_path / MARKER).exists()


@pytest.mark.parametrize("what", list(PAYLOADS))
def test_a_program_that_would_run_code_is_refused(
    programs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    monkeypatch.chdir(tmp_path)
    change, reason = PAYLOADS[what]
    path = rewritten(programs["mlp-dynamic"], tmp_path / "p.pt2", change)
    folder = tmp_path / "model"
    with pytest.raises(UnsafeFileError) as refused:
        ADAPTERS.get("export").stage(str(path), None, folder)
    message = str(refused.value)
    assert str(path) in message and reason in message and "Nothing from it was run" in message
    assert str(folder) not in message  # the user's file is named, not the staging copy
    assert not (tmp_path / MARKER).exists()
    assert sorted(p.name for p in folder.iterdir()) == [PROGRAM]  # the copy stage made, nothing else


def _pickled_weight(name: str, data: bytes) -> bytes:
    if name == "data/weights/model_weights_config.json":
        config = json.loads(data)
        config["config"]["body.0.weight"]["use_pickle"] = True
        return json.dumps(config).encode()
    return _saved_payload() if name == "data/weights/weight_0" else data


def _in_spec(edit: Callable[[list[Any]], None]) -> Change:
    def change(program: dict[str, Any]) -> None:
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(signature["in_spec"])
        edit(spec)
        signature["in_spec"] = json.dumps(spec)

    return _program(change)


def _defaultdict_input(spec: list[Any]) -> None:
    spec[1]["children_spec"][1]["type"] = "collections.defaultdict"


def _keyword_that_is_code(spec: list[Any]) -> None:
    spec[1]["children_spec"][1]["context"] = json.dumps([f"y': open({MARKER!r}, 'w'), 'z"])


def _argument_names(program: dict[str, Any]) -> None:
    program["graph_module"]["module_call_graph"][0]["signature"]["forward_arg_names"] = ["x): pass #"]


def _node_target(program: dict[str, Any]) -> None:
    program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"


def _cuda(config: dict[str, Any]) -> None:
    config["config"]["body.0.weight"]["tensor_meta"]["device"] = {"type": "cuda", "index": 0}


CRAFTED: dict[str, tuple[Change, dict[str, bytes], str]] = {
    "pickled weight": (_pickled_weight, {}, "'body.0.weight' is stored as a pickle"),
    "AOTInductor library": (
        _keep,
        {"data/aotinductor/model/model.so": b"\x7fELF"},
        "aotinductor/model/model.so",
    ),
    "custom object": (_keep, {"data/constants/custom_obj_0": b""}, "data/constants/custom_obj_0"),
    "second program": (_keep, {"models/other.json": b"{}"}, "models/other.json"),
    "legacy weights": (_keep, {"data/weights/model.pt": _saved_payload()}, "data/weights/model.pt"),
    "os.system as a node": (_program(_node_target), {}, "a node calls 'torch.os.system'"),
    "a defaultdict input": (_in_spec(_defaultdict_input), {}, "structure is a 'collections.defaultdict'"),
    "a keyword that is code": (_in_spec(_keyword_that_is_code), {}, "structure has the context"),
    "argument names that are code": (_program(_argument_names), {}, "are not Python identifiers"),
}


@pytest.mark.parametrize("what", list(CRAFTED))
def test_what_torch_export_save_does_not_write_is_refused(
    programs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    monkeypatch.chdir(tmp_path)
    change, add, reason = CRAFTED[what]
    path = rewritten(programs["mlp-dynamic"], tmp_path / "p.pt2", change, add)
    with pytest.raises(UnsafeFileError, match=r"refusing to load this torch\.export program") as refused:
        ADAPTERS.get("export").stage(str(path), None, tmp_path / "model")
    assert reason in str(refused.value) and str(path) in str(refused.value)
    assert not (tmp_path / MARKER).exists()


def test_a_program_exported_on_another_device_is_refused(programs: dict[str, Path], tmp_path: Path) -> None:
    change = _member("data/weights/model_weights_config.json", _cuda)
    path = rewritten(programs["mlp-dynamic"], tmp_path / "p.pt2", change)
    with pytest.raises(DataError, match=r"exported on 'cuda'; assay runs programs on the CPU"):
        ADAPTERS.get("export").stage(str(path), None, tmp_path / "model")


def test_programs_assay_cannot_feed_are_refused(programs: dict[str, Path], tmp_path: Path) -> None:
    adapter = ADAPTERS.get("export")
    with pytest.raises(DataError, match=r"exported in training mode \(aten\.batch_norm\.default with train"):
        adapter.stage(str(programs["train"]), None, tmp_path / "a")
    with pytest.raises(DataError, match=r"takes 2 inputs \(x, y\); assay feeds one tensor"):
        adapter.stage(str(programs["two"]), None, tmp_path / "b")
    text = tmp_path / "notes.pt2"
    text.write_text("not a program")
    with pytest.raises(DataError, match=f"{re.escape(str(text))}: not a torch.export program"):
        adapter.stage(str(text), None, tmp_path / "c")
    with pytest.raises(UsageError, match="holds its own weights"):
        adapter.stage(str(programs["mlp-dynamic"]), text, tmp_path / "d")
    assert not adapter.claims("model.onnx") and adapter.claims("dir/Model.PT2")


def test_a_stored_program_is_checked_again_when_loaded(
    programs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "model"
    fields = ADAPTERS.get("export").stage(str(programs["mlp-dynamic"]), None, folder)
    planted = rewritten(folder / PROGRAM, tmp_path / "p.pt2", sample_inputs_payload)
    shutil.copyfile(planted, folder / PROGRAM)
    with pytest.raises(UnsafeFileError):
        ADAPTERS.get("export").load(folder, {**fields, "adapter": "export", "spec": {"arch": "export"}})
    assert not (tmp_path / MARKER).exists()

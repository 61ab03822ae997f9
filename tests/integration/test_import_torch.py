"""A user's own nn.Module through the door: import -> eval -> gate -> serve, and the unsafe inputs refused.

The module is trained here, in plain PyTorch, on the digits rows as assay prepares them (standardised with
the training split's statistics), saved as safetensors, and imported with its factory file. What assay
then says about it must be what the module computes.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from assay.cli import app
from assay.data import load_dataset, parse_data_arg
from assay.outputs import load_predictions
from assay.serve.service import ServeConfig, Service
from assay.workspace import Workspace
from tests.integration.serving_fixtures import running
from tests.unit.tolerances import U32, assert_same_decisions, network_forward

runner = CliRunner()

MODEL_PY = '''
import torch
from torch import nn


class Reader(nn.Module):
    """A user's MLP: features() and head() give assay its penultimate features."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.out(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build() -> nn.Module:
    return Reader()


def small() -> nn.Module:
    return Reader(hidden=4)


def broken() -> nn.Module:
    raise RuntimeError("the config file is missing")


def wrong_classes() -> nn.Module:
    return nn.Linear(64, 3)
'''


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def ok_json(*args: str) -> dict:  # type: ignore[type-arg]
    code, stdout, stderr = invoke(*args, "--json")
    assert code == 0, stderr
    return json.loads(stdout)  # type: ignore[no-any-return]


def train(factory: str, folder: Path, epochs: int, seed: int) -> tuple[torch.nn.Module, Path]:
    namespace: dict[str, object] = {}
    exec(compile(MODEL_PY, "model.py", "exec"), namespace)  # the same code the door imports
    torch.manual_seed(seed)
    module = namespace[factory]()  # type: ignore[operator]
    data = load_dataset(parse_data_arg("sklearn:digits"))
    x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    opt = torch.optim.Adam(module.parameters(), lr=0.01)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        opt.step()
    path = folder / f"{factory}-{epochs}.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return module.eval(), path


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("user")
    (folder / "model.py").write_text(MODEL_PY)
    good, good_weights = train("build", folder, epochs=60, seed=0)
    weak, weak_weights = train("small", folder, epochs=3, seed=1)
    return {
        "folder": folder,
        "good": good,
        "good_weights": good_weights,
        "weak": weak,
        "weak_weights": weak_weights,
    }


def test_a_user_module_answers_in_assay_as_it_does_in_torch(user: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    folder = user["folder"]
    imported = ok_json(
        "models", "import", "reader", f"{folder}/model.py:build", "--weights", str(user["good_weights"]),
        "--data", "sklearn:digits",
    )  # fmt: skip
    assert imported["version"] == "reader@v1" and imported["adapter"] == "torch"
    assert set(imported["files"]) == {"code/model.py", "weights.safetensors", "spec.json"}
    lineage = imported["lineage"]
    assert lineage["recipe"]["kind"] == "import" and lineage["frameworks"]["torch"] == torch.__version__
    assert lineage["contract"]["kind"] == "table" and lineage["files"] == imported["files"]

    predictions = tmp_path / "reader.npz"
    document = ok_json("eval", "reader@v1", "--no-efficiency", "--save-predictions", str(predictions))
    assert document["models"]["candidate"]["card"]["backend"] == "torch-fp32"
    outputs = load_predictions(predictions)
    test = load_dataset(parse_data_arg("sklearn:digits")).test
    reference = network_forward(user["good"], test.x)
    assert_same_decisions(reference.logits, reference.logits_bound, outputs.probs, max_undecided=0.02)
    assert outputs.features is not None and outputs.features.shape == (test.n, 32)
    accuracy = {m["name"]: m for m in document["measurements"]}["accuracy"]
    assert accuracy["value"] == pytest.approx(float((outputs.probs.argmax(1) == test.y).mean()))
    assert accuracy["value"] > 0.9 and accuracy["ci_low"] < accuracy["value"] < accuracy["ci_high"]

    ok_json(
        "models", "import", "reader", f"{folder}/model.py:small", "--weights", str(user["weak_weights"]),
        "--data", "sklearn:digits",
    )  # fmt: skip
    code, stdout, stderr = invoke("gate", "reader@v1", "reader@v2", "--no-efficiency", "--json")
    assert code == 1, stderr  # the 4-unit, 3-epoch candidate is far worse: the gate must refuse it
    verdict = json.loads(stdout)["verdict"]
    assert not verdict["passed"]
    rule = next(r for r in verdict["rules"] if r["metric"] == "accuracy")
    assert rule["delta"] < -0.1 and not rule["passed"]


def test_an_imported_module_is_served_and_answers_as_it_does_in_torch(user: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    home = tmp_path / "home"
    ok_json(
        "models", "import", "reader", f"{user['folder']}/model.py:build", "--weights",
        str(user["good_weights"]), "--data", "sklearn:digits", "--home", str(home),
    )  # fmt: skip
    ok_json("eval", "reader@v1", "--no-efficiency", "--home", str(home))  # the release reference
    ok_json("models", "promote", "reader@v1", "--home", str(home))
    ws = Workspace.open(home)
    test = load_dataset(parse_data_arg("sklearn:digits")).test
    service = Service(ws, "reader", "production", ServeConfig(poll_s=0.1, window=30))
    # The client sends the rows as it holds them (scikit-learn's 0-16 counts); the server standardises
    # them with the version's contract: one float32 rounding of each input, then the network.
    assert test.rows is not None
    raw = load_digits().data[test.rows[:60]].astype(np.float32)
    reference = network_forward(user["good"], test.x[:60], input_u=U32)
    with running(service) as base, httpx.Client(base_url=base, timeout=30) as client:
        answer = client.post("/v1/models/reader/predict", json={"inputs": raw.tolist()})
        assert answer.status_code == 200, answer.text
        got = np.eye(10)[answer.json()["predictions"]]
        assert_same_decisions(reference.logits, reference.logits_bound, got, max_undecided=0.02)
    ws.store.close()


class _Payload:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.target), "pwned"))  # type: ignore[return-value]


def _no_versions() -> None:
    code, stdout, _ = invoke("models", "list", "--json")
    assert code == 0 and json.loads(stdout) == []


def test_unsafe_and_broken_user_models_are_refused_and_nothing_runs_or_registers(
    user: dict,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    folder = user["folder"]
    marker = tmp_path / "pwned.txt"
    payload = tmp_path / "evil.pt"
    with payload.open("wb") as f:
        pickle.dump({"body.0.weight": _Payload(marker)}, f)
    zipped = tmp_path / "evil-zip.pt"
    torch.save({"x": torch.zeros(1)}, zipped)  # then its pickle replaced by the payload's
    import zipfile

    with zipfile.ZipFile(zipped) as z:
        members = {n: z.read(n) for n in z.namelist()}
    data_pkl = next(n for n in members if n.endswith("data.pkl"))
    members[data_pkl] = pickle.dumps(_Payload(marker), protocol=2)
    with zipfile.ZipFile(zipped, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    good = str(user["good_weights"])
    cases = {
        "pickle payload": ([f"{folder}/model.py:build", "--weights", str(payload)], "refusing to load"),
        "zip payload": ([f"{folder}/model.py:build", "--weights", str(zipped)], "refusing to load"),
        "factory raises": ([f"{folder}/model.py:broken", "--weights", good], "the config file is missing"),
        "weights do not fit": ([f"{folder}/model.py:small", "--weights", good], "do not fit the module"),
        "wrong outputs": ([f"{folder}/model.py:wrong_classes", "--weights", good], "do not fit"),
        "no factory": ([f"{folder}/model.py:nothing", "--weights", good], "no callable 'nothing'"),
        "no weights": ([f"{folder}/model.py:build"], "needs its weights"),
        "unknown file": ([str(tmp_path / "model.xyz")], "No adapter reads"),
    }
    for case, (args, message) in cases.items():
        code, _, stderr = invoke("models", "import", "reader", *args, "--data", "sklearn:digits")
        assert code == 2, (case, stderr)
        assert "Traceback" not in stderr and message in " ".join(stderr.split()), (case, stderr)
        assert not marker.exists(), case
    _no_versions()


def test_a_plain_state_dict_checkpoint_is_scanned_and_stored_as_safetensors(
    user: dict, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    checkpoint = tmp_path / "reader.pt"
    torch.save({"state_dict": user["good"].state_dict()}, checkpoint)
    imported = ok_json(
        "models", "import", "reader", f"{user['folder']}/model.py:build", "--weights", str(checkpoint),
        "--data", "sklearn:digits",
    )  # fmt: skip
    assert "weights.safetensors" in imported["files"] and not any(
        f.endswith(".pt") for f in imported["files"]
    )

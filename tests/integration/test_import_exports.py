"""A user's module exported as a torch.export program and as ONNX, each through the door:
import -> eval -> gate -> serve, answering as the module does (within its float32 rounding bound)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from assay.cli import app
from assay.data import load_dataset, parse_data_arg
from assay.outputs import load_predictions
from assay.serve.service import ServeConfig, Service
from assay.workspace import Workspace
from tests.integration.serving_fixtures import running
from tests.integration.test_import_torch import MODEL_PY, train
from tests.unit.tolerances import U32, assert_same_decisions, network_forward

pytest.importorskip("onnxscript")
runner = CliRunner()


class _Both(torch.nn.Module):
    """What the exported graphs return: logits and the penultimate features."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.module.features(x)  # type: ignore[operator]
        return self.module.head(features), features  # type: ignore[operator]


def ok_json(*args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["export", "onnx"])
def test_an_exported_module_answers_in_assay_as_the_module(
    kind: str, tmp_path: Path, isolated_home: Path
) -> None:
    (tmp_path / "model.py").write_text(MODEL_PY)
    module, _ = train("build", tmp_path, epochs=60, seed=0)
    wrapper = _Both(module).eval()
    example = (torch.zeros(2, 64),)
    dynamic = ({0: torch.export.Dim("batch", min=1)},)
    if kind == "export":
        source = tmp_path / "reader.pt2"
        torch.export.save(torch.export.export(wrapper, example, dynamic_shapes=dynamic), source)
    else:
        source = tmp_path / "reader.onnx"
        torch.onnx.export(
            wrapper, example, str(source), input_names=["input"], output_names=["logits", "features"],
            dynamic_shapes=({0: "batch"},), dynamo=True, verbose=False,
        )  # fmt: skip
    imported = ok_json("models", "import", "reader", str(source), "--data", "sklearn:digits")
    assert imported["adapter"] == kind
    saved = tmp_path / "out.npz"
    ok_json("eval", "reader@v1", "--no-efficiency", "--save-predictions", str(saved))
    outputs = load_predictions(saved)
    test = load_dataset(parse_data_arg("sklearn:digits")).test
    reference = network_forward(module, test.x)
    assert_same_decisions(reference.logits, reference.logits_bound, outputs.probs, max_undecided=0.02)
    assert outputs.features is not None and outputs.features.shape == (test.n, 32)

    _, weak_weights = train("small", tmp_path, epochs=3, seed=1)
    ok_json(
        "models", "import", "reader", f"{tmp_path}/model.py:small", "--weights", str(weak_weights),
        "--data", "sklearn:digits",
    )  # fmt: skip
    result = runner.invoke(app, ["gate", "reader@v1", "reader@v2", "--no-efficiency", "--json"])
    assert result.exit_code == 1, result.stderr  # the weak torch candidate fails against the export
    assert not json.loads(result.stdout)["verdict"]["passed"]

    ok_json("models", "promote", "reader@v1")
    ws = Workspace.open(isolated_home)
    service = Service(ws, "reader", "production", ServeConfig(poll_s=0.1, window=30))
    assert test.rows is not None
    raw = load_digits().data[test.rows[:40]].astype(np.float32)  # the server standardises
    served_ref = network_forward(module, test.x[:40], input_u=U32)
    with running(service) as base, httpx.Client(base_url=base, timeout=30) as client:
        answer = client.post("/v1/models/reader/predict", json={"inputs": raw.tolist()})
        assert answer.status_code == 200, answer.text
        got = np.eye(10)[answer.json()["predictions"]]
    assert_same_decisions(served_ref.logits, served_ref.logits_bound, got, max_undecided=0.05)
    ws.store.close()

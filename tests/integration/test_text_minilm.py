"""The frozen-MiniLM text classifier on a real corpus (Debian's fortunes) through the door:
imported, evaluated with intervals, gated against a second head, and served.

The heads are fitted here on a small stratified subset (``--limit``), so the test takes seconds of
MiniLM forward passes; the README's example runs the same steps on more of the corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("transformers")

from assay.cli import app
from assay.data import load_dataset, parse_data_arg
from assay.errors import DataError, UsageError
from assay.models.heads import frozen_encoder_classifier, packaged_minilm
from assay.outputs import load_predictions
from assay.serve.service import ServeConfig, Service
from assay.workspace import Workspace
from tests.integration.serving_fixtures import running

runner = CliRunner()
LIMIT = "96"  # per split: 4 quotes of each of the 24 categories


def minilm() -> Path:
    """The packaged MiniLM encoder, or a skip saying it is absent."""
    try:
        return packaged_minilm()
    except UsageError as e:
        pytest.skip(str(e))


def fortunes() -> object:
    try:
        return load_dataset(parse_data_arg("fortunes", limit=int(LIMIT)))
    except DataError as e:
        pytest.skip(f"Debian's fortunes corpus is not installed (make setup installs it): {e}")


def ok_json(*args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_frozen_minilm_is_imported_evaluated_gated_and_served(tmp_path: Path, isolated_home: Path) -> None:
    data = fortunes()
    strong = frozen_encoder_classifier(minilm(), data, tmp_path / "head", C=1.0)  # type: ignore[arg-type]
    weak = frozen_encoder_classifier(minilm(), data, tmp_path / "small", C=1.0, n_train=24)  # type: ignore[arg-type]
    for folder in (strong, weak):
        imported = ok_json("models", "import", "quotes", str(folder), "--data", "fortunes", "--limit", LIMIT)
        assert imported["adapter"] == "hf" and imported["spec"]["input_kind"] == "text"
    contract = imported["lineage"]["contract"]
    assert contract["kind"] == "text" and contract["max_length"] and "BertTokenizer" in contract["tokenizer"]

    saved = tmp_path / "v1.npz"
    document = ok_json("eval", "quotes@v1", "--no-efficiency", "--save-predictions", str(saved))
    accuracy = {m["name"]: m for m in document["measurements"]}["accuracy"]
    chance = 1 / 24
    assert accuracy["n"] == int(LIMIT) and accuracy["ci_low"] > chance  # far above chance, with an interval
    outputs = load_predictions(saved)
    assert outputs.features is not None and outputs.features.shape[1] == 384  # MiniLM's pooled embedding

    result = runner.invoke(app, ["gate", "quotes@v1", "quotes@v2", "--no-efficiency", "--json"])
    assert result.exit_code in (0, 1), result.stderr
    verdict = json.loads(result.stdout)["verdict"]
    paired = next(c for c in verdict["comparisons"] if c["name"] == "accuracy")
    assert paired["n"] == int(LIMIT) and paired["delta_ci_low"] <= paired["delta"] <= paired["delta_ci_high"]
    assert paired["p_value"] is not None and any(r["metric"] == "accuracy" for r in verdict["rules"])

    ok_json("models", "promote", "quotes@v1", "--force", "--reason", "the test serves v1")
    test = data.test  # type: ignore[attr-defined]
    workspace = Workspace.open(isolated_home)
    service = Service(workspace, "quotes", "production", ServeConfig(poll_s=0.1, window=30))
    texts = test.x[:32].tolist()
    with running(service) as base, httpx.Client(base_url=base, timeout=60) as client:
        answer = client.post("/v1/models/quotes/predict", json={"inputs": texts})
        assert answer.status_code == 200, answer.text
        served = np.asarray(answer.json()["probabilities"])
        wrong = client.post("/v1/models/quotes/predict", json={"inputs": [[0.5, 0.2]]})
        assert wrong.status_code == 422 and "texts" in wrong.text
    index = {i: k for k, i in enumerate(outputs.ids.tolist())}
    want = outputs.probs[[index[i] for i in test.ids[:32].tolist()]]
    # The same float32 network on other batches (other padding): probabilities agree to rounding.
    np.testing.assert_allclose(served, want, atol=1e-4)
    workspace.store.close()

"""A Hugging Face text classifier through the door, on a CSV of texts: import -> eval -> gate -> serve,
answering as it does in transformers (a tiny random BERT built here, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("transformers")

from assay.cli import app
from assay.data import load_dataset, parse_data_arg
from assay.outputs import load_predictions
from assay.serve.service import ServeConfig, Service
from assay.workspace import Workspace
from tests.integration.serving_fixtures import running
from tests.unit.models.test_adapter_hf import WORDS, assert_as_close_as_float32, reference, tiny_classifier

runner = CliRunner()


def ok_json(*args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def texts_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    words = [w for w in WORDS if not w.startswith("##")]
    rows = [" ".join(rng.choice(words, size=rng.integers(2, 12))) for _ in range(150)]
    labels = [f"label{i % 3}" for i in range(150)]
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"review": rows, "label": labels}).to_csv(path, index=False)
    return path


def test_a_hf_text_classifier_answers_in_assay_as_in_transformers(
    texts_csv: Path, tmp_path: Path, isolated_home: Path
) -> None:
    data_args = ("--data", f"csv:{texts_csv}", "--text", "review", "--target", "label")
    model = tiny_classifier(tmp_path / "bert")
    tiny_classifier(tmp_path / "bert2", seed=1)
    first = ok_json("models", "import", "reviews", str(tmp_path / "bert"), *data_args)
    ok_json("models", "import", "reviews", str(tmp_path / "bert2"), *data_args)
    assert first["adapter"] == "hf" and first["lineage"]["contract"]["kind"] == "text"
    max_length = first["lineage"]["contract"]["max_length"]

    saved = tmp_path / "v1.npz"
    ok_json("eval", "reviews@v1", "--no-efficiency", "--save-predictions", str(saved))
    outputs = load_predictions(saved)
    test = load_dataset(parse_data_arg(f"csv:{texts_csv}", text="review", target="label")).test
    order = {i: k for k, i in enumerate(outputs.ids.tolist())}
    rows = [order[i] for i in test.ids.tolist()]
    exact = reference(model, tmp_path / "bert", test.x.tolist(), max_length)
    assert outputs.logits is not None and outputs.features is not None
    assert_as_close_as_float32(outputs.logits[rows], exact["logits64"], exact["logits32"], "eval logits")
    assert_as_close_as_float32(outputs.features[rows], exact["features64"], exact["features32"], "features")

    result = runner.invoke(app, ["gate", "reviews@v1", "reviews@v2", "--no-efficiency", "--json"])
    assert result.exit_code in (0, 1), result.stderr
    paired = next(c for c in json.loads(result.stdout)["verdict"]["comparisons"] if c["name"] == "accuracy")
    assert paired["n"] == test.n

    # The trust suite runs its text checks on a text model and says why the pixel ones are skipped.
    trusted = ok_json("trust", "reviews@v1", "--n-boot", "100", "--text-ood-n", "20", "--text-attack-n", "10")
    by_name = {m["name"]: m for m in trusted["measurements"]}
    assert by_name["ood_auroc[docstrings:energy]"]["n"] == test.n + 20  # --text-ood-n took effect
    for name in ("corruption_accuracy[text_typo@3]", "adv_accuracy[char_greedy-edits@3]",
                 "ood_auroc[docstrings:energy]", "ood_auroc[shuffled:mahalanobis]", "accuracy"):  # fmt: skip
        assert by_name[name]["status"] == "ok", by_name[name]
    assert by_name["adv_accuracy[pixels]"]["status"] == "skipped"
    assert "texts" in by_name["adv_accuracy[pixels]"]["details"]["reason"]

    ok_json("models", "promote", "reviews@v1", "--force", "--reason", "the test serves v1")
    ws = Workspace.open(isolated_home)
    service = Service(ws, "reviews", "production", ServeConfig(poll_s=0.1, window=10))
    with running(service) as base, httpx.Client(base_url=base, timeout=60) as client:
        answer = client.post("/v1/models/reviews/predict", json={"inputs": test.x.tolist()})
        assert answer.status_code == 200, answer.text
        served = np.asarray(answer.json()["probabilities"])
    np.testing.assert_allclose(served, outputs.probs[rows], atol=1e-5)
    ws.store.close()

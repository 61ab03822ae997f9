"""`assay finetune` on a Hugging Face text classifier: a tiny random BERT (built here, no network) is
imported with a CSV of texts whose label is the sentiment of their words, fine-tuned, registered with
its parent, evaluated, and gated against its parent; a fine-tune resumed from its checkpoint folder
registers the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("transformers")

from assay.cli import app
from tests.unit.models.test_adapter_hf import tiny_classifier
from tests.unit.models.test_heads import tiny_texts

runner = CliRunner()
SETTINGS = ("--epochs", "3", "--batch-size", "8", "--lr", "1e-3", "--precision", "fp32")


def ok_json(*args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def reviews(tmp_path: Path) -> tuple[str, ...]:
    texts, labels = tiny_texts(300, seed=0)
    path = tmp_path / "reviews.csv"
    names = ["negative", "positive"]
    pd.DataFrame({"review": texts, "label": [names[y] for y in labels]}).to_csv(path, index=False)
    return ("--data", f"csv:{path}", "--text", "review", "--target", "label")


def test_finetune_registers_a_child_that_evaluates_and_gates(
    reviews: tuple[str, ...], tmp_path: Path, isolated_home: Path
) -> None:
    tiny_classifier(tmp_path / "bert", num_labels=2)
    parent = ok_json("models", "import", "reviews", str(tmp_path / "bert"), *reviews)
    tuned = ok_json("finetune", parent["version"], *SETTINGS, "--checkpoint", str(tmp_path / "ckpt"))
    assert tuned["version"] == "reviews@v2" and tuned["parent"] == parent["version"]
    assert tuned["epochs_run"] == 3 and tuned["precision"] == "fp32" and tuned["resumed_from_epoch"] == 0

    shown = ok_json("models", "show", "reviews")
    child = next(v for v in shown["versions"] if v["version"] == 2)
    lineage = child["lineage"]
    assert child["parent"] == parent["version"]
    assert lineage["recipe"]["kind"] == "finetune" and lineage["recipe"]["train"]["lr"] == 1e-3
    assert lineage["recipe"]["max_length"] == parent["lineage"]["contract"]["max_length"]
    assert lineage["contract"]["max_length"] == parent["lineage"]["contract"]["max_length"]
    assert lineage["training"]["best_val_accuracy"] == max(lineage["history"]["val_accuracy"])
    assert len(lineage["history"]["val_loss"]) == 3 and child["environment"]["seeds"] == {"train": 0}

    accuracy = {}
    for ref in ("reviews@v1", "reviews@v2"):
        evaluated = ok_json("eval", ref, "--no-efficiency")
        accuracy[ref] = next(m for m in evaluated["measurements"] if m["name"] == "accuracy")
    # chance is about 0.5, and the random parent near it; the fine-tuned child reads the words
    assert accuracy["reviews@v2"]["status"] == "ok" and accuracy["reviews@v2"]["value"] > 0.7
    assert accuracy["reviews@v2"]["ci_low"] > accuracy["reviews@v1"]["value"]
    result = runner.invoke(app, ["gate", "reviews@v1", "reviews@v2", "--no-efficiency", "--json"])
    assert result.exit_code in (0, 1), result.stderr

    # The same command with the same folder finds every epoch done: it registers the same weights.
    again = ok_json("finetune", parent["version"], *SETTINGS, "--checkpoint", str(tmp_path / "ckpt"))
    assert again["resumed_from_epoch"] == 3 and again["version"] == "reviews@v3"
    versions = {v["version"]: v for v in ok_json("models", "show", "reviews")["versions"]}
    assert (
        versions[3]["lineage"]["files"]["model.safetensors"]
        == versions[2]["lineage"]["files"]["model.safetensors"]
    )


def test_text_data_and_bad_settings_are_refused_with_the_way_forward(
    reviews: tuple[str, ...], tmp_path: Path, isolated_home: Path
) -> None:
    trained = runner.invoke(app, ["train", "--name", "zoo", *reviews])
    assert trained.exit_code == 2 and "assay finetune" in trained.stderr
    tiny_classifier(tmp_path / "bert", num_labels=2)
    ok_json("models", "import", "reviews", str(tmp_path / "bert"), *reviews)
    bad = runner.invoke(app, ["finetune", "reviews@v1", "--schedule", "step"])
    assert bad.exit_code == 2 and "schedule" in bad.stderr
    bad = runner.invoke(app, ["finetune", "reviews@v1", "--warmup", "1"])
    assert bad.exit_code == 2 and "warmup" in bad.stderr


def test_the_python_verb_fine_tunes_and_refuses_unknown_settings(
    reviews: tuple[str, ...], tmp_path: Path, isolated_home: Path
) -> None:
    from assay import api
    from assay.errors import UsageError

    tiny_classifier(tmp_path / "bert", num_labels=2)
    ok_json("models", "import", "reviews", str(tmp_path / "bert"), *reviews)
    with pytest.raises(UsageError, match="epoch"):
        api.finetune("reviews@v1", epoch=1, home=isolated_home)
    imported = api.finetune(
        "reviews@v1", name="tuned", epochs=1, batch_size=16, precision="fp32", home=isolated_home
    )
    assert imported.version.ref == "tuned@v1" and imported.version.parent == "reviews@v1"
    assert imported.version.lineage["recipe"]["kind"] == "finetune"
    from assay.release import Workspace, artifact_dir

    # the stored manifest names where the weights came from: the parent, not a deleted staging folder
    manifest = json.loads(
        (artifact_dir(Workspace.open(isolated_home), imported.version) / "spec.json").read_text()
    )
    assert manifest["source"] == "finetune of reviews@v1"

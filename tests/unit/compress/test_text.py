"""Text compressors on a tiny random BERT (built here, no network): the ONNX export answers as
transformers does, the int8 variants load and keep its decisions, a static int8 fallback keeps the named
layers in fp32 in the graph, layer dropping keeps the bottom layers and fine-tunes them, and the search on
an imported text model records every candidate, those built on a dropped-layer model among them.

Tolerance of the export: as in tests/unit/models/test_adapter_hf.py (assert_as_close_as_float32), the
ONNX logits must lie as close to the float64 reference as transformers' own float32 logits do, within a
factor 8 (another kernel's summation order) plus 8 float32 roundings of the largest logit; a wrong
weight, token or padding is off by 1e-2 or more."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from typer.testing import CliRunner

from assay.cli import app
from assay.compress import text
from assay.compress.base import Skipped
from assay.compress.text import (
    TEXT_COMPRESSORS,
    TextContext,
    TextSource,
    quantizable_nodes,
)
from assay.models.adapters import ADAPTERS, load_artifact
from assay.models.loaded import LoadedModel
from tests.unit.models.test_adapter_hf import (
    TEXTS,
    WORDS,
    assert_as_close_as_float32,
    reference,
    stage_and_load,
    tiny_classifier,
)
from tests.unit.models.test_heads import tiny_text_data

Tiny = tuple[TextSource, Any, Path]  # the staged source, the transformers model, its folder
AGREEMENT = 0.9  # int8 may flip texts near a decision boundary; a broken graph agrees at chance (1/3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    root = tmp_path_factory.mktemp("text")
    model = tiny_classifier(root / "bert")
    loaded = stage_and_load(root / "bert", root)
    return TextSource(loaded.weights.parent, loaded.manifest), model, root / "bert"


@pytest.fixture(scope="module")
def ctx() -> TextContext:
    return TextContext(tiny_text_data(), calibration_size=64)


def build(name: str, tiny: Tiny, ctx: TextContext, out: Path, **params: object) -> LoadedModel:
    source = tiny[0]
    TEXT_COMPRESSORS.get(name)(source, ctx, out, dict(params))
    return load_artifact(out)


def test_the_onnx_export_answers_as_transformers(tiny: Tiny, ctx: TextContext, tmp_path: Path) -> None:
    source, model, folder = tiny
    loaded = build("onnx_fp32", tiny, ctx, tmp_path / "onnx")
    assert loaded.backend == "onnxruntime" and loaded.adapter == "hf"
    logits, features = loaded.predictor.logits_and_features(np.array(TEXTS, dtype=object))
    want = reference(model, folder, TEXTS, source.max_length)
    assert_as_close_as_float32(logits, want["logits64"], want["logits32"], "ONNX logits")
    assert features is not None
    assert_as_close_as_float32(features, want["features64"], want["features32"], "ONNX features")
    assert loaded.parameters == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,params", [("ort_dynamic_int8", {}), ("ort_dynamic_int8", {"defaults": True}),
                                         ("ort_static_int8", {})])  # fmt: skip
def test_int8_variants_load_and_keep_the_decisions(
    tiny, ctx: TextContext, tmp_path: Path, name: str, params: dict
) -> None:  # type: ignore[no-untyped-def,type-arg]
    source = tiny[0]
    fp32 = ADAPTERS.get("hf").load(source.folder, source.manifest)
    texts = ctx.data.test.x
    want = fp32.predictor.logits_and_features(texts)[0].argmax(1)
    loaded = build(name, tiny, ctx, tmp_path / "q", **params)
    assert loaded.manifest["precision"] == "int8"
    got = loaded.predictor.logits_and_features(texts)[0].argmax(1)
    assert float(np.mean(got == want)) >= AGREEMENT
    assert len(np.unique(want)) > 1  # the decisions vary, so agreement checks something


def test_a_static_fallback_keeps_the_named_layers_in_fp32(
    tiny: Tiny, ctx: TextContext, tmp_path: Path
) -> None:
    import onnx

    source = tiny[0]
    nodes = quantizable_nodes(ctx.onnx_fp32(source))
    kept = nodes[:2]
    build("ort_static_int8", tiny, ctx, tmp_path / "q", exclude=kept)
    graph = onnx.load(str(tmp_path / "q" / "model.onnx")).graph
    made_by = {o: n for n in graph.node for o in n.output}
    by_name = {n.name: n for n in graph.node}

    def weight_is_dequantized(name: str) -> bool:
        producer = made_by.get(by_name[name].input[1])
        return producer is not None and producer.op_type == "DequantizeLinear"

    assert all(not weight_is_dequantized(n) for n in kept)
    assert all(weight_is_dequantized(n) for n in nodes[2:] if n in by_name)
    assert json.loads((tmp_path / "q" / "spec.json").read_text())["fp32_layers"] == kept


def test_dropping_layers_keeps_the_bottom_ones_and_the_parent_untouched(
    ctx: TextContext, tmp_path: Path
) -> None:
    """At a learning rate too small to move a weight, the student is the parent's bottom layer exactly
    (so the top one is what went), with its embeddings; its config and manifest say one layer."""
    model = tiny_classifier(tmp_path / "bert", num_labels=2)  # the two classes of the tiny texts
    loaded = stage_and_load(tmp_path / "bert", tmp_path / "staged")
    tiny = (TextSource(loaded.weights.parent, loaded.manifest), model, tmp_path / "bert")
    source = tiny[0]
    before = {k: v.clone() for k, v in source.model().state_dict().items()}
    for distill in (False, True):
        loaded = build("drop_layers", tiny, ctx, tmp_path / str(distill), keep=1, lr=1e-30, epochs=1,
                       distill=distill, precision="fp32", calibrate=False)  # fmt: skip
        student = loaded.predictor.model  # type: ignore[attr-defined]  # a TextPredictor
        assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
        got = student.state_dict()
        assert not any(k.startswith("bert.encoder.layer.1.") for k in got)
        for name, tensor in got.items():
            torch.testing.assert_close(tensor, before[name], rtol=0, atol=1e-6, msg=name)
        assert loaded.parameters < sum(t.numel() for t in model.parameters())
        assert loaded.manifest["parameters"] == loaded.parameters
    assert all(torch.equal(v, source.model().state_dict()[k]) for k, v in before.items())
    with pytest.raises(Skipped, match="keep=2"):
        build("drop_layers", tiny, ctx, tmp_path / "all", keep=2)


def test_a_student_is_temperature_scaled_on_validation_in_its_head(
    ctx: TextContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With calibration, the student's logits are the uncalibrated student's divided by the T that
    minimises its validation NLL (checked against T nudged either way), its predictions unchanged."""
    tiny_classifier(tmp_path / "bert", num_labels=2)
    loaded = stage_and_load(tmp_path / "bert", tmp_path / "staged")
    source = TextSource(loaded.weights.parent, loaded.manifest)
    common = {"keep": 1, "lr": 1e-30, "epochs": 1, "precision": "fp32"}
    TEXT_COMPRESSORS.get("drop_layers")(source, ctx, tmp_path / "raw", {**common, "calibrate": False})
    built = TEXT_COMPRESSORS.get("drop_layers")(source, ctx, tmp_path / "scaled", common)
    temperature = built.training["calibration_temperature"]
    assert any("temperature scaling" in note for note in built.notes)
    raw, scaled = load_artifact(tmp_path / "raw").predictor, load_artifact(tmp_path / "scaled").predictor

    def val_nll(t: float) -> float:
        z = torch.from_numpy(raw.logits_and_features(ctx.data.val.x)[0]).double() / t
        return float(torch.nn.functional.cross_entropy(z, torch.from_numpy(ctx.data.val.y).long()))

    assert val_nll(temperature) < min(val_nll(temperature * 1.05), val_nll(temperature / 1.05))
    texts = ctx.data.test.x
    raw_logits, scaled_logits = raw.logits_and_features(texts)[0], scaled.logits_and_features(texts)[0]
    np.testing.assert_allclose(scaled_logits, raw_logits / temperature, rtol=1e-4, atol=1e-5)
    assert (scaled_logits.argmax(1) == raw_logits.argmax(1)).all()
    headless = TextSource(source.folder, {**source.manifest, "num_labels": 5})  # no head of 5 outputs
    monkeypatch.setattr(text, "finetune", lambda *a, **k: pytest.fail("trained before the head was checked"))
    with pytest.raises(Skipped, match="linear head"):
        TEXT_COMPRESSORS.get("drop_layers")(headless, ctx, tmp_path / "none", common)


def write_reviews(path: Path) -> Path:
    """150 seeded texts of the tiny vocabulary in a CSV (``review``, ``label``: three labels in turn)."""
    rng = np.random.default_rng(0)
    words = [w for w in WORDS if not w.startswith("##")]
    rows = [" ".join(rng.choice(words, size=rng.integers(2, 12))) for _ in range(150)]
    pd.DataFrame({"review": rows, "label": [f"label{i % 3}" for i in range(150)]}).to_csv(path, index=False)
    return path


def test_the_search_on_an_imported_text_model_records_every_candidate(
    tmp_path: Path, isolated_home: Path
) -> None:
    path = write_reviews(tmp_path / "reviews.csv")
    tiny_classifier(tmp_path / "bert")
    runner = CliRunner()
    data = ("--data", f"csv:{path}", "--text", "review", "--target", "label")
    result = runner.invoke(app, ["models", "import", "reviews", str(tmp_path / "bert"), *data, "--json"])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(app, ["compress", "reviews@v1", "--out", str(tmp_path / "reports"), "--json"])
    assert result.exit_code in (0, 1), result.stderr
    doc = json.loads(result.stdout)
    keys = {t["key"]: t for t in doc["trials"]}
    assert {"onnx_fp32", "ort_defaults", "ort_dynamic_int8", "ort_static_int8", "bf16",
            "torchao_int8_weight_only", "torchao_int8_dynamic", "half_layers", "half_layers_distilled",
            "half_layers+ort_defaults", "half_layers_distilled+ort_dynamic_int8"} <= set(keys)  # fmt: skip
    assert all(t["status"] in ("passed", "failed", "skipped", "error") for t in keys.values())
    assert all(t["reason"] for t in keys.values() if t["status"] == "skipped")
    assert keys["onnx_fp32"]["status"] in ("passed", "failed"), keys["onnx_fp32"]["reason"]
    timing = keys["onnx_fp32"]["metrics"]
    assert "throughput" in timing and "latency_p50_b1" in timing
    assert doc["frontier"]["latency_p50_b1"]
    # the 1-layer student and what is built on it run half the parent's blocks: fewer FLOPs per text
    for key in ("half_layers", "half_layers_distilled", "half_layers+ort_defaults"):
        assert keys[key]["status"] in ("passed", "failed"), keys[key]["reason"]
        assert keys[key]["flops"] < keys["onnx_fp32"]["flops"] == doc["root"]["flops"]
        assert keys[key]["parent"] == ("reviews@v1" if "+" not in key else keys["half_layers"]["version"])

"""Each compressor on a tiny CNN: a new model of the right shape, the parent untouched, the artifact
loadable on its backend, and outputs checked against an independent computation where one exists."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from assay.compress import COMPRESSORS, Built, Context, Skipped
from assay.compress.prune import slim_spec
from assay.compress.quantize import layer_sensitivity, quantizable_nodes
from assay.data import Dataset
from assay.env import cpu_supports_bf16
from assay.models import ZooModel, count_parameters
from assay.models.adapters import load_artifact
from assay.models.backends import ONNX_FILE
from assay.models.loaded import LoadedModel
from tests.unit.tolerances import BF16_U, assert_within, network_forward


def _state(model: ZooModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _build(
    name: str, model: ZooModel, ctx: Context, out: Path, **params: object
) -> tuple[Built, LoadedModel]:
    before = _state(model)
    built = COMPRESSORS.get(name)(model, ctx, out, dict(params))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), f"{name} modified its source model"
    return built, load_artifact(out)


def _torch_logits(model: ZooModel, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(x)).numpy()


def test_every_registered_compressor_is_covered() -> None:
    covered = {"onnx_fp32", "ort_dynamic_int8", "ort_static_int8", "torch_bf16", "torchao"}
    covered |= {"prune_structured", "prune_magnitude", "distill"}
    assert set(COMPRESSORS.names()) == covered  # a new compressor needs its test here


def test_onnx_fp32_matches_torch(
    tiny_cnn: ZooModel, bars_data: Dataset, ctx: Context, tmp_path: Path
) -> None:
    built, loaded = _build("onnx_fp32", tiny_cnn, ctx, tmp_path / "m")
    x = bars_data.test.x[:64]
    logits, features = loaded.predictor.logits_and_features(x)
    assert logits.shape == (64, 3) and features is not None and features.shape == (64, 32)
    ref = network_forward(tiny_cnn, x)  # float64, with the bound any float32 computation keeps to
    assert_within(logits, ref.logits, ref.logits_bound, "ONNX Runtime's logits")
    assert loaded.backend == "onnxruntime" and loaded.parameters == count_parameters(tiny_cnn)
    assert built.spec == tiny_cnn.spec
    # One self-contained file, no external weights beside it: its size is the model's size.
    assert {p.name for p in (tmp_path / "m").iterdir()} == {ONNX_FILE, "spec.json"}


@pytest.mark.parametrize(("name", "params"), [("ort_static_int8", {}), ("ort_dynamic_int8", {}),
                                             ("ort_static_int8", {"defaults": True})])  # fmt: skip
def test_int8_variants_are_smaller_and_agree(
    name: str, params: dict[str, object], tiny_cnn: ZooModel, bars_data: Dataset, ctx: Context, tmp_path: Path
) -> None:
    _, fp32 = _build("onnx_fp32", tiny_cnn, ctx, tmp_path / "fp32")
    _, int8 = _build(name, tiny_cnn, ctx, tmp_path / "int8", **params)
    # int8 weights are a quarter of fp32; the QDQ graph and per-channel scales cost a fixed amount on top.
    assert int8.weights.stat().st_size < 0.7 * fp32.weights.stat().st_size
    x = bars_data.test.x
    reference = fp32.predictor.logits_and_features(x)[0].argmax(1)
    agreement = np.mean(int8.predictor.logits_and_features(x)[0].argmax(1) == reference)
    assert agreement > 0.9, f"{name} changed {1 - agreement:.1%} of predictions on an easy task"


def test_static_int8_fallback_keeps_named_layers_fp32(
    tiny_cnn: ZooModel, bars_data: Dataset, ctx: Context, tmp_path: Path
) -> None:
    ranked = layer_sensitivity(tiny_cnn, ctx, n=200)
    assert len(ranked) == 4 and all(0 <= damage <= 1 for _, damage in ranked)  # 2 convs, 2 dense layers
    worst = [ranked[0][0]]
    built, loaded = _build("ort_static_int8", tiny_cnn, ctx, tmp_path / "m", exclude=worst)
    assert loaded.manifest["fp32_layers"] == worst and built.notes
    import onnx

    graph = onnx.load(str(loaded.weights)).graph
    kept = [n for n in graph.node if n.name == worst[0]]
    assert kept and kept[0].op_type in ("Conv", "Gemm", "MatMul")  # still a float op, not a QLinear one
    with pytest.raises(Skipped, match="no quantizable node"):
        _build("ort_static_int8", tiny_cnn, ctx, tmp_path / "x", exclude=["no-such-node"])


def test_quantizable_nodes_lists_convs_and_dense(
    tiny_cnn: ZooModel, bars_data: Dataset, ctx: Context, tmp_path: Path
) -> None:
    _, loaded = _build("onnx_fp32", tiny_cnn, ctx, tmp_path / "m")
    assert len(quantizable_nodes(loaded.weights)) == 4


def test_bf16_runs_only_where_the_cpu_has_it(
    tiny_cnn: ZooModel, bars_data: Dataset, ctx: Context, tmp_path: Path
) -> None:
    if not cpu_supports_bf16():
        with pytest.raises(Skipped, match="no native bf16"):
            _build("torch_bf16", tiny_cnn, ctx, tmp_path / "m")
        return
    _, loaded = _build("torch_bf16", tiny_cnn, ctx, tmp_path / "m")
    assert loaded.manifest["precision"] == "bf16" and loaded.predictor.name == "torch-bf16"
    logits, _ = loaded.predictor.logits_and_features(bars_data.test.x[:8])
    # Operands rounded to bf16 (8 significant bits), float32 accumulation: AMX, AVX512-BF16 and emulated
    # kernels all keep to this bound, where a fixed 0.1 was inside what bf16 can legitimately move.
    ref = network_forward(tiny_cnn, bars_data.test.x[:8], operand_u=BF16_U)
    assert_within(logits, ref.logits, ref.logits_bound, "bf16 logits")


@pytest.mark.parametrize("config", ["int8_weight_only", "int8_dynamic"])
def test_torchao_variant_round_trips(
    config: str, tiny_cnn: ZooModel, bars_data: Dataset, ctx: Context, tmp_path: Path
) -> None:
    _, loaded = _build("torchao", tiny_cnn, ctx, tmp_path / "m", config=config)
    assert loaded.backend == "torchao" and loaded.module is not None
    x = bars_data.test.x[:64]
    logits, _ = loaded.predictor.logits_and_features(x)
    assert np.mean(logits.argmax(1) == _torch_logits(tiny_cnn, x).argmax(1)) > 0.9
    # The quantized weights are stored as int8: the dense layers' share of the file shrinks ~4x.
    fp32_bytes = sum(v.numel() * 4 for v in tiny_cnn.state_dict().values() if v.dtype == torch.float32)
    assert loaded.weights.stat().st_size < 0.6 * fp32_bytes


def test_torchao_unknown_config_is_skipped(
    tiny_cnn: ZooModel, bars_data: Dataset, ctx: Context, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="Unknown torchao configuration"):
        _build("torchao", tiny_cnn, ctx, tmp_path / "m", config="int3_magic")


def test_structured_pruning_removes_channels(
    tiny_cnn: ZooModel, bars_data: Dataset, ctx: Context, tmp_path: Path
) -> None:
    built, loaded = _build("prune_structured", tiny_cnn, ctx, tmp_path / "m", ratio=0.5)
    assert built.spec["channels"] == [4, 8] and built.spec["hidden"] == 16
    assert loaded.parameters < 0.35 * count_parameters(tiny_cnn)  # dense layer is ~4x, convs ~2-4x smaller
    assert built.training is not None and built.training["kind"] == "fine-tune"
    logits, features = loaded.predictor.logits_and_features(bars_data.test.x[:16])
    assert logits.shape == (16, 3) and features is not None and features.shape == (16, 16)


def test_slim_spec_rebuilds_the_pruned_module(tiny_cnn: ZooModel, bars_data: Dataset) -> None:
    """The spec read off a Torch-Pruning result rebuilds a zoo model with identical outputs."""
    import torch_pruning as tp

    from assay.models import build_model

    pruned = copy.deepcopy(tiny_cnn)
    example = torch.from_numpy(bars_data.train.x[:1])
    importance = tp.importance.MagnitudeImportance(p=2)
    tp.pruner.MetaPruner(
        pruned, example, importance=importance, pruning_ratio=0.25, ignored_layers=[pruned.classifier]
    ).step()
    rebuilt = build_model(slim_spec(pruned))
    rebuilt.load_state_dict(pruned.state_dict())
    x = bars_data.test.x[:32]
    np.testing.assert_allclose(_torch_logits(rebuilt, x), _torch_logits(pruned, x), atol=1e-6)


def test_magnitude_pruning_zeroes_and_keeps_zeros(
    tiny_cnn: ZooModel, bars_data: Dataset, ctx: Context, tmp_path: Path
) -> None:
    built, loaded = _build("prune_magnitude", tiny_cnn, ctx, tmp_path / "m", ratio=0.5)
    assert loaded.module is not None
    weights = torch.cat(
        [
            m.weight.flatten()
            for m in loaded.module.modules()
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
        ]
    )
    assert float((weights == 0).float().mean()) == pytest.approx(0.5, abs=0.01)  # held through fine-tuning
    assert loaded.manifest["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert "no speed or size claim" in built.notes[0]


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5])
def test_pruning_ratio_out_of_range_is_skipped(
    ratio: float, tiny_cnn: ZooModel, bars_data: Dataset, ctx: Context, tmp_path: Path
) -> None:
    with pytest.raises(Skipped, match="strictly between 0 and 1"):
        _build("prune_structured", tiny_cnn, ctx, tmp_path / "m", ratio=ratio)


def test_distilled_student_is_smaller_and_learns(
    tiny_cnn: ZooModel, bars_data: Dataset, ctx: Context, tmp_path: Path
) -> None:
    built, loaded = _build("distill", tiny_cnn, ctx, tmp_path / "m", spec={"channels": [4, 8], "hidden": 16},
                           epochs=3)  # fmt: skip
    assert built.spec["channels"] == [4, 8] and built.training is not None
    assert built.training["kind"] == "distillation" and built.training["temperature"] == 4.0
    logits, _ = loaded.predictor.logits_and_features(bars_data.test.x)
    assert np.mean(logits.argmax(1) == bars_data.test.y) > 0.8  # chance is 1/3


def test_export_failure_is_a_skip(tiny_cnn: ZooModel, bars_data: Dataset, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    def unsupported(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Unsupported: aten::some_op has no ONNX translation")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    for name in ("onnx_fp32", "ort_static_int8", "ort_dynamic_int8"):
        with pytest.raises(Skipped, match="ONNX export failed: RuntimeError: Unsupported"):
            _build(name, tiny_cnn, Context(bars_data), tmp_path / name)  # fresh: no cached export

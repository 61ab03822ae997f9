"""Lower-precision variants: ONNX Runtime (fp32, dynamic int8, static QDQ int8), torch bf16, torchao.

Static int8 is calibrated on a seeded subset of the training split (min-max ranges), with per-channel
weights and unsigned 8-bit activations by default (the U8S8 form that x86 int8 kernels are built for).
``exclude`` keeps named layers in fp32: the search's fallback when a fully quantized model fails the gate.
``defaults`` calls ``quantize_static`` with nothing but its required arguments, as a user who takes
ONNX Runtime's defaults would: the comparator the search must beat or match.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assay.compress.base import (
    COMPRESSORS,
    Built,
    Context,
    Skipped,
    ort_quantization,
    quiet,
    working_copy,
    write_manifest,
)
from assay.env import cpu_supports_bf16
from assay.errors import MissingExtraError
from assay.models import ZooModel, save_model
from assay.models.backends import ONNX_FILE, OnnxPredictor, quantize_torchao, save_torchao
from assay.models.io import WEIGHTS

QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")


@COMPRESSORS.register("torch_bf16")
def torch_bf16(source: ZooModel, ctx: Context, out: Path, params: dict[str, Any]) -> Built:
    """bf16 weights on disk, bf16 autocast at inference; only where the CPU computes bf16 natively."""
    if not cpu_supports_bf16():
        raise Skipped("this CPU has no native bf16 (avx512_bf16 or amx_bf16): bf16 would be emulated")
    model = working_copy(source).to(torch.bfloat16)
    save_model(model, out, extra={"backend": "torch", "precision": "bf16"})
    return Built(spec=source.spec)


@COMPRESSORS.register("onnx_fp32")
def onnx_fp32(source: ZooModel, ctx: Context, out: Path, params: dict[str, Any]) -> Built:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ctx.onnx_fp32(source), out / ONNX_FILE)
    write_manifest(out, source.spec, backend="onnxruntime", precision="fp32")
    return Built(spec=source.spec)


@COMPRESSORS.register("ort_dynamic_int8")
def ort_dynamic_int8(source: ZooModel, ctx: Context, out: Path, params: dict[str, Any]) -> Built:
    """int8 weights, activations quantized per call from their observed range: no calibration."""
    quantization = ort_quantization()
    fp32 = ctx.onnx_fp32(source)
    out.mkdir(parents=True, exist_ok=True)
    with quiet():
        quantization.quantize_dynamic(
            str(fp32), str(out / ONNX_FILE), weight_type=quantization.QuantType.QInt8
        )
    write_manifest(out, source.spec, backend="onnxruntime", precision="int8", quantization="dynamic")
    return Built(spec=source.spec)


def _calibration_reader(quantization: Any, x: np.ndarray, batch: int = 64) -> Any:
    """ONNX Runtime's calibration reader over the calibration subset, in batches."""
    batches: Iterator[np.ndarray] = iter(x[i : i + batch] for i in range(0, len(x), batch))

    class Reader(quantization.CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            nxt = next(batches, None)
            return None if nxt is None else {"input": nxt}

    return Reader()


def quantizable_nodes(path: Path) -> list[str]:
    """Names of the nodes static quantization would turn int8, in graph order."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in QUANTIZABLE_OPS]


def quantize_static_file(
    fp32: Path,
    out: Path,
    calibration: np.ndarray,
    *,
    exclude: list[str] | None = None,
    only: list[str] | None = None,
    defaults: bool = False,
) -> None:
    quantization = ort_quantization()
    reader = _calibration_reader(quantization, calibration)
    with quiet():
        if defaults:
            quantization.quantize_static(str(fp32), str(out), reader)
            return
        quantization.quantize_static(
            str(fp32),
            str(out),
            reader,
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
            nodes_to_exclude=exclude or [],
            nodes_to_quantize=only or [],
        )


@COMPRESSORS.register("ort_static_int8")
def ort_static_int8(source: ZooModel, ctx: Context, out: Path, params: dict[str, Any]) -> Built:
    """Static QDQ int8; ``params``: ``exclude`` (node names kept fp32), ``defaults`` (ORT's defaults)."""
    exclude = list(params.get("exclude", []))
    defaults = bool(params.get("defaults", False))
    fp32 = ctx.onnx_fp32(source)
    unknown = sorted(set(exclude) - set(quantizable_nodes(fp32)))
    if unknown:
        raise Skipped(f"no quantizable node named {unknown} in the exported graph")
    out.mkdir(parents=True, exist_ok=True)
    quantize_static_file(fp32, out / ONNX_FILE, ctx.calibration(), exclude=exclude, defaults=defaults)
    form = "ORT quantize_static defaults" if defaults else "QDQ, per-channel int8 weights, uint8 activations"
    write_manifest(
        out, source.spec, backend="onnxruntime", precision="int8", quantization=form, fp32_layers=exclude
    )
    notes = [f"kept in fp32: {', '.join(exclude)}"] if exclude else []
    return Built(spec=source.spec, notes=notes)


def layer_sensitivity(source: ZooModel, ctx: Context, n: int = 2000) -> list[tuple[str, float]]:
    """Each quantizable layer's damage when it alone is int8: the share of validation predictions that
    change against fp32, worst first. The search falls back the most damaging layers to fp32 first."""
    x = ctx.data.val.x[:n]
    fp32 = ctx.onnx_fp32(source)
    with tempfile.TemporaryDirectory() as tmp:
        reference = OnnxPredictor(fp32).logits_and_features(x)[0].argmax(1)
        damage = []
        for node in quantizable_nodes(fp32):
            one = Path(tmp) / f"{node}.onnx"
            quantize_static_file(fp32, one, ctx.calibration(), only=[node])
            preds = OnnxPredictor(one).logits_and_features(x)[0].argmax(1)
            damage.append((node, float(np.mean(preds != reference))))
    return sorted(damage, key=lambda item: -item[1])


@COMPRESSORS.register("torchao")
def torchao(source: ZooModel, ctx: Context, out: Path, params: dict[str, Any]) -> Built:
    """A torchao configuration (``params['config']``), probed on one batch: no kernel, no variant."""
    config = str(params.get("config", "int8_dynamic"))
    try:
        with quiet():
            model = quantize_torchao(working_copy(source), config)
            with torch.inference_mode():
                model(torch.from_numpy(ctx.calibration()[:2]))
    except MissingExtraError as e:
        raise Skipped(str(e)) from None
    except (RuntimeError, NotImplementedError, TypeError) as e:  # a kernel this machine does not have
        raise Skipped(f"torchao {config} does not run here: {str(e).splitlines()[0][:200]}") from None
    out.mkdir(parents=True, exist_ok=True)
    save_torchao(model, out / WEIGHTS)
    write_manifest(out, source.spec, backend="torchao", precision="int8", config=config)
    return Built(spec=source.spec, notes=["torchao quantizes linear layers only; convolutions stay fp32"])

"""The zoo adapter's runtimes: a zoo model folder (trained or compressed by assay) into a predictor.

A zoo model folder holds ``spec.json`` (the manifest) and the files of its backend:

    backend       weights file                                  predictor
    torch         weights.safetensors (fp32, or bf16 weights)   TorchPredictor, fp32 or bf16 autocast
    torchao       weights.safetensors (torchao's quantized      TorchPredictor over the quantized module
                  tensors, flattened by its safetensors support)
    onnxruntime   model.onnx                                    OnnxPredictor (CPU execution provider)

The manifest is ``{"spec": <zoo spec of the architecture>, "backend": ..., ...}``; a folder without a
``backend`` key is a torch fp32 model (every folder written before compression existed). The zoo spec is
kept for every backend, so the parameter count, the FLOPs and the input shape never depend on the runtime.
Imported models (``"adapter"`` other than ``zoo`` in the manifest) load through
:mod:`assay.models.adapters`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from assay.errors import DataError, MissingExtraError
from assay.models.io import SPEC, WEIGHTS, load_model
from assay.models.loaded import LoadedModel
from assay.models.predictor import TorchPredictor
from assay.models.zoo import ZooModel, build_model, count_parameters

M = TypeVar("M", bound=nn.Module)

ONNX_FILE = "model.onnx"
BACKENDS = ("torch", "torchao", "onnxruntime")


def read_manifest(directory: Path) -> dict[str, Any]:
    """A model folder's ``spec.json``, with ``adapter`` (default ``zoo``) and, for the zoo, ``backend``."""
    spec_file = directory / SPEC
    if not spec_file.is_file():
        raise DataError(f"{directory}: not a model folder (no {SPEC}).")
    try:
        manifest = json.loads(spec_file.read_text())
        manifest["spec"]["arch"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{spec_file}: unreadable model manifest ({e!r}).") from None
    if manifest.setdefault("adapter", "zoo") == "zoo":
        backend = manifest.setdefault("backend", "torch")
        if backend not in BACKENDS:
            raise DataError(
                f"{spec_file}: unknown backend {backend!r}; this assay runs {', '.join(BACKENDS)}."
            )
    return dict(manifest)


def load_zoo(directory: Path, manifest: dict[str, Any]) -> LoadedModel:
    """A zoo model folder (trained by assay, or a compressed variant) on its own backend."""
    spec, backend = manifest["spec"], manifest["backend"]
    parameters = count_parameters(build_model(spec))
    if backend == "onnxruntime":
        path = directory / ONNX_FILE
        return LoadedModel(OnnxPredictor(path), spec, manifest, parameters, path, None)
    if backend == "torchao":
        module = load_torchao(directory, manifest)
        name = f"torchao-{manifest['config']}"
        return LoadedModel(
            TorchPredictor(module, name=name), spec, manifest, parameters, directory / WEIGHTS, module
        )
    module = load_model(directory)
    precision = str(manifest.get("precision", "fp32"))
    return LoadedModel(
        TorchPredictor(module, precision), spec, manifest, parameters, directory / WEIGHTS, module
    )


class OnnxPredictor:
    """An ONNX graph run by ONNX Runtime on the CPU: its one input in, the outputs named ``logits`` and
    (where there is one; None for none) ``features`` out. assay's own exports name them so; the onnx
    adapter passes the names an imported graph uses.

    Intra-op threads follow torch's thread count, so a runtime comparison is at equal threads.
    """

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        *,
        logits: str = "logits",
        features: str | None = "features",
    ) -> None:
        ort = import_onnxruntime()
        if not path.is_file():
            raise DataError(f"{path}: the ONNX model file is missing.")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's business
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own unrelated types for invalid graphs
            raise DataError(f"{path}: ONNX Runtime cannot load this model ({e}).") from None
        self.input = self.session.get_inputs()[0].name
        self.outputs = [logits] if features is None else [logits, features]
        self.name = f"onnxruntime-{path.stem}"

    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.session.run(self.outputs, {self.input: np.ascontiguousarray(x)})
        return np.asarray(outputs[0]), np.asarray(outputs[1]) if len(outputs) > 1 else None


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtraError("onnxruntime", "compress") from None
    return onnxruntime


def _drop_enum_notice(record: logging.LogRecord) -> bool:
    return "Enum subclass" not in record.getMessage()


def import_torchao() -> Any:
    # torchao logs a failure for each of its CUDA-only extensions it cannot load on a CPU build, and
    # torch a deprecation warning for each of its enums (torch's log set-up resets levels: a filter stays).
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").addFilter(_drop_enum_notice)  # added once: same object
    try:
        import torchao.quantization
    except ImportError:
        raise MissingExtraError("torchao", "compress") from None
    return torchao.quantization


def torchao_config(name: str) -> Any:
    quantization = import_torchao()
    configs = {
        "int8_weight_only": quantization.Int8WeightOnlyConfig,
        "int8_dynamic": quantization.Int8DynamicActivationInt8WeightConfig,
        # int4 in groups of 32 weights with a scale and zero point each (asymmetric, as GGUF's Q4_1:
        # widths like 576 do not divide by 128). torchao's packed int4 layouts are CUDA's; on a CPU the
        # int4 values are kept unpacked in int8 storage and dequantized in the matmul.
        "int4_weight_only": lambda: quantization.IntxWeightOnlyConfig(
            weight_dtype=torch.int4,  # type: ignore[attr-defined]  # a torch dtype its stubs omit
            granularity=quantization.PerGroup(32),
            mapping_type=quantization.MappingType.ASYMMETRIC,
        ),
    }
    if name not in configs:
        raise DataError(f"Unknown torchao configuration {name!r}; known: {', '.join(sorted(configs))}.")
    return configs[name]()


def quantize_torchao(module: M, config: str) -> M:
    """torchao's ``quantize_`` in place on ``module`` (the caller passes a copy)."""
    import_torchao().quantize_(module, torchao_config(config))
    return module.eval()


def save_torchao(module: ZooModel, path: Path) -> None:
    from safetensors.torch import save_file
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    tensors, metadata = flatten_tensor_state_dict(module.state_dict())
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def load_torchao(directory: Path, manifest: dict[str, Any]) -> ZooModel:
    """Rebuild the architecture, quantize it the same way, then put the stored quantized tensors in.

    torchao's safetensors support rebuilds only tensor classes on its allow-list: no code is loaded.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    import_torchao()
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    path = directory / WEIGHTS
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata()
        state, _ = unflatten_tensor_state_dict(load_file(str(path)), metadata)
        module = quantize_torchao(build_model(manifest["spec"]), str(manifest["config"]))
        module.load_state_dict(state, assign=True)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise DataError(f"{path}: the torchao weights do not load ({e}).") from None
    return module.eval()

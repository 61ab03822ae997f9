"""Compressed variants of a Hugging Face text classifier (made by ``assay compress``), on their runtimes.

A variant's folder is a staged hf folder (``config.json``, the tokenizer's files, ``spec.json``) whose
manifest names another ``backend`` than ``transformers``:

    backend       file            predictor
    onnxruntime   model.onnx      :class:`OnnxTextPredictor`: the graph of :func:`assay.compress.text`'s
                                  export (inputs ``input_ids``, ``attention_mask`` and ``token_type_ids``
                                  where the tokenizer gives them; outputs ``logits`` and ``features``, the
                                  classification head's input)
    torchao       weights.safetensors   the transformers model, built from ``config.json`` and quantized
                                  the same way, with torchao's stored tensors put in

(bf16 weights stay on the ``transformers`` backend: :class:`~assay.models.adapters.hf.TextPredictor` with
``precision = "bf16"``.) Texts are tokenized and batched exactly as the fp32 model does
(:class:`~assay.models.adapters.hf.TextBatches`), so a variant differs from its parent by its runtime
alone. The parameter count is the parent's, recorded in the manifest when the variant was built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from assay.errors import DataError
from assay.models.adapters import hf
from assay.models.adapters.files import inside
from assay.models.backends import import_onnxruntime, import_torchao, torchao_config
from assay.models.loaded import LoadedModel

ONNX_FILE = "model.onnx"
TORCHAO_WEIGHTS = "weights.safetensors"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what an exported graph may take, in order


class OnnxTextPredictor(hf.TextBatches):
    """An exported text classifier run by ONNX Runtime on the CPU, intra-op threads as torch's (so a
    runtime comparison is at equal threads), fed what the tokenizer gives for the graph's inputs."""

    tensors = "np"

    def __init__(self, path: Path, tokenizer: Any, max_length: int, num_labels: int) -> None:
        super().__init__(tokenizer, max_length, num_labels)
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own unrelated types for invalid graphs
            raise DataError(f"{path}: ONNX Runtime cannot load this model ({e}).") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        unknown = sorted(set(self.inputs) - set(INPUTS))
        if unknown:
            raise DataError(f"{path}: the graph takes {unknown}, which a tokenizer does not give.")
        outputs = {o.name for o in self.session.get_outputs()}
        self.outputs = ["logits", *(["features"] if "features" in outputs else [])]
        self.name = f"onnxruntime-{path.stem}"

    def _run(self, encoded: Any) -> tuple[np.ndarray, np.ndarray | None]:
        feed = {}
        for name in self.inputs:
            if name in encoded:
                feed[name] = np.ascontiguousarray(encoded[name], dtype=np.int64)
            elif name == "token_type_ids":  # one segment
                feed[name] = np.zeros_like(encoded["input_ids"], dtype=np.int64)
            else:
                raise DataError(f"the tokenizer gives no {name}, which the ONNX graph takes")
        out = self.session.run(self.outputs, feed)
        features = np.asarray(out[1], dtype=np.float32) if len(out) > 1 else None
        return np.asarray(out[0], dtype=np.float32), features


def build_torchao(folder: Path, config: str) -> nn.Module:
    """The architecture of ``folder``'s ``config.json`` with random weights, quantized by torchao's
    ``config``: the structure stored quantized tensors load into."""
    import transformers

    about, _ = hf.check_config(folder)
    with hf.offline():
        model_config = transformers.AutoConfig.from_pretrained(
            folder, local_files_only=True, trust_remote_code=False
        )
        model: nn.Module = getattr(transformers, about["architecture"])(model_config).eval()
    import_torchao().quantize_(model, torchao_config(config))
    return model.eval()


def save_torchao(model: nn.Module, path: Path) -> None:
    """A torchao-quantized module's tensors, flattened by torchao's safetensors support (no pickle)."""
    from safetensors.torch import save_file
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    tensors, metadata = flatten_tensor_state_dict(model.state_dict())
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def load_torchao(folder: Path, config: str) -> nn.Module:
    """Rebuild, quantize the same way, then put the stored quantized tensors in (torchao rebuilds only
    tensor classes on its allow-list: no code is loaded)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    import_torchao()
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    path = inside(folder, TORCHAO_WEIGHTS)
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata()
        state, _ = unflatten_tensor_state_dict(load_file(str(path)), metadata)
        model = build_torchao(folder, config)
        model.load_state_dict(state, assign=True)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise DataError(f"{path}: the torchao weights do not load ({e}).") from None
    return model.eval()


def load_text_variant(folder: Path, manifest: dict[str, Any], about: dict[str, Any]) -> LoadedModel:
    """A compressed text variant's folder as a model on the runtime its manifest names."""
    backend = str(manifest.get("backend"))
    tokenizer = hf.load_tokenizer(folder)
    length, n = int(manifest["max_length"]), int(about["num_labels"])
    predictor: hf.TextBatches
    if backend == "onnxruntime":
        weights = inside(folder, ONNX_FILE)
        predictor = OnnxTextPredictor(weights, tokenizer, length, n)
    elif backend == "torchao":
        weights = inside(folder, TORCHAO_WEIGHTS)
        model = load_torchao(folder, str(manifest["config"]))
        predictor = hf.TextPredictor(model, tokenizer, length, n)
        predictor.name = f"torchao-{manifest['config']}"
    else:
        raise DataError(
            f"{folder}: the manifest names the backend {backend!r}; a text model runs on transformers, "
            "onnxruntime or torchao."
        )
    return LoadedModel(predictor, manifest["spec"], manifest, int(manifest["parameters"]), weights, None)

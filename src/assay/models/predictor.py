"""Backend-neutral prediction: anything with ``logits`` (and, where it can, ``features``) on numpy batches.

Evaluation runs the model once per split through :func:`assay.inference.infer`; the other backends
(ONNX Runtime, torchao) are in :mod:`assay.models.backends`.
"""

from __future__ import annotations

import copy
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from assay.models.zoo import ZooModel
from assay.train.loop import autocast


class Predictor(Protocol):
    name: str

    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...


class TorchPredictor:
    """A zoo model in eval mode; fp32 by default so evaluation measures the weights as stored."""

    def __init__(self, model: ZooModel, precision: str = "fp32", name: str | None = None) -> None:
        self.model = model.eval()
        self.precision = precision
        self.name = name or f"torch-{precision}"

    @torch.inference_mode()
    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with autocast(self.precision):
            features = self.model.features(torch.from_numpy(x))
            logits = self.model.head(features)
        return logits.float().numpy(), features.float().numpy()


def inference_copy(model: ZooModel) -> ZooModel:
    """A private eval-mode copy for fast fp32 inference: each BatchNorm that follows a convolution folded
    into it, and convolutional models in channels-last memory format.

    The same function to float32 rounding (tests compare it with the module). On the demo CNN at 2 CPU
    threads it runs a batch of 64 about twice as fast (0.19 against 0.38 ms an image, docs/benchmarks.md):
    oneDNN's convolutions are fastest in channels-last, and the folded layers are two fewer passes over
    the activations. The caller's module is left alone.
    """
    fast = copy.deepcopy(model).eval()
    _fold_batchnorm(fast)
    if any(isinstance(m, nn.Conv2d) for m in fast.modules()):
        fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    return fast


def _fold_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if not isinstance(child, nn.Sequential):
            _fold_batchnorm(child)
            continue
        layers: list[nn.Module] = []
        for layer in child:
            previous = layers[-1] if layers else None
            if (
                isinstance(layer, nn.BatchNorm2d)
                and isinstance(previous, nn.Conv2d)
                and layer.track_running_stats
            ):
                layers[-1] = fuse_conv_bn_eval(previous, layer)
            else:
                _fold_batchnorm(layer)
                layers.append(layer)
        setattr(module, name, nn.Sequential(*layers))


class FastTorchPredictor:
    """An fp32 zoo model through :func:`inference_copy`: what the server and the trust suite run, where
    nothing needs gradients or the module itself."""

    def __init__(self, model: ZooModel) -> None:
        self.model = inference_copy(model)
        self.name = "torch-fp32"

    @torch.inference_mode()
    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = torch.from_numpy(x)
        if t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        features = self.model.features(t)
        return self.model.head(features).numpy(), features.numpy()

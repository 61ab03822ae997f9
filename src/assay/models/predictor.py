"""Backend-neutral prediction: anything with ``logits`` (and, where it can, ``features``) on numpy batches.

Evaluation runs the model once per split through :func:`assay.inference.infer`; the other backends
(ONNX Runtime, torchao) are in :mod:`assay.models.backends`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

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

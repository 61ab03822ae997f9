"""What every compressor shares: its signature, its context, the registry, and the skip signal.

A compressor takes a torch source model (never modified: it works on a copy), writes a new model folder
(see :mod:`assay.models.backends` for the layout) and returns what it made. A configuration the machine or
the model cannot run (no kernel, an op ONNX cannot export) raises :class:`Skipped` with the reason; the
search records it as a skipped entry instead of crashing.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assay.data import Dataset
from assay.errors import MissingExtraError
from assay.models import ZooModel
from assay.models.io import SPEC
from assay.plugins import Registry

log = logging.getLogger(__name__)


class Skipped(Exception):
    """This configuration cannot run on this machine or model; the message says why."""


def ort_quantization() -> Any:
    """ONNX Runtime's quantization module, or Skipped with the install hint where it is absent."""
    try:
        from onnxruntime import quantization
    except ImportError:
        raise Skipped(str(MissingExtraError("onnxruntime", "compress"))) from None
    return quantization


def calibration_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded random subset of ``size`` of ``n`` training examples (all where
    there are fewer): what static quantization calibrates on, never validation or test."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


@dataclass
class Context:
    """What compressors may read besides their source: the data, a seed, and whether to show progress."""

    data: Dataset
    seed: int = 0
    progress: bool = False
    calibration_size: int = 512  # training examples used to calibrate static quantization
    finetune_epochs: int = 3  # 2 left the demo CNN pruned by half 0.32 points short; 3 recover it
    _calibration: np.ndarray | None = field(default=None, repr=False)
    _exports: dict[str, Path] = field(default_factory=dict, repr=False)
    _teacher_logits: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _folder: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def calibration(self) -> np.ndarray:
        """A seeded random subset of the training split (never validation or test) for calibration."""
        if self._calibration is None:
            index = calibration_rows(self.data.train.n, self.calibration_size, self.seed)
            self._calibration = np.ascontiguousarray(self.data.train.x[index])
        return self._calibration

    def onnx_fp32(self, model: ZooModel) -> Path:
        """``model`` exported to ONNX once per context (quantizers and the sensitivity scan share it)."""
        key = _digest(model)
        if key not in self._exports:
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="assay-onnx-")
            path = Path(self._folder.name) / f"{key}.onnx"
            export_onnx(model, self.calibration(), path)
            self._exports[key] = path
        return self._exports[key]

    def teacher_logits(self, model: ZooModel, batch: int = 1000) -> torch.Tensor:
        """``model``'s fp32 logits on the training split, computed once per context (distillation and
        distilled fine-tuning share them)."""
        key = _digest(model)
        if key not in self._teacher_logits:
            x = torch.from_numpy(self.data.train.x)
            teacher = working_copy(model)
            with torch.inference_mode():
                logits = [teacher(x[i : i + batch]).float() for i in range(0, len(x), batch)]
            self._teacher_logits[key] = torch.cat(logits)
        return self._teacher_logits[key]


def _digest(model: ZooModel) -> str:
    """Identity of a model's architecture and weights, whichever copy of it is passed."""
    h = hashlib.sha256(json.dumps(model.spec, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


@dataclass
class Built:
    """A compressor's result: the architecture it produced and what happened on the way."""

    spec: dict[str, Any]  # zoo spec of the (possibly smaller) architecture
    training: dict[str, Any] | None = None  # summary of a fine-tune or distillation run
    notes: list[str] = field(default_factory=list)


Compressor = Callable[[ZooModel, Context, Path, dict[str, Any]], Built]
COMPRESSORS: Registry[Compressor] = Registry("compressor")


def working_copy(model: ZooModel) -> ZooModel:
    """Compressors return new models and never touch their input."""
    return copy.deepcopy(model).eval()


def write_manifest(out: Path, spec: dict[str, Any], **fields: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC).write_text(json.dumps({"spec": spec, **fields}, indent=2, sort_keys=True))


class _BothOutputs(torch.nn.Module):
    """Exported graphs return what evaluation reads: logits and the penultimate features."""

    def __init__(self, model: ZooModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.features(x)
        return self.model.head(features), features


@contextmanager
def quiet() -> Iterator[None]:
    """The exporters and quantizers warn and log at length about things the user cannot act on."""
    names = ("root", "onnxscript", "torch.onnx", "torchao", "torch.utils._pytree")
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        # The ONNX exporter prints its progress on stdout, which must stay clean for --json.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(model: ZooModel, example: np.ndarray, path: Path) -> None:
    """torch.export-based ONNX export with a dynamic batch dimension; Skipped when an op cannot export."""
    try:
        import onnxscript  # noqa: F401 - the exporter needs it; fail here with the install hint
    except ImportError:
        raise Skipped("ONNX export needs onnx and onnxscript: pip install 'assay[compress]'") from None
    wrapper = _BothOutputs(working_copy(model)).eval()
    x = torch.from_numpy(np.ascontiguousarray(example[:2]))
    try:
        with quiet():
            torch.onnx.export(
                wrapper,
                (x,),
                str(path),
                input_names=["input"],
                output_names=["logits", "features"],
                dynamic_shapes=({0: "batch"},),
                dynamo=True,
                optimize=True,
                verbose=False,
                external_data=False,  # one self-contained file, so its size is the model's size
            )
    except Exception as e:  # the exporter raises many types; each means "cannot export this model"
        raise Skipped(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None

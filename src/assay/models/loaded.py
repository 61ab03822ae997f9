"""The model contract: what the rest of assay sees of a model, whichever adapter loaded it.

    predictor     ``logits_and_features(batch) -> (logits (N, C), features (N, D) or None)`` on numpy
                  batches: images (N, C, H, W) float32, table rows (N, F) float32, texts (N,) str
    spec          the architecture: a zoo spec, or for an imported model ``{"arch": <adapter>,
                  "n_classes": C, "input_shape": [...], "input_kind": "image" | "table" | "text"}``
    manifest      the folder's ``spec.json``: adapter, backend, the files it reads
    parameters    the parameter count
    weights       the file whose size is the model's size on disk
    module        the zoo module, where there is one (compression and fine-tuning build on it)
    network       a differentiable fp32 torch function ``x -> logits`` where the model has one: the white-box
                  attacks need it; without it the trust suite uses its gradient-free attacks

What a model cannot do (no features, no gradients) turns the checks that need it into ``skipped`` with the
reason, never into a crash. The input contract it was made with lives on its registered version
(``lineage["contract"]``, :class:`~assay.data.InputContract`), so data is refused before it reaches the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from assay.executor import PackedFolder
from assay.models.predictor import FastTorchPredictor, Predictor
from assay.models.zoo import ZooModel


@dataclass(frozen=True)
class LoadedModel:
    predictor: Predictor
    spec: dict[str, Any]
    manifest: dict[str, Any]
    parameters: int
    weights: Path
    module: ZooModel | None
    network: nn.Module | None = None
    folder: Path | None = None  # the folder it was loaded from (load_artifact sets it)

    def __reduce__(self) -> tuple[Any, ...]:
        """A model pickles as its folder's files and loads again from them, through the same adapter
        and its checks: how it reaches a worker on another machine (:mod:`assay.executor`)."""
        if self.folder is None:
            raise TypeError("only a model loaded from its folder (load_artifact) can be sent to a worker")
        return (_load_packed, (PackedFolder.of(self.folder),))

    @property
    def adapter(self) -> str:
        """The adapter that loaded it (``zoo`` for assay's own models and their compressed variants)."""
        return str(self.manifest.get("adapter", "zoo"))

    @property
    def backend(self) -> str:
        return str(self.manifest.get("backend", "torch"))

    @property
    def torch_fp32(self) -> bool:
        """A zoo torch module that runs in fp32 as stored: the function its predictor runs, which
        compression and the inference copy build on."""
        return (
            self.module is not None
            and self.backend == "torch"
            and str(self.manifest.get("precision", "fp32")) == "fp32"
        )

    @property
    def differentiable(self) -> nn.Module | None:
        """The fp32 torch function ``x -> logits`` that is deployed, for white-box attacks; else None."""
        return self.module if self.torch_fp32 else self.network

    def fast_predictor(self) -> Predictor:
        """What to run where only outputs are needed: the inference copy of a torch fp32 module
        (:class:`~assay.models.predictor.FastTorchPredictor`), else the predictor itself."""
        if self.torch_fp32:
            assert self.module is not None
            return FastTorchPredictor(self.module)
        return self.predictor


def _load_packed(packed: PackedFolder) -> LoadedModel:
    from assay.models.adapters import load_artifact

    return packed.load(load_artifact)

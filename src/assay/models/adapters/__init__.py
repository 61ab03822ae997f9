"""Model adapters: each turns one kind of model file into the model contract (:class:`LoadedModel`).

    adapter  source                                     runs on
    zoo      a folder assay wrote (trained or compressed)  torch, torchao or ONNX Runtime
    torch    ``path/to/file.py:factory`` or              your own ``nn.Module`` (the factory is your code,
             ``package.module:factory`` + weights        run on import and load), weights from .safetensors
                                                        or a torch checkpoint after the allow-list scan
    export   a ``torch.export`` program (``.pt2``)       torch
    onnx     an ``.onnx`` file (external data only       ONNX Runtime
             inside its folder)
    hf       a Hugging Face folder (config.json,         transformers, local files only, no remote code
             safetensors, tokenizer)

An adapter does two things. ``stage`` checks a source is safe and complete and copies what the model
needs into a folder, without running anything from a data file; ``load`` turns such a folder (the one the
artifact store keeps) into a :class:`LoadedModel`. Both raise :class:`~assay.errors.DataError` naming the
file and the reason. Adapters register in :data:`ADAPTERS`; third-party ones through the entry-point group
``assay.adapter``.

How to write one: a class with ``name``, ``description``, ``claims(source)`` (would it read this
source?), ``stage(source, weights, folder) -> manifest fields``, ``load(folder, manifest) -> LoadedModel``
and ``frameworks() -> {package: version}``. A module in this package that sets ``ADAPTER = YourAdapter()``
is registered under ``ADAPTER.name`` when the package is imported.
The contract test in ``tests/contract/`` runs over every registered name.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from assay.errors import NotFoundError, UsageError
from assay.models.backends import read_manifest
from assay.models.loaded import LoadedModel
from assay.plugins import Registry


class Adapter(Protocol):
    name: str
    description: str

    def claims(self, source: str) -> bool:
        """Whether ``source`` (as a user writes it) is this adapter's kind of model."""
        ...

    def stage(self, source: str, weights: Path | None, folder: Path) -> dict[str, Any]:
        """Check ``source`` and copy what the model needs into ``folder`` (which must not exist yet).

        Returns the manifest fields the adapter's ``load`` reads back (with ``spec``, the architecture,
        where the adapter knows it); nothing from a data file runs.
        """
        ...

    def load(self, folder: Path, manifest: dict[str, Any]) -> LoadedModel:
        """The staged (or stored) ``folder`` as a model."""
        ...

    def frameworks(self) -> dict[str, str]:
        """The versions of the libraries this adapter runs models on, for the lineage."""
        ...


ADAPTERS: Registry[Adapter] = Registry("adapter")


def load_artifact(directory: str | Path) -> LoadedModel:
    """A stored model folder as a model, through the adapter its manifest names (``zoo`` by default)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    return replace(ADAPTERS.get(manifest["adapter"]).load(directory, manifest), folder=directory)


def adapter_for(source: str, name: str | None = None) -> Adapter:
    """The adapter ``name``, or else the one adapter that claims ``source``."""
    if name is not None:
        adapter = ADAPTERS.get(name)
        if not adapter.claims(source):
            raise UsageError(f"The {name!r} adapter does not read {source!r}: {adapter.description}.")
        return adapter
    claimed = [n for n in ADAPTERS.names() if ADAPTERS.get(n).claims(source)]
    if len(claimed) == 1:
        return ADAPTERS.get(claimed[0])
    if not claimed:
        kinds = "; ".join(f"{n}: {ADAPTERS.get(n).description}" for n in ADAPTERS.names())
        raise NotFoundError(f"No adapter reads {source!r}. Each reads: {kinds}.")
    raise UsageError(f"{source!r} could be read by {', '.join(claimed)}; say which with the adapter option.")


def _register_builtins() -> None:
    """Every module of this package that defines ``ADAPTER`` registers it under its name, so a new
    built-in adapter is one new file. Heavy libraries are imported inside the adapters' methods."""
    for info in pkgutil.iter_modules(__path__):
        adapter = getattr(importlib.import_module(f"{__name__}.{info.name}"), "ADAPTER", None)
        if adapter is not None:
            ADAPTERS.add(adapter.name, adapter)


_register_builtins()

__all__ = ["ADAPTERS", "Adapter", "adapter_for", "load_artifact"]

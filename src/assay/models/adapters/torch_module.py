"""The torch adapter: your own ``nn.Module``, built by your own factory, with weights from a safe file.

The source names a factory: ``path/to/file.py:build`` (the file is copied into the model's folder, so
the stored model keeps the code it was registered with) or ``package.module:build`` (imported from the
environment, whose package version is recorded). The factory is called with no arguments and returns
the module; that is your code, and assay runs it on import and each time the model is loaded, as
``python -c "from file import build; build()"`` would. Nothing else runs: the weights come from a
``.safetensors`` file, or from a torch checkpoint only after :mod:`assay.models.safeload`'s allow-list
scan, and are stored as safetensors (the store never holds a pickle).

The module's ``forward(x)`` returns logits ``(N, C)``. A module that also has ``features(x)`` and
``head(features)`` (as assay's zoo models do) gives its penultimate features too, which the OOD checks and
the drift monitor use; without them those checks say ``skipped``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from assay.errors import DataError, UsageError
from assay.models.adapters.files import copy_into, inside, versions_of
from assay.models.loaded import LoadedModel
from assay.models.safeload import load_state_dict
from assay.models.zoo import count_parameters

WEIGHTS = "weights.safetensors"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_FILE_ENTRY = re.compile(rf"(?P<file>.+\.py):(?P<factory>{_IDENTIFIER})")
_MODULE_ENTRY = re.compile(rf"(?P<module>{_IDENTIFIER}(\.{_IDENTIFIER})*):(?P<factory>{_IDENTIFIER})")


@dataclass(frozen=True)
class Entry:
    """Where the factory is: a file (copied into the folder) or an importable module."""

    factory: str
    file: str | None = None
    module: str | None = None

    @classmethod
    def parse(cls, source: str) -> Entry | None:
        if m := _FILE_ENTRY.fullmatch(source):
            return cls(factory=m["factory"], file=m["file"])
        if m := _MODULE_ENTRY.fullmatch(source):
            return cls(factory=m["factory"], module=m["module"])
        return None

    def describe(self) -> str:
        return f"{self.file or self.module}:{self.factory}"


class ModulePredictor:
    """A user module in eval mode, fp32, on numpy batches."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module.eval()
        self.name = "torch-fp32"
        self._split = callable(getattr(module, "features", None)) and callable(getattr(module, "head", None))

    @torch.inference_mode()
    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        t = torch.from_numpy(np.ascontiguousarray(x))
        if self._split:
            module: Any = self.module  # duck-typed: features() and head() are the user's methods
            features = module.features(t)
            return module.head(features).float().numpy(), features.float().numpy()
        logits = self.module(t)
        if not isinstance(logits, torch.Tensor):
            raise DataError(
                f"The module's forward returned a {type(logits).__name__}; assay needs a tensor of logits "
                "(N, C). Return the logits (features through a features()/head() pair)."
            )
        return logits.float().numpy(), None


def _load_factory(folder: Path, entry: Entry) -> Any:
    if entry.file is not None:
        path = inside(folder, entry.file)
        name = f"assay_user_model_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise DataError(f"{path}: not a Python file assay can import.")
        code = importlib.util.module_from_spec(spec)
        sys.modules[name] = code  # dataclasses and pickling look modules up by name
        where = str(path)
        try:
            spec.loader.exec_module(code)
        except Exception as e:  # the user's code may raise anything
            del sys.modules[name]
            raise DataError(f"{where}: importing it raised {type(e).__name__}: {e}") from None
    else:
        assert entry.module is not None
        where = entry.module
        try:
            code = importlib.import_module(entry.module)
        except Exception as e:
            raise DataError(f"Importing {entry.module!r} raised {type(e).__name__}: {e}") from None
    factory = getattr(code, entry.factory, None)
    if not callable(factory):
        raise DataError(f"{where}: has no callable {entry.factory!r} to build the module with.")
    return factory


def build_module(folder: Path, entry: Entry) -> nn.Module:
    """Call the user's factory; a factory that raises or returns something else is a DataError."""
    factory = _load_factory(folder, entry)
    try:
        module = factory()
    except Exception as e:
        raise DataError(f"{entry.describe()} raised {type(e).__name__}: {e}") from None
    if not isinstance(module, nn.Module):
        raise DataError(f"{entry.describe()} returned a {type(module).__name__}, not a torch nn.Module.")
    return module


def fit_weights(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:600]
        raise DataError(f"{where}: the weights do not fit the module ({detail}).") from None
    return module.eval()


class TorchModuleAdapter:
    name = "torch"
    description = (
        "your own nn.Module as path/to/file.py:factory or package.module:factory, with weights from "
        ".safetensors or a torch checkpoint (checked before loading)"
    )

    def claims(self, source: str) -> bool:
        return Entry.parse(source) is not None

    def stage(self, source: str, weights: Path | None, folder: Path) -> dict[str, Any]:
        entry = Entry.parse(source)
        if entry is None:
            raise UsageError(
                f"{source!r} names no factory; write path/to/file.py:factory or package.module:factory."
            )
        if weights is None:
            raise UsageError(
                f"{source}: a torch module needs its weights; give a .safetensors file or a torch checkpoint."
            )
        folder.mkdir(parents=True)
        fields: dict[str, Any] = {"entry": {"factory": entry.factory}, "weights": WEIGHTS}
        if entry.file is not None:
            code = Path(entry.file)
            copied = copy_into(code, folder / "code")
            fields["entry"]["file"] = copied.relative_to(folder).as_posix()
            fields["source_code"] = str(code)
        else:
            fields["entry"]["module"] = entry.module
            top = str(entry.module).split(".")[0]
            fields["package_versions"] = versions_of(top)
        state = load_state_dict(weights)  # refuses unsafe pickles before anything is unpickled
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(folder / WEIGHTS))
        fields["source_weights"] = str(weights)
        return fields

    def load(self, folder: Path, manifest: dict[str, Any]) -> LoadedModel:
        from safetensors.torch import load_file

        raw = manifest.get("entry") or {}
        entry = Entry(factory=str(raw.get("factory")), file=raw.get("file"), module=raw.get("module"))
        weights = inside(folder, str(manifest.get("weights", WEIGHTS)))
        module = fit_weights(build_module(folder, entry), load_file(str(weights)), str(weights))
        return LoadedModel(
            ModulePredictor(module),
            manifest["spec"],
            manifest,
            count_parameters(module),
            weights,
            None,
            network=module,
        )

    def frameworks(self) -> dict[str, str]:
        return versions_of("torch", "safetensors")


ADAPTER = TorchModuleAdapter()

"""The zoo adapter: a model folder assay wrote (trained, or a compressed variant of one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from assay.errors import DataError
from assay.models.adapters.files import copy_into, versions_of
from assay.models.backends import load_zoo, read_manifest
from assay.models.io import SPEC
from assay.models.loaded import LoadedModel
from assay.models.zoo import ZOO


class ZooAdapter:
    name = "zoo"
    description = "a model folder assay wrote (spec.json with a zoo architecture, and its weights)"

    def claims(self, source: str) -> bool:
        spec_file = Path(source) / SPEC
        if not spec_file.is_file():
            return False
        try:
            manifest = json.loads(spec_file.read_text())
            return manifest.get("adapter", "zoo") == "zoo" and manifest["spec"]["arch"] in ZOO
        except (json.JSONDecodeError, KeyError, TypeError):
            return False

    def stage(self, source: str, weights: Path | None, folder: Path) -> dict[str, Any]:
        if weights is not None:
            raise DataError(f"{source}: a zoo folder holds its own weights; leave out the weights file.")
        directory = Path(source)
        manifest = read_manifest(directory)
        for path in sorted(directory.iterdir()):
            if path.is_symlink() or not path.is_file():
                raise DataError(f"{path}: a zoo model folder holds only regular files.")
            copy_into(path, folder)
        return manifest

    def load(self, folder: Path, manifest: dict[str, Any]) -> LoadedModel:
        return load_zoo(folder, manifest)

    def frameworks(self) -> dict[str, str]:
        return versions_of("torch", "torchao", "onnxruntime")


ADAPTER = ZooAdapter()

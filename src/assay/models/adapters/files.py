"""What the adapters share: file digests, copies that cannot leave a folder, library versions, and
running a model that takes a fixed batch size on any number of examples."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from assay.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import torch


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by its path relative to it (``/``-separated)."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refused unless it resolves (links followed) to a regular file under ``root``."""
    root = root.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise DataError(
            f"{root}: {relative!r} points outside the model's folder (to {path}); a model may read only "
            "files inside its own folder. Move the file into the folder and refer to it by a relative path."
        )
    if not path.is_file():
        raise DataError(f"{root}: the file {relative!r} it names is missing.")
    return path


def copy_into(source: Path, folder: Path, name: str | None = None) -> Path:
    """Copy the regular file ``source`` into ``folder`` (made if needed) as ``name``; its contents only."""
    if not source.is_file():
        raise DataError(f"{source}: not a file (a model's files must be regular files).")
    target = folder / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def versions_of(*packages: str) -> dict[str, str]:
    """Installed versions of ``packages`` (those not installed are left out)."""
    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


# numpy arrays (ONNX Runtime) or torch tensors (export programs): torch is named for the type checker only
_Array = TypeVar("_Array", "np.ndarray", "torch.Tensor")


def in_batches_of(
    size: int | None,
    x: _Array,
    run: Callable[[_Array], tuple[_Array, _Array | None]],
    cat: Callable[[list[_Array]], _Array],
) -> tuple[_Array, _Array | None]:
    """``run`` over ``x``, for a model that takes exactly ``size`` examples at once (None: any number):
    in chunks of ``size``, the last padded with copies of its last example and their outputs dropped.
    ``cat`` joins along the first axis (``np.concatenate``, ``torch.cat``)."""
    n = len(x)
    if size is None or n in (0, size):
        return run(x)
    logits: list[_Array] = []
    features: list[_Array] = []
    for start in range(0, n, size):
        chunk = x[start : start + size]
        k = len(chunk)
        parts = [chunk]
        parts.extend([chunk[-1:]] * (size - k))  # the padding
        lg, ft = run(cat(parts) if k < size else chunk)
        logits.append(lg[:k])
        if ft is not None:
            features.append(ft[:k])
    return cat(logits), cat(features) if features else None

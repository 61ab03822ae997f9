"""What the adapters share about files: digests, copies that cannot leave a folder, library versions."""

from __future__ import annotations

import hashlib
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from assay.errors import DataError


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

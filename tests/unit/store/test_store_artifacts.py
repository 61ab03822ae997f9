from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from assay.errors import DataError, NotFoundError, UsageError
from assay.store import ArtifactStore
from assay.store import artifacts as artifacts_module


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "sha256").rglob("*") if p.is_file())


def test_bytes_are_addressed_by_their_sha256_and_stored_once(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    data = b"\x00hello artifact\xff" * 1000
    digest = store.put_bytes(data)

    assert digest == hashlib.sha256(data).hexdigest()
    assert store.path(digest) == tmp_path / "a" / "sha256" / digest[:2] / digest[2:]
    assert store.path(digest).read_bytes() == data
    assert store.put_bytes(data) == digest
    assert len(stored_files(tmp_path / "a")) == 1
    assert store.put_bytes(data + b"!") != digest
    assert len(stored_files(tmp_path / "a")) == 2
    assert store.path(digest).stat().st_mode & 0o777 == 0o644  # readable by a server under another user


def test_file_content_is_copied_not_linked(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    source = tmp_path / "w.bin"
    source.write_bytes(b"abc")
    digest = store.put_file(source)
    source.write_bytes(b"changed later")

    assert digest == hashlib.sha256(b"abc").hexdigest()
    assert store.path(digest).read_bytes() == b"abc"


def test_folder_digest_is_the_sha256_of_its_manifest(tmp_path: Path, model_dir: Callable[..., Path]) -> None:
    folder = model_dir(weights=b"\x01\x02\x03", spec='{"arch": "cnn"}')
    (folder / "extra").mkdir()
    (folder / "extra" / "notes.txt").write_text("n")
    (folder / "empty").mkdir()  # empty folders are not content
    store = ArtifactStore(tmp_path / "a")

    digest = store.put_dir(folder)

    files = {"extra/notes.txt": b"n", "spec.json": b'{"arch": "cnn"}', "weights.safetensors": b"\x01\x02\x03"}
    manifest = "".join(f"{hashlib.sha256(files[p]).hexdigest()}  {p}\n" for p in sorted(files))
    assert digest == hashlib.sha256(manifest.encode()).hexdigest()
    stored = store.path(digest)
    assert stored.is_dir() and stored.stat().st_mode & 0o777 == 0o755
    assert {
        p.relative_to(stored).as_posix(): p.read_bytes() for p in stored.rglob("*") if p.is_file()
    } == files


def test_identical_folders_are_stored_once_and_different_ones_apart(
    tmp_path: Path, model_dir: Callable[..., Path]
) -> None:
    store = ArtifactStore(tmp_path / "a")
    first = store.put_dir(model_dir("one"))
    assert store.put_dir(model_dir("two")) == first  # same files, other folder name
    assert store.put_dir(model_dir("three", weights=b"other")) != first
    assert len([p for p in (tmp_path / "a" / "sha256").glob("*/*") if p.is_dir()]) == 2
    assert list((tmp_path / "a" / "tmp").iterdir()) == []


def test_renaming_a_file_changes_the_folder_digest(tmp_path: Path, model_dir: Callable[..., Path]) -> None:
    store = ArtifactStore(tmp_path / "a")
    folder = model_dir()
    before = store.put_dir(folder)
    (folder / "spec.json").rename(folder / "spec2.json")
    assert store.put_dir(folder) != before


def test_a_failed_copy_publishes_nothing_and_leaves_no_temporary_files(
    tmp_path: Path, model_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(tmp_path / "a")
    real_copy = artifacts_module._copy
    calls = []

    def failing_copy(src: BinaryIO, out: BinaryIO) -> str:
        calls.append(1)
        if len(calls) >= 2:
            raise OSError("disk full")
        return real_copy(src, out)

    monkeypatch.setattr(artifacts_module, "_copy", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        store.put_dir(model_dir())
    with pytest.raises(OSError, match="disk full"):
        store.put_bytes(b"x")

    assert not (tmp_path / "a" / "sha256").exists()
    assert list((tmp_path / "a" / "tmp").iterdir()) == []


def test_symlinks_empty_folders_and_missing_paths_are_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    folder = tmp_path / "m"
    folder.mkdir()
    with pytest.raises(DataError, match="no files"):
        store.put_dir(folder)
    (tmp_path / "outside.bin").write_bytes(b"secret")
    os.symlink(tmp_path / "outside.bin", folder / "weights.safetensors")
    with pytest.raises(DataError, match="symbolic link"):
        store.put_dir(folder)
    with pytest.raises(DataError, match="not a folder"):
        store.put_dir(tmp_path / "missing")
    with pytest.raises(DataError, match="not a regular file"):
        store.put_file(tmp_path / "missing.bin")


def test_lookups_check_the_digest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    absent = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(absent)
    with pytest.raises(NotFoundError, match=absent):
        store.path(absent)
    for bad in ["", "abc", absent.upper(), "../" + absent[3:]]:
        with pytest.raises(UsageError, match="64 lowercase hex"):
            store.exists(bad)

"""Content-addressed artifact storage: ``<root>/sha256/<first 2 hex>/<other 62 hex>``.

A file is stored under the sha256 of its bytes. A folder (a model: ``weights.safetensors`` +
``spec.json``) is stored as a folder of the same files under the sha256 of its manifest, the UTF-8 text
with one line per regular file, sorted by relative path (POSIX separators)::

    <sha256 of the file>  <relative path>\\n

Empty sub-folders are not part of a folder's content. Symbolic links inside a folder and special files
are refused: following them would store something other than what the folder holds.

Every write goes to a temporary path inside ``<root>/tmp`` (same file system) and is renamed into place,
so a reader never sees a half-written artifact; content already present is not written again. Bytes are
hashed as they are copied, so the digest always describes what was stored, even if the source changes
during the copy.

With a ``remote`` (:class:`~assay.store.remote.RemoteArtifacts`, an object store), every artifact
written is also uploaded, and one this store lacks is downloaded, checked against its digest and
published here before it is read: the local folder becomes a cache of the remote one.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from assay.errors import DataError, NotFoundError, UsageError
from assay.store.remote import RemoteArtifacts

_CHUNK = 1 << 20
# Temporary files and folders start private (0600/0700); published artifacts are read by other
# processes, e.g. a server running as another user.
_FILE_MODE, _DIR_MODE = 0o644, 0o755
_DIGEST = re.compile(r"[0-9a-f]{64}")


class ArtifactStore:
    def __init__(self, root: Path | str, remote: RemoteArtifacts | None = None) -> None:
        self.root = Path(root)
        self.remote = remote

    def put_bytes(self, data: bytes) -> str:
        with self._temp_file() as (tmp, out):
            digest = _copy(io.BytesIO(data), out)
        return self._mirror(self._publish(tmp, digest))

    def put_file(self, path: Path | str) -> str:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: not a regular file; only regular files can be stored as artifacts.")
        with self._temp_file() as (tmp, out), path.open("rb") as src:
            digest = _copy(src, out)
        return self._mirror(self._publish(tmp, digest))

    def put_dir(self, directory: Path | str) -> str:
        directory = Path(directory)
        if not directory.is_dir():
            raise DataError(f"{directory}: not a folder.")
        tmp = Path(tempfile.mkdtemp(dir=self._tmp_root(), prefix="dir-"))
        try:
            tmp.chmod(_DIR_MODE)
            lines = []
            for rel in _regular_files(directory):
                target = tmp / rel
                target.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
                with (directory / rel).open("rb") as src, target.open("wb") as out:
                    lines.append(f"{_copy(src, out)}  {rel}\n")
                target.chmod(_FILE_MODE)
            if not lines:
                raise DataError(f"{directory}: the folder holds no files; there is nothing to store.")
            digest = hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
            return self._mirror(self._publish(tmp, digest))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already if published

    def path(self, digest: str) -> Path:
        """Where the artifact lies: a file, or a folder for ``put_dir`` content; fetched from the remote
        (and checked) first when only the remote has it."""
        location = self._location(digest)
        if not location.exists() and self.remote is not None and self.remote.exists(digest):
            with tempfile.TemporaryDirectory(dir=self._tmp_root(), prefix="fetch-") as tmp:
                self._publish(self.remote.download(digest, Path(tmp)), digest)
        if not location.exists():
            where = f"{self.root} or {self.remote.url}" if self.remote is not None else str(self.root)
            raise NotFoundError(f"No artifact {digest} under {where}.")
        return location

    def exists(self, digest: str) -> bool:
        return self._location(digest).exists() or (self.remote is not None and self.remote.exists(digest))

    def _mirror(self, digest: str) -> str:
        """Upload a just-published artifact to the remote, if there is one; the digest."""
        if self.remote is not None:
            self.remote.upload(digest, self._location(digest))
        return digest

    def _location(self, digest: str) -> Path:
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise UsageError(f"An artifact digest is 64 lowercase hex characters (sha256). Got {digest!r}.")
        return self.root / "sha256" / digest[:2] / digest[2:]

    def _tmp_root(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    @contextmanager
    def _temp_file(self) -> Iterator[tuple[Path, BinaryIO]]:
        fd, name = tempfile.mkstemp(dir=self._tmp_root(), prefix="file-")
        tmp = Path(name)
        try:
            tmp.chmod(_FILE_MODE)
            with open(fd, "wb") as out:
                yield tmp, out
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _publish(self, tmp: Path, digest: str) -> str:
        """Rename ``tmp`` to the digest's location, or drop it if that content is there already."""
        final = self._location(digest)
        try:
            if not final.exists():
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
        except OSError:
            # A concurrent writer published the same content first (renaming a folder onto a non-empty
            # folder fails); theirs is identical, so keep it.
            if not final.exists():
                _remove(tmp)
                raise
        _remove(tmp)  # no-op once renamed
        return digest


def _copy(src: BinaryIO, out: BinaryIO) -> str:
    """Copy while hashing; flush to disk so the rename that follows publishes complete bytes."""
    h = hashlib.sha256()
    while chunk := src.read(_CHUNK):
        h.update(chunk)
        out.write(chunk)
    out.flush()
    os.fsync(out.fileno())
    return h.hexdigest()


def _regular_files(directory: Path) -> list[str]:
    """Relative POSIX paths of the regular files under ``directory``, sorted."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                raise DataError(f"{path}: symbolic links cannot be stored in an artifact; copy the target.")
            if name in filenames and not path.is_file():
                raise DataError(f"{path}: not a regular file; only regular files can be stored.")
            if "\n" in name:
                raise DataError(f"{path!r}: file names with line breaks cannot be stored.")
        found.extend((Path(dirpath) / name).relative_to(directory).as_posix() for name in filenames)
    return sorted(found)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

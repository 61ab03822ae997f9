"""Artifacts in an object store: the content-addressed layout of :mod:`assay.store.artifacts` under any
fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``file:///shared/folder``), so that workers on other
machines read models and outputs by digest.

The local store stays the one every reader opens files from; the remote is its mirror. Writing an
artifact publishes it locally first (atomically, as ever), then uploads it: its files, then a manifest
object ``<location>.manifest`` last. An artifact exists remotely only once its manifest does, so a
reader never sees half an upload (an object store has no rename). Reading an artifact the local store
lacks downloads it into a private temporary folder, checks every file's sha256 and the digest of the
whole against the digest asked for, and only then publishes it into the local store. A mismatch, a
missing file or an altered manifest is a :class:`~assay.errors.DataError`, and nothing is kept.

Credentials come from the environment, as the filesystem's own library reads them (for S3, botocore's
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` and profiles); the URL never holds
them and assay never stores them. The manifest of a file artifact is the one line ``<digest>  .``; of a
folder, its manifest text (one ``<sha256>  <relative path>`` line per file, sorted), whose sha256 is the
digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from assay.errors import AssayError, DataError, MissingExtraError, UsageError

FILE_ENTRY = "."  # the manifest's path of a file artifact: the artifact itself


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path under it, or an error naming what to install."""
    try:
        import fsspec
    except ImportError:
        raise MissingExtraError("fsspec", "s3") from None
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError as e:  # the protocol's library: s3fs for s3://, gcsfs for gs://
        raise UsageError(
            f"artifact store {url!r}: {e}. For s3:// install it with: pip install 'assay[s3]'"
        ) from None
    except ValueError as e:
        raise UsageError(f"artifact store {url!r} is not a URL fsspec knows ({e}).") from None
    return fs, str(root).rstrip("/")


@contextmanager
def _remote_errors(url: str, action: str) -> Iterator[None]:
    """The object store's own failures (no bucket, no credentials, no network) as one DataError line."""
    try:
        yield
    except AssayError:
        raise
    except Exception as e:  # botocore, aiohttp and fsspec raise many kinds; each is the store's answer
        raise DataError(
            f"artifact store {url}: {action} failed ({type(e).__name__}: {e}). Check the URL, that the "
            "bucket exists, and the credentials in the environment (for S3: AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)."
        ) from None


class RemoteArtifacts:
    """The mirror of a local artifact store at ``url`` (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = _filesystem(url)

    def _location(self, digest: str) -> str:
        return f"{self.root}/sha256/{digest[:2]}/{digest[2:]}"

    def exists(self, digest: str) -> bool:
        with _remote_errors(self.url, f"looking up {digest}"):
            return bool(self.fs.exists(self._location(digest) + ".manifest"))

    def upload(self, digest: str, local: Path) -> None:
        """Copy the published artifact at ``local`` up, files first and its manifest last; a no-op if the
        remote has it already (content-addressed: the same digest is the same bytes)."""
        if self.exists(digest):
            return
        with _remote_errors(self.url, f"uploading {digest}"):
            self._upload(digest, local)

    def _upload(self, digest: str, local: Path) -> None:
        location = self._location(digest)
        if local.is_dir():
            lines = []
            # sorted by the relative path's text, as the local manifest is (not by Path, whose order differs
            # for "sub.txt" against "sub/x"), so the two manifests are the same bytes
            files = sorted((p.relative_to(local).as_posix(), p) for p in local.rglob("*") if p.is_file())
            for rel, path in files:
                self.fs.put_file(str(path), f"{location}/{rel}")
                lines.append(f"{_sha256(path)}  {rel}\n")
            manifest = "".join(lines)
        else:
            self.fs.put_file(str(local), location)
            manifest = f"{digest}  {FILE_ENTRY}\n"
        self.fs.pipe_file(location + ".manifest", manifest.encode("utf-8"))

    def download(self, digest: str, into: Path) -> Path:
        """The artifact fetched into the new folder ``into`` (``into/artifact``: a file or a folder), every
        file's digest and the whole checked; DataError when anything differs from what ``digest`` names."""
        with _remote_errors(self.url, f"downloading {digest}"):
            return self._download(digest, into)

    def _download(self, digest: str, into: Path) -> Path:
        location = self._location(digest)
        try:
            manifest = self.fs.cat_file(location + ".manifest").decode("utf-8")
        except FileNotFoundError:
            raise DataError(f"artifact {digest} is not in {self.url}.") from None
        entries = [line.split("  ", 1) for line in manifest.splitlines()]
        target = into / "artifact"
        if entries == [[digest, FILE_ENTRY]]:
            self.fs.get_file(location, str(target))
            _check(_sha256(target), digest, f"{self.url}: artifact {digest}")
            return target
        _check(
            hashlib.sha256(manifest.encode("utf-8")).hexdigest(),
            digest,
            f"{self.url}: the manifest of {digest}",
        )
        for expected, rel in entries:
            path = (target / rel).resolve()
            if not path.is_relative_to(target.resolve()):
                raise DataError(f"{self.url}: artifact {digest} names a file outside itself ({rel!r}).")
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fs.get_file(f"{location}/{rel}", str(path))
            except FileNotFoundError:
                raise DataError(f"{self.url}: artifact {digest} lacks its file {rel!r}.") from None
            _check(_sha256(path), expected, f"{self.url}: {rel} of artifact {digest}")
        return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _check(got: str, expected: str, what: str) -> None:
    if got != expected:
        raise DataError(
            f"{what} reads back as sha256 {got}, not {expected}: the object store's copy was altered."
        )

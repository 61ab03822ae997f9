"""Artifacts mirrored to an object store (fsspec's in-memory filesystem here; a real S3 endpoint in
tests/integration/test_artifacts_s3.py): written through, read back by digest on another machine's
store, and refused when the remote copy was altered or is incomplete."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import fsspec
import pytest

from assay.errors import DataError, NotFoundError
from assay.store import Store
from assay.store.artifacts import ArtifactStore
from assay.store.remote import RemoteArtifacts


@pytest.fixture
def url() -> str:
    return f"memory://assay-{uuid.uuid4().hex}"  # a bucket of its own per test: the filesystem is global


def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "spec.json").write_text('{"arch": "mlp"}')
    (folder / "sub" / "tokenizer.json").write_text("{}")
    (folder / "sub.txt").write_text("sorts before sub/ as text, after it as a path")
    return folder


def test_written_through_and_read_back_by_digest_elsewhere(tmp_path: Path, url: str) -> None:
    here = ArtifactStore(tmp_path / "here", RemoteArtifacts(url))
    folder = model_folder(tmp_path)
    digest = here.put_dir(folder)
    blob = here.put_bytes(b"per-example outputs")
    fs = fsspec.filesystem("memory")
    root = url.removeprefix("memory://")
    assert fs.exists(f"{root}/sha256/{digest[:2]}/{digest[2:]}.manifest")
    # The manifest of a folder is the local store's own: its sha256 is the digest.
    manifest = fs.cat_file(f"{root}/sha256/{digest[:2]}/{digest[2:]}.manifest")
    assert hashlib.sha256(manifest).hexdigest() == digest

    there = ArtifactStore(tmp_path / "there", RemoteArtifacts(url))  # another machine: nothing local
    assert there.exists(digest) and not (tmp_path / "there" / "sha256").exists()
    fetched = there.path(digest)
    assert fetched.is_relative_to(tmp_path / "there")
    for rel in ("weights.safetensors", "spec.json", "sub/tokenizer.json"):
        assert (fetched / rel).read_bytes() == (folder / rel).read_bytes()
    assert there.put_dir(fetched) == digest  # the same content, the same digest
    assert there.path(blob).read_bytes() == b"per-example outputs"
    assert list((tmp_path / "there" / "tmp").iterdir()) == []  # the downloads' folders are gone


def test_an_altered_or_incomplete_remote_copy_is_refused_and_nothing_is_kept(
    tmp_path: Path, url: str
) -> None:
    here = ArtifactStore(tmp_path / "here", RemoteArtifacts(url))
    digest = here.put_dir(model_folder(tmp_path))
    blob = here.put_bytes(b"outputs")
    fs, root = fsspec.filesystem("memory"), url.removeprefix("memory://")
    fs.pipe_file(f"{root}/sha256/{digest[:2]}/{digest[2:]}/spec.json", b'{"arch": "cnn"}')
    fs.pipe_file(f"{root}/sha256/{blob[:2]}/{blob[2:]}", b"outputz")
    there = ArtifactStore(tmp_path / "there", RemoteArtifacts(url))
    with pytest.raises(DataError, match=r"spec\.json of artifact .* reads back as sha256 .*altered"):
        there.path(digest)
    with pytest.raises(DataError, match=f"artifact {blob} reads back as sha256"):
        there.path(blob)
    assert not (tmp_path / "there" / "sha256").exists() and list((tmp_path / "there" / "tmp").iterdir()) == []
    # A manifest edited to name another file set no longer hashes to the digest.
    location = f"{root}/sha256/{digest[:2]}/{digest[2:]}.manifest"
    fs.pipe_file(location, fs.cat_file(location) + b"0" * 64 + b"  extra.bin\n")
    with pytest.raises(DataError, match="the manifest of"):
        there.path(digest)
    # An upload cut short (files, no manifest) is not an artifact at all.
    fs.rm(location)
    assert not there.exists(digest)
    with pytest.raises(NotFoundError, match=f"No artifact {digest} under .* or {url}"):
        there.path(digest)


def test_a_manifest_naming_a_path_outside_the_artifact_is_refused(tmp_path: Path, url: str) -> None:
    fs, root = fsspec.filesystem("memory"), url.removeprefix("memory://")
    manifest = f"{'0' * 64}  ../../escaped\n".encode()
    digest = hashlib.sha256(manifest).hexdigest()
    fs.pipe_file(f"{root}/sha256/{digest[:2]}/{digest[2:]}.manifest", manifest)
    with pytest.raises(DataError, match="names a file outside itself"):
        ArtifactStore(tmp_path / "there", RemoteArtifacts(url)).path(digest)
    assert not (tmp_path / "escaped").exists()


def test_the_store_takes_its_remote_from_the_environment(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSAY_ARTIFACTS_URL", url)
    with Store(home=tmp_path / "a") as store:
        assert store.artifacts.remote is not None and store.artifacts.remote.url == url
        digest = store.artifacts.put_bytes(b"x")
    monkeypatch.delenv("ASSAY_ARTIFACTS_URL")
    with Store(home=tmp_path / "b", artifacts_url=url) as store:
        assert store.artifacts.path(digest).read_bytes() == b"x"
    with Store(home=tmp_path / "c") as store:
        assert store.artifacts.remote is None and not store.artifacts.exists(digest)


def test_a_bad_url_or_an_unreachable_store_says_what_to_check(tmp_path: Path) -> None:
    from assay.errors import UsageError

    with pytest.raises(
        UsageError, match=r"artifact store 'nosuchprotocol://bucket/x' is not a URL fsspec knows"
    ):
        RemoteArtifacts("nosuchprotocol://bucket/x")
    remote = RemoteArtifacts(f"file://{tmp_path / 'not-a-folder'}")
    (tmp_path / "not-a-folder").write_text("a file where the store's folder should be")
    with pytest.raises(DataError, match=r"uploading .* failed .*Check the URL, that the bucket exists"):
        ArtifactStore(tmp_path / "here", remote).put_bytes(b"x")

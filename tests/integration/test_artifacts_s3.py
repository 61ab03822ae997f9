"""Artifacts through a real S3-compatible HTTP endpoint: moto's standalone server, which
``scripts/with-s3.sh`` starts (``make test`` runs the suite under it). A model registered on one
machine's store is read by digest on another's, and an object altered in the bucket is refused."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

ENDPOINT = os.environ.get("ASSAY_TEST_S3_ENDPOINT")
pytestmark = pytest.mark.skipif(
    ENDPOINT is None, reason="ASSAY_TEST_S3_ENDPOINT is not set; run under scripts/with-s3.sh to test S3"
)


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> str:
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    # Credentials and endpoint from the environment, as a user's would be: the URL holds neither.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", str(ENDPOINT))
    name = f"assay-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def test_a_model_registered_here_is_read_by_digest_there(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from tests.integration.test_cli import TRAIN, invoke

    home_a, home_b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("ASSAY_ARTIFACTS_URL", f"s3://{bucket}/team")
    code, out, err = invoke(*TRAIN, "--home", str(home_a), "--json")
    assert code == 0, err
    digest = json.loads(out)["artifact_digest"]
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"team/sha256/{digest[:2]}/{digest[2:]}.manifest" in keys
    assert any(k.startswith(f"team/sha256/{digest[:2]}/{digest[2:]}/") for k in keys)
    # Another machine: the same registry, an empty artifact folder; evaluating fetches the model.
    monkeypatch.setenv("ASSAY_DB_URL", f"sqlite:///{home_a / 'assay.db'}")
    code, out, err = invoke("eval", "digits@v1", "--home", str(home_b), "--json")
    assert code == 0, err
    assert (home_b / "artifacts" / "sha256" / digest[:2] / digest[2:]).is_dir()


def test_an_object_altered_in_the_bucket_is_refused(tmp_path: Path, bucket: str) -> None:
    import boto3

    from assay.errors import DataError
    from assay.store.artifacts import ArtifactStore
    from assay.store.remote import RemoteArtifacts

    url = f"s3://{bucket}/outputs"
    here = ArtifactStore(tmp_path / "here", RemoteArtifacts(url))
    digest = here.put_bytes(b"per-example outputs " * 1000)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(os.urandom(4096))
    (folder / "spec.json").write_text("{}")
    model = here.put_dir(folder)
    there = ArtifactStore(tmp_path / "there", RemoteArtifacts(url))
    assert (
        there.path(model).joinpath("weights.safetensors").read_bytes()
        == (folder / "weights.safetensors").read_bytes()
    )
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=f"outputs/sha256/{digest[:2]}/{digest[2:]}", Body=b"tampered")
    with pytest.raises(DataError, match=f"artifact {digest} reads back as sha256"):
        ArtifactStore(tmp_path / "elsewhere", RemoteArtifacts(url)).path(digest)
    assert not (tmp_path / "elsewhere" / "sha256").exists()
    with pytest.raises(DataError, match=r"uploading .* failed .*the bucket exists"):
        ArtifactStore(tmp_path / "x", RemoteArtifacts(f"s3://no-such-bucket-{bucket}/x")).put_bytes(b"x")

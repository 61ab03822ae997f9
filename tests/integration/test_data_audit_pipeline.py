"""The pipeline's leakage policy: refused before training unless waived; the waiver comes back with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assay.errors import RefusedError
from assay.pipeline import pipeline_from_dict, run_pipeline
from assay.workspace import Workspace
from tests.unit.data.audit.conftest import smooth_images


@pytest.fixture
def leaky(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = np.rint(smooth_images(260, 12) * 255).astype(np.uint8)[:, 0]
    y = rng.integers(0, 2, 260)
    x_test = x[200:].copy()
    x_test[:3] = x[:3]  # 3 of 60 test images are training images
    path = tmp_path / "leaky.npz"
    np.savez(
        path,
        x_train=x[:160],
        y_train=y[:160],
        x_val=x[160:200],
        y_val=y[160:200],
        x_test=x_test,
        y_test=y[200:],
    )
    return path


def _pipeline(data: Path, audit: dict[str, object]) -> dict[str, object]:
    return {
        "data": {"source": f"npz:{data}"},
        "model": {"name": "leaky", "arch": "mlp", "spec": {"hidden": [8]}},
        "train": {"epochs": 1, "precision": "fp32"},
        "audit": audit,
    }


def test_a_leaking_test_split_is_refused_before_training(leaky: Path, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "home")
    pipeline = pipeline_from_dict(_pipeline(leaky, {"max_leakage": 0.01}), source="test")
    with pytest.raises(
        RefusedError, match=r"3 of 60 test examples have a copy in train .* max_leakage of 0.01"
    ):
        run_pipeline(ws, pipeline, progress=False)
    assert ws.store.list_models() == []  # nothing registered


def test_a_waiver_registers_and_comes_back_with_the_measurement(leaky: Path, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "home")
    spec = _pipeline(leaky, {"max_leakage": 0.01, "waive": "known duplicates, kept for comparability"})
    result = run_pipeline(ws, pipeline_from_dict(spec, source="test"), progress=False)
    assert result.audit is not None and result.audit["waived"]
    assert result.audit["waiver"] == "known duplicates, kept for comparability"
    lineage = result.version.lineage["audit"]  # the waiver stays on the version, not only in the result
    assert lineage["waiver"] == result.audit["waiver"] and lineage["leakage"]["value"] > 0.01
    assert result.audit["leakage"]["details"]["count"] == 3
    assert result.version.ref == "leaky@v1"


def test_below_the_threshold_nothing_is_waived(leaky: Path, tmp_path: Path) -> None:
    from assay.data import load_dataset, parse_data_arg
    from assay.pipeline import AuditSection, check_leakage

    data = load_dataset(parse_data_arg(f"npz:{leaky}"))
    record = check_leakage(data, AuditSection(max_leakage=0.1, waive="unused"))
    assert not record["waived"] and record["waiver"] is None
    assert record["leakage"]["value"] == pytest.approx(0.05)


def test_the_policy_reads_leakage_only_never_label_findings(tmp_path: Path) -> None:
    """Data whose label audit is unreliable (weak features, 12% planted noise): the [audit] policy records
    the leakage measurement and nothing about labels, so an unreliable label finding cannot refuse or
    waive a release, nor land in a version's lineage as a fact."""
    import pandas as pd

    from assay.data import load_dataset, parse_data_arg
    from assay.data.audit import AuditContext, from_dataset, run_audit
    from assay.pipeline import AuditSection, check_leakage
    from tests.unit.data.audit.sentences import bag_of_words, noisy_sentences

    sentences = noisy_sentences("weak")
    counts = bag_of_words(sentences.texts)
    table = tmp_path / "sentences.csv"
    frame = pd.DataFrame(counts, columns=[f"h{k}" for k in range(counts.shape[1])])
    frame["topic"] = sentences.labels
    frame.to_csv(table, index=False)
    data = load_dataset(parse_data_arg(f"csv:{table}", target="topic"))
    labels = run_audit(AuditContext(from_dataset(data)), ["label_issues"]).get("label_issues[train]")
    assert labels.details.get("unreliable")  # the premise: this data's label findings are not facts
    record = check_leakage(data, AuditSection(max_leakage=0.0))
    assert set(record) == {"leakage", "max_leakage", "waived", "waiver"}
    assert record["leakage"]["name"] == "leakage[test:train]" and not record["waived"]

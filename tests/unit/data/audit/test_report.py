"""The audit's files: complete or absent, never half-written; the datasheet valid Croissant 1.0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assay.data.audit import CHECKS, AuditCheck, AuditContext, run_audit
from assay.data.audit.datasheet import CROISSANT_1_0, Declared, check_croissant, croissant
from assay.data.audit.report import audit_stem, png, write_audit
from assay.measurement import Measurement

from .conftest import Planted

QUICK = [
    "class_balance",
    "exact_duplicates",
    "near_duplicates",
    "perceptual_duplicates",
    "leakage",
    "outliers",
]


def test_files_are_written_with_status_complete_and_thumbnails(planted: Planted, tmp_path: Path) -> None:
    result = run_audit(AuditContext(planted.data), QUICK)
    paths, document = write_audit(result, tmp_path)
    stored = json.loads(paths.json.read_text())
    assert stored == document and stored["status"] == "complete" and stored["schema"] == "assay.data-audit/1"
    names = {m["name"] for m in stored["measurements"]}
    assert {"leakage[test:train]", "near_duplicates[train]", "imbalance_ratio[test]"} <= names
    html = paths.html.read_text()
    assert html.count("data:image/png;base64,") >= 2 * 12  # the pairs of the leakage finding, as images
    assert "test-0 ~ train-10" in html
    assert "<script" not in html and "http://" not in html.split("</style>")[1]
    assert paths.json.name.startswith("audit-planted-")  # the dataset's name and a suffix of its own
    stem = paths.json.name.removesuffix(".json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{stem}.croissant.json",
        f"{stem}.html",
        f"{stem}.json",
    ]


def test_every_audit_gets_files_of_its_own(planted: Planted, tmp_path: Path) -> None:
    result = run_audit(AuditContext(planted.data), ["class_balance"])
    first, _ = write_audit(result, tmp_path)
    second, _ = write_audit(result, tmp_path)
    assert len({first.html, second.html}) == 2 and all(p.is_file() for p in (*first, *second))
    assert len(list(tmp_path.iterdir())) == 6  # the first audit's files are still there, complete
    assert json.loads(first.json.read_text())["status"] == "complete"


@pytest.mark.parametrize(
    ("name", "start"), [("my data/v2", "audit-my_data_v2-"), ("..", "audit-data-"), ("é x", "audit-x-")]
)
def test_the_stem_is_a_plain_file_name_whatever_the_dataset_is_called(name: str, start: str) -> None:
    stem = audit_stem(name)
    assert stem.startswith(start) and len(stem) == len(start) + 8 and Path(stem).name == stem


def test_an_interrupted_audit_leaves_the_previous_files_and_no_temporary_ones(
    planted: Planted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_audit(run_audit(AuditContext(planted.data), ["class_balance"]), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def interrupted(ctx: AuditContext) -> list[Measurement]:
        raise KeyboardInterrupt

    monkeypatch.setitem(CHECKS._items, "zz_interrupt", AuditCheck("zz_interrupt", "interrupts", interrupted))
    with pytest.raises(KeyboardInterrupt):
        write_audit(run_audit(AuditContext(planted.data), ["class_balance", "zz_interrupt"]), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_an_interruption_while_writing_leaves_none_of_its_files(
    planted: Planted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_audit(AuditContext(planted.data), ["class_balance"])
    calls = []
    real = __import__("os").replace

    def replace(src: str, dst: str) -> None:
        calls.append(dst)
        if str(dst).endswith(".html"):
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr("assay.data.audit.report.os.replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_audit(result, tmp_path)
    # The datasheet was in place when the interruption came, and was removed: no audit is left half in
    # place, nothing marked complete, nothing temporary.
    stem = Path(calls[-1]).stem
    assert [Path(c).name for c in calls] == [f"{stem}.croissant.json", f"{stem}.html"]
    assert not list(tmp_path.iterdir())


def test_a_failing_check_becomes_an_error_measurement_and_the_rest_runs(
    planted: Planted, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ctx: AuditContext) -> list[Measurement]:
        raise RuntimeError("boom")

    monkeypatch.setitem(CHECKS._items, "zz_broken", AuditCheck("zz_broken", "fails", broken))
    result = run_audit(AuditContext(planted.data), ["zz_broken", "class_balance"])
    assert result.get("zz_broken").status == "error" and "boom" in result.get("zz_broken").details["message"]
    assert result.get("imbalance_ratio[train]").status == "ok"


@pytest.mark.filterwarnings("ignore::DeprecationWarning:rdflib.*")
def test_croissant_file_validates_and_carries_measured_and_declared_facts(
    planted: Planted, tmp_path: Path
) -> None:
    result = run_audit(AuditContext(planted.data), QUICK)
    declared = Declared(
        licence="CC-BY-4.0",
        source="synthetic blobs made by the test",
        collection="generated with numpy, seed 7",
        intended_use="testing the audit",
        url="https://example.org/planted",
        version="1.0.0",
        date_published="2026-12-01",
        citation="Planted et al. 2026",
    )
    document = croissant(result, declared)
    assert check_croissant(document) == []
    assert document["conformsTo"] == CROISSANT_1_0 and document["license"] == "CC-BY-4.0"
    assert "13 of 100" in document["rai:dataLimitations"]  # the leaked test examples, measured
    assert document["rai:dataCollection"].startswith("synthetic blobs")
    assert document["rai:dataUseCases"] == "testing the audit"
    path = tmp_path / "planted.croissant.json"
    path.write_text(json.dumps(document))
    mlc = pytest.importorskip("mlcroissant")
    dataset = mlc.Dataset(jsonld=path)  # raises on any validation error
    assert not dataset.metadata.ctx.issues.errors
    assert dataset.metadata.name == "planted"


def test_check_croissant_names_missing_fields() -> None:
    problems = check_croissant({"@type": "sc:Dataset", "name": "x", "distribution": [{"name": "f"}]})
    assert "missing 'license'" in problems and "missing 'conformsTo'" in problems
    assert "distribution 'f' lacks 'sha256'" in problems


def test_png_is_a_valid_image() -> None:
    from base64 import b64decode
    from io import BytesIO

    from PIL import Image

    x = np.linspace(0, 1, 12 * 10).reshape(1, 12, 10)
    image = Image.open(BytesIO(b64decode(png(x, scale=1).split(",", 1)[1])))
    assert image.size == (10, 12) and image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), np.rint(x[0] * 255).astype(np.uint8))

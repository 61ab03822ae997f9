"""Writing a report: the JSON twin, atomic replacement, nothing half-written on failure."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assay.errors import UsageError
from assay.governance import governance
from assay.measurement import Measurement
from assay.report import ReportPaths, render_json, write_report
from assay.report import render as render_module

MakeDocument = Callable[..., dict[str, Any]]


def _light(make_document: MakeDocument, kind: str = "comparison") -> dict[str, Any]:
    """The fixture without figures: these tests are about files, and figures are the slow part."""
    doc = make_document(kind)
    doc["plots"] = {}
    return doc


def _strict_loads(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"JSON holds {constant}")

    return json.loads(text, parse_constant=refuse)


def test_writes_html_and_json_and_nothing_else(make_document: MakeDocument, tmp_path: Path) -> None:
    doc = make_document("comparison")
    paths = write_report(doc, tmp_path / "reports", "gate-fmnist")
    assert paths == ReportPaths(
        tmp_path / "reports" / "gate-fmnist.html", tmp_path / "reports" / "gate-fmnist.json"
    )
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "gate-fmnist.html",
        "gate-fmnist.json",
    ]
    assert paths.html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    # The document as given, key order kept, and the governance map of its evidence added at the end.
    expected = {**doc, "governance": governance(doc)}
    assert _strict_loads(paths.json.read_text()) == expected
    text = paths.json.read_text()
    assert text == json.dumps(expected, indent=2, sort_keys=False) + "\n"


def test_files_get_the_permissions_of_any_new_file(make_document: MakeDocument, tmp_path: Path) -> None:
    paths = write_report(_light(make_document), tmp_path, "r")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert paths.html.stat().st_mode == paths.json.stat().st_mode == plain.stat().st_mode


def test_json_has_no_nan_and_numpy_values_become_plain(make_document: MakeDocument, tmp_path: Path) -> None:
    doc = _light(make_document)
    doc["measurements"].append(Measurement("mce", "calibration", float("nan")).to_dict())
    doc["measurements"][0]["value"] = np.float32(0.5)
    doc["measurements"][0]["n"] = np.int64(10_000)
    doc["measurements"][0]["ci_low"] = float("-inf")
    doc["plots"] = {"confusion_matrix": {"candidate": np.eye(3, dtype=np.int64), "baseline": None}}
    doc["environment"]["seeds"] = {"train": np.int32(2)}
    before = repr(doc)
    paths = write_report(doc, tmp_path, "r")
    text = paths.json.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = _strict_loads(text)
    assert loaded["measurements"][-1]["value"] is None
    assert loaded["measurements"][0]["value"] == 0.5 and loaded["measurements"][0]["n"] == 10_000
    assert loaded["measurements"][0]["ci_low"] is None
    assert loaded["plots"]["confusion_matrix"]["candidate"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert repr(doc) == before  # the caller's document is not modified
    assert render_json(loaded) == text  # the JSON re-renders to itself: a fixed point


def test_report_json_renders_back_to_the_same_html(make_document: MakeDocument, tmp_path: Path) -> None:
    """`assay report file.json` re-renders a saved report: the page must be the one written beside it."""
    doc = _light(make_document, "evaluation")
    doc["measurements"][0]["value"] = float("nan")
    paths = write_report(doc, tmp_path, "first")
    again = write_report(json.loads(paths.json.read_text()), tmp_path, "second")
    assert again.html.read_bytes() == paths.html.read_bytes()
    assert math.isnan(doc["measurements"][0]["value"])


def test_replacing_an_existing_report(make_document: MakeDocument, tmp_path: Path) -> None:
    doc = _light(make_document)
    write_report(doc, tmp_path, "r")
    doc["title"] = "second version"
    paths = write_report(doc, tmp_path, "r")
    assert "second version" in paths.html.read_text()
    assert _strict_loads(paths.json.read_text())["title"] == "second version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json"]


def _old_report(make_document: MakeDocument, folder: Path) -> dict[str, bytes]:
    write_report(_light(make_document), folder, "r")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_failed_rename_leaves_the_old_report_and_no_temporary_file(
    make_document: MakeDocument, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _old_report(make_document, tmp_path)

    def broken_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(render_module.os, "replace", broken_replace)
    doc = _light(make_document)
    doc["title"] = "new"
    with pytest.raises(OSError, match="No space left"):
        write_report(doc, tmp_path, "r")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old


def test_failed_write_leaves_the_old_report_and_no_temporary_file(
    make_document: MakeDocument, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _old_report(make_document, tmp_path)
    calls = []

    def fsync_fails_second_time(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the JSON temp file is complete, the HTML one fails
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(render_module.os, "fsync", fsync_fails_second_time)
    with pytest.raises(OSError, match="Input/output error"):
        write_report(_light(make_document), tmp_path, "r")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old


def test_render_error_writes_nothing(make_document: MakeDocument, tmp_path: Path) -> None:
    old = _old_report(make_document, tmp_path)
    doc = _light(make_document)
    doc["environment"]["clock"] = object()
    with pytest.raises(UsageError, match=r"environment\.clock"):
        write_report(doc, tmp_path, "r")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old
    with pytest.raises(UsageError):
        write_report(doc, tmp_path / "never", "r")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("stem", ["", "../escape", "sub/dir", ".hidden"])
def test_stem_must_be_a_plain_file_name(make_document: MakeDocument, tmp_path: Path, stem: str) -> None:
    with pytest.raises(UsageError, match="plain file name"):
        write_report(_light(make_document), tmp_path, stem)
    assert list(tmp_path.iterdir()) == []

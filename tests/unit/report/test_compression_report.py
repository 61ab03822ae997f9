"""The compression search's page: summary, Pareto figures, every trial with its link and reason."""

from __future__ import annotations

import json
import re
from pathlib import Path

from assay.report.compression import render_compression_html, write_compression_report
from tests.unit.report.conftest import compression_document


def test_page_shows_best_frontier_and_every_trial(tmp_path: Path) -> None:
    doc = compression_document(tmp_path)
    html = render_compression_html(doc, tmp_path)
    assert "Best passing variant for latency_b1: pruned50+ort_static_int8" in html
    assert len(re.findall(r'<svg class="plot"', html)) == 4  # one Pareto plot per cost axis
    for trial in doc["trials"]:
        assert f"<b>{trial['key']}</b>" in html
    assert '<a href="gate-onnx.html">' in html  # relative: the folder can be moved or served as is
    assert html.count('<a xlink:href="gate-onnx.html"') == 4  # the point in each Pareto plot links too
    assert "this CPU has no native bf16" in html and "FAIL: 1 of 3 gated rule(s) failed" in html


def test_implausible_speedup_is_not_printed(tmp_path: Path) -> None:
    html = render_compression_html(compression_document(tmp_path), tmp_path)
    row = html[html.index("<b>torchao_int8_weight_only</b>") :].split("</tr>")[0]
    assert "implausible" in row and "125.00x" not in row and "125.0x faster" in row  # the flag says why
    onnx_row = html[html.index("<b>onnx_fp32</b>") :].split("</tr>")[0]
    assert "2.78x" in onnx_row  # 0.25 ms / 0.09 ms, a plausible figure, printed


def test_nothing_passed_and_interrupted_are_said(tmp_path: Path) -> None:
    doc = {**compression_document(tmp_path), "best": None, "status": "interrupted",
           "stop_reason": "interrupted by the user"}  # fmt: skip
    html = render_compression_html(doc, tmp_path)
    assert "No variant passed the gate" in html and "stopped: interrupted by the user" in html


def test_written_pair_is_the_document(tmp_path: Path) -> None:
    doc = compression_document(tmp_path)
    paths = write_compression_report(doc, tmp_path, "compress-x")
    assert json.loads(paths.json.read_text())["trials"] == doc["trials"]
    assert paths.html.read_text() == render_compression_html(doc, tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))

"""The compression search's page: summary, Pareto figures, every trial with its link and reason."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from assay.report.compression import ratio_words, render_compression_html, write_compression_report
from tests.unit.report.conftest import compression_document


def test_page_shows_best_frontier_and_every_trial(tmp_path: Path) -> None:
    doc = compression_document(tmp_path)
    html = render_compression_html(doc, tmp_path)
    assert "Best passing variant for latency_b1: pruned50+ort_static_int8" in html
    assert len(re.findall(r'<svg class="plot"', html)) == 5  # one Pareto plot per cost axis, and money
    for trial in doc["trials"]:
        assert f"<b>{trial['key']}</b>" in html
    assert '<a href="gate-onnx.html">' in html  # relative: the folder can be moved or served as is
    assert html.count('<a xlink:href="gate-onnx.html"') == 5  # the point in each Pareto plot links too
    assert "this CPU has no native bf16" in html and "FAIL: 1 of 3 gated rule(s) failed" in html


def test_cost_section_names_the_cheapest_trusted_passing_model_per_target(tmp_path: Path) -> None:
    doc = compression_document(tmp_path)
    html = render_compression_html(doc, tmp_path)
    section = html[html.index('<section id="cost">') :].split("</section>")[0]
    cheapest = section[section.index('class="data cost-cheapest"') :].split("</table>")[0]
    for target in [t["name"] for t in doc["cost"]["targets"]]:
        row = cheapest[cheapest.index(f"<td><b>{target}</b></td>") :].split("</tr>")[0]
        # torchao's 0.002 ms is cheaper but flagged implausible; ort_static_int8 failed its gate.
        assert (
            "pruned50+ort_static_int8" in row and "torchao" not in row and "<td>ort_static_int8<" not in row
        )
        assert ("measured" if target == "this machine" else "projected") in row
    local = doc["cost"]["rows"][2]["costs"]["this machine"]["b1"]  # pruned50: 0.05 ms a call
    assert f"{local['usd']:.3g}" == f"{0.05 / 1e3 * 1000 / 3600 * 0.11592:.3g}"
    assert "never measured there" in section and "aws.amazon.com/ec2/pricing" in section


def test_implausible_speedup_is_not_printed(tmp_path: Path) -> None:
    html = render_compression_html(compression_document(tmp_path), tmp_path)
    row = html[html.index("<b>torchao_int8_weight_only</b>") :].split("</tr>")[0]
    assert "implausible" in row and "125.00x" not in row and "125.0x faster" in row  # the flag says why
    onnx_row = html[html.index("<b>onnx_fp32</b>") :].split("</tr>")[0]
    assert "2.78x faster" in onnx_row  # 0.25 ms / 0.09 ms, a plausible figure, printed
    assert "1.01x larger" in onnx_row  # 1,702,123 bytes against the parent's 1,688,976


@pytest.mark.parametrize(
    ("metric", "parent", "variant", "words"),
    [
        ("size_on_disk", 67.7, 75.2, "1.11x larger"),  # the variant, once printed "0.90x smaller"
        ("size_on_disk", 75.2, 67.7, "1.11x smaller"),
        ("size_on_disk", 1024, 1024, "the same size"),
        ("latency_p50_b1", 0.041, 0.11, "2.68x slower"),  # the bf16 variant against its parent
        ("latency_p50_b1", 0.25, 0.1, "2.50x faster"),
        ("throughput", 1000, 2500, "2.50x faster"),  # more examples a second is faster
        ("throughput", 2500, 1000, "2.50x slower"),
        ("peak_memory", 10, 20, "2.00x more memory"),
        ("latency_p50_b1", None, 0.1, "\u2014"),
    ],
)
def test_ratios_are_worded_by_their_direction(metric: str, parent: float, variant: float, words: str) -> None:
    assert ratio_words(metric, parent, variant) == words


def test_slower_and_larger_variants_read_so(tmp_path: Path) -> None:
    doc = compression_document(tmp_path)
    worse = copy.deepcopy(doc["trials"][0])
    worse["key"], worse["report"] = "worse", None
    worse["metrics"]["latency_p50_b1"]["value"] = 0.625  # the parent's 0.25 ms, 2.5 times over
    worse["metrics"]["size_on_disk"]["value"] = 1_688_976 * 1.11
    html = render_compression_html({**doc, "trials": [*doc["trials"], worse]}, tmp_path)
    row = html[html.index("<b>worse</b>") :].split("</tr>")[0]
    assert "2.50x slower" in row and "1.11x larger" in row
    assert not re.search(r"0\.\d\dx", html)  # no ratio below 1 anywhere on the page


def test_no_improvement_is_the_headline_with_its_reason(tmp_path: Path) -> None:
    message = (
        "no variant improves on the parent for latency_b1: best passing was onnx_fp32 (fmnist-cnn@onnx_fp32) "
        "at 0.30 ms against the parent's 0.25 ms (1.20x slower)"
    )
    outcome = {"verdict": "no_improvement", "best": None, "closest": "onnx_fp32", "message": message}
    html = render_compression_html(
        {**compression_document(tmp_path), "best": None, "outcome": outcome}, tmp_path
    )
    summary = html[html.index('<section id="summary"') :].split("</section>")[0]
    assert "No variant improves on the parent for latency_b1" in summary and "status-failed" in summary
    assert message.replace("'", "&#39;") in summary
    assert "Best passing variant" not in html


def test_install_hints_keep_their_extra(tmp_path: Path) -> None:
    doc = compression_document(tmp_path)
    hint = "ONNX export needs onnx and onnxscript: pip install 'assay[compress]'"
    skipped = {**doc["trials"][-1], "key": "onnx_missing", "reason": hint}
    html = render_compression_html({**doc, "trials": [*doc["trials"], skipped]}, tmp_path)
    row = html[html.index("<b>onnx_missing</b>") :].split("</tr>")[0]
    assert "pip install &#39;assay[compress]&#39;" in row


def test_nothing_passed_and_interrupted_are_said(tmp_path: Path) -> None:
    doc = {**compression_document(tmp_path), "best": None, "status": "interrupted",
           "stop_reason": "interrupted by the user"}  # fmt: skip
    html = render_compression_html(doc, tmp_path)
    assert "No variant passed the gate" in html and "stopped: interrupted by the user" in html


def test_a_running_search_lists_its_trials_and_draws_the_figures_once_it_ends(tmp_path: Path) -> None:
    doc = {**compression_document(tmp_path), "status": "running"}
    html = render_compression_html(doc, tmp_path)
    assert 'class="plot"' not in html and "The figures are drawn when the search ends" in html
    assert all(f"<b>{trial['key']}</b>" in html for trial in doc["trials"])
    interrupted = render_compression_html({**doc, "status": "interrupted"}, tmp_path)
    assert len(re.findall(r'<svg class="plot"', interrupted)) == 5


def test_written_pair_is_the_document(tmp_path: Path) -> None:
    doc = compression_document(tmp_path)
    paths = write_compression_report(doc, tmp_path, "compress-x")
    assert json.loads(paths.json.read_text())["trials"] == doc["trials"]
    assert paths.html.read_text() == render_compression_html(doc, tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))

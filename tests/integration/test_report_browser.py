"""The report as a browser shows it: headless Chromium loads the file, lays it out and draws it.

Checks what unit tests on the HTML text cannot: that the page parses into the sections and inline SVG
figures a reader sees, that the stylesheet applies, and that the screenshot is a drawn page, not blank.
A gate report that assay itself made is read the same way for what a reader could misread: each p-value
with its test and sidedness beside it, the one-sided wording of the policy, the informational rules'
own badge, and the note beside an estimate outside its interval.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image
import pytest

from assay.report import write_report
from tests.integration.browser import near, needs_chromium, run_chromium
from tests.unit.report.conftest import PLANTED_NOTE, gate_document, report_document
from tests.unit.report.test_render import section, text_of

pytestmark = pytest.mark.browser

SECTIONS = [
    "summary",
    "gate",
    "models",
    "metrics",
    "calibration",
    "confusion-matrix",
    "efficiency",
    "robustness-curves",
    "training",
    "governance",
    "environment",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(report_document("comparison"), tmp_path_factory.mktemp("report"), "comparison").html


@needs_chromium
def test_browser_dom_has_every_section_and_the_figures(report: Path, tmp_path: Path) -> None:
    result = run_chromium(tmp_path, "--dump-dom", report.as_uri())
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    for section_id in SECTIONS:
        assert f'<section id="{section_id}"' in dom
    # The browser parsed the inline figures as SVG elements, with their text as text.
    assert len(re.findall(r"<svg\b[^>]*\bclass=\"plot\"", dom)) == 8
    assert dom.count("<text") > 200
    assert "91.2" in dom and "PASSED" in dom.upper()


@needs_chromium
def test_browser_screenshot_is_a_drawn_page(report: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    result = run_chromium(tmp_path, f"--screenshot={png}", report.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert png.is_file() and png.stat().st_size > 50_000
    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (4000, 1280)
    assert float(image[..., :3].std()) > 0.05  # not a blank page
    # The stylesheet applied: the passed badge's green background and the page's grey are on screen.
    assert near(image, "#dcfce7") > 2_000
    assert near(image, "#f4f5f7") > 50_000
    # The figures were drawn: the forest plot's strokes in the candidate blue or the pass green.
    assert near(image, "#2563eb", 0.08) + near(image, "#15803d", 0.08) > 200


@needs_chromium
def test_compression_report_renders_in_the_browser(tmp_path: Path) -> None:
    from assay.report.compression import write_compression_report
    from tests.unit.report.conftest import compression_document

    page = write_compression_report(compression_document(tmp_path), tmp_path, "compress").html
    result = run_chromium(tmp_path, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    for section_id in ("summary", "frontier", "trials", "cost", "hardware"):
        assert f'<section id="{section_id}"' in result.stdout
    assert len(re.findall(r"<svg\b[^>]*\bclass=\"plot\"", result.stdout)) == 5
    cost = result.stdout[result.stdout.index('<section id="cost"') :].split("</section>")[0]
    assert cost.count("<tr>") >= 1 + 5 and "projected" in cost and "aws-g4dn.xlarge" in cost
    png = tmp_path / "compress.png"
    result = run_chromium(tmp_path, f"--screenshot={png}", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    image = matplotlib.image.imread(png)
    assert float(image[..., :3].std()) > 0.05
    assert near(image, "#15803d", 0.08) > 100  # the passed points in the Pareto plots


GATE_PAGE_HEIGHT = 9_000


@pytest.fixture(scope="module")
def gate_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(gate_document(), tmp_path_factory.mktemp("gate"), "gate").html


def _element(dom: str, pattern: str) -> str:
    match = re.search(pattern, dom, re.S)
    assert match, pattern
    return match.group(0)


@needs_chromium
def test_gate_report_names_tests_sides_badges_and_notes_in_the_browser(
    gate_page: Path, tmp_path: Path
) -> None:
    result = run_chromium(tmp_path, "--dump-dom", gate_page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    gate = section(dom, "gate")
    # Each rule's p-value, its Holm-adjusted p and, in the next cell, its test with its sidedness.
    rule_tests = re.findall(
        r'<td class="num">[^<]+</td>\s*<td class="num">[^<]+</td>\s*<td class="test">([^<]+)</td>', gate
    )
    assert rule_tests == ["one-sided paired bootstrap"] * 4 + ["one-sided bootstrap (unpaired)"]
    # The comparison's p-value for the same metric names its own, two-sided, test.
    accuracy = _element(
        section(dom, "metrics"), r'<tr class="row-ok"[^>]*>(?:(?!</tr>).)*?<code>accuracy</code>.*?</tr>'
    )
    assert re.search(r'<td class="num">[^<]+</td>\s*<td class="test">two-sided exact McNemar</td>', accuracy)
    # The policy's level is family-wise and its rules one-sided; "two-sided" is not said of them.
    lead = text_of(_element(gate, r'<p class="lead policy-level">.*?</p>'))
    assert "family-wise error rate \u03b1 = 0.05 across the 3 gated rules (Holm's step-down)" in lead
    assert "every rule is a one-sided test" in lead and "two-sided" not in lead
    # Informational rules have their own badge; no gated rule's pass or FAIL on them.
    badges = re.findall(r'<span class="pill pill-([a-z]+)">([^<]+)</span>', gate)
    assert [b for b in badges if b[0] == "info"] == [("info", "info: would pass")] * 2
    assert sorted(text for kind, text in badges if kind != "info") == ["FAIL", "FAIL", "pass"]
    # The estimate outside its interval has its note beside it, in the same cell.
    planted = _element(dom, r'<tr class="row-ok"[^>]*>(?:(?!</tr>).)*?<code>classwise_mce</code>.*?</tr>')
    cell = _element(planted, r'<td class="num">(?:(?!</td>).)*?outside-note.*?</td>')
    note = f"\u26a0 estimate outside its 95% interval \u2014 {PLANTED_NOTE}"
    assert text_of(cell) == f"22.5% [23.8, 66.0] {note}"

    # The whole page (about 8,600 px tall), so the screenshot holds the metrics' note as well as the gate.
    png = tmp_path / "gate.png"
    result = run_chromium(tmp_path, f"--screenshot={png}", gate_page.as_uri(), height=GATE_PAGE_HEIGHT)
    assert result.returncode == 0, result.stderr[-2000:]
    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (GATE_PAGE_HEIGHT, 1280) and float(image[..., :3].std()) > 0.05
    # The stylesheet drew the badges apart: the informational blue, the failed red, the flagged amber.
    assert near(image, "#dbeafe") > 500  # .pill-info (nothing else on a failed report is this blue)
    assert near(image, "#fee2e2") > 2_000  # the failed verdict badge and the FAIL pills
    assert near(image, "#fef3c7") > 200  # the "flagged timings" tag on the latency rule
    # The notes' amber text was drawn (the outside-interval note, the flags), not only their tags' fill.
    assert near(image, "#92400e", 0.12) > 300


@needs_chromium
@pytest.mark.parametrize("kind", ["evaluation", "gate"])
def test_the_governance_section_maps_this_runs_figures_and_lists_what_is_open(
    kind: str, tmp_path: Path
) -> None:
    doc = report_document("evaluation") if kind == "evaluation" else gate_document()
    page = write_report(doc, tmp_path, kind).html
    result = run_chromium(tmp_path, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    governance = section(dom, "governance")
    covered = governance[governance.index('class="data governance covered"') :].split("</table>")[0]
    uncovered = governance[governance.index('class="data governance uncovered"') :].split("</table>")[0]
    # MEASURE: this run's accuracy under 2.3, linked to its row in the metrics table, which exists.
    assert "MEASURE 2.3" in covered and "MEASURE 2.5" in covered
    assert '<a href="#metric-accuracy">accuracy</a>' in covered and 'id="metric-accuracy"' in dom
    # MANAGE: post-deployment monitoring and incidents come from serving, so a report lists them as open.
    for open_id in ("MANAGE 4.1", "MANAGE 4.3", "MEASURE 2.2"):
        assert open_id in uncovered and open_id not in covered
    assert ("MEASURE 2.13" in covered) == (kind == "gate")  # the paired gate is evidence only in a gate
    assert "A.6.2.4" in governance and "not conformance" in text_of(governance)
    assert 'href="#governance"' in section(dom, "models")  # the model card links to it

"""The report as a browser shows it: headless Chromium loads the file, lays it out and draws it.

Checks what unit tests on the HTML text cannot: that the page parses into the sections and inline SVG
figures a reader sees, that the stylesheet applies, and that the screenshot is a drawn page, not blank.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image
import pytest

from assay.report import write_report
from tests.integration.browser import near, needs_chromium, run_chromium
from tests.unit.report.conftest import report_document

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
    for section_id in ("summary", "frontier", "trials", "hardware"):
        assert f'<section id="{section_id}"' in result.stdout
    assert len(re.findall(r"<svg\b[^>]*\bclass=\"plot\"", result.stdout)) == 4
    png = tmp_path / "compress.png"
    result = run_chromium(tmp_path, f"--screenshot={png}", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    image = matplotlib.image.imread(png)
    assert float(image[..., :3].std()) > 0.05
    assert near(image, "#15803d", 0.08) > 100  # the passed points in the Pareto plots

"""The report as a browser shows it: headless Chromium loads the file, lays it out and draws it.

Checks what unit tests on the HTML text cannot: that the page parses into the sections and inline SVG
figures a reader sees, that the stylesheet applies, and that the screenshot is a drawn page, not blank.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from assay.report import write_report
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
TIMEOUT_S = 120


def _chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not found (/usr/bin/chromium or `chromium` on PATH); apt install chromium",
)


def _run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,4000",
        *args,
    ]
    # HOME in the temporary folder: Chromium writes caches and crash reports there, never in the real home.
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(report_document("comparison"), tmp_path_factory.mktemp("report"), "comparison").html


@needs_chromium
def test_browser_dom_has_every_section_and_the_figures(report: Path, tmp_path: Path) -> None:
    result = _run_chromium(tmp_path, "--dump-dom", report.as_uri())
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    for section_id in SECTIONS:
        assert f'<section id="{section_id}"' in dom
    # The browser parsed the inline figures as SVG elements, with their text as text.
    assert len(re.findall(r"<svg\b[^>]*\bclass=\"plot\"", dom)) == 8
    assert dom.count("<text") > 200
    assert "91.2" in dom and "PASSED" in dom.upper()


def _near(image: np.ndarray, hex_colour: str, tolerance: float = 0.03) -> int:
    """How many pixels are within ``tolerance`` (0-1 per channel) of the colour."""
    target = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image[..., :3] - target) <= tolerance).all(axis=-1).sum())


@needs_chromium
def test_browser_screenshot_is_a_drawn_page(report: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    result = _run_chromium(tmp_path, f"--screenshot={png}", report.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert png.is_file() and png.stat().st_size > 50_000
    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (4000, 1280)
    assert float(image[..., :3].std()) > 0.05  # not a blank page
    # The stylesheet applied: the passed badge's green background and the page's grey are on screen.
    assert _near(image, "#dcfce7") > 2_000
    assert _near(image, "#f4f5f7") > 50_000
    # The figures were drawn: the forest plot's strokes in the candidate blue or the pass green.
    assert _near(image, "#2563eb", 0.08) + _near(image, "#15803d", 0.08) > 200


@needs_chromium
def test_compression_report_renders_in_the_browser(tmp_path: Path) -> None:
    from assay.report.compression import write_compression_report
    from tests.unit.report.conftest import compression_document

    page = write_compression_report(compression_document(tmp_path), tmp_path, "compress").html
    result = _run_chromium(tmp_path, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    for section_id in ("summary", "frontier", "trials", "hardware"):
        assert f'<section id="{section_id}"' in result.stdout
    assert len(re.findall(r"<svg\b[^>]*\bclass=\"plot\"", result.stdout)) == 4
    png = tmp_path / "compress.png"
    result = _run_chromium(tmp_path, f"--screenshot={png}", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    image = matplotlib.image.imread(png)
    assert float(image[..., :3].std()) > 0.05
    assert _near(image, "#15803d", 0.08) > 100  # the passed points in the Pareto plots

"""The dashboard in headless Chromium, with an incident the monitor raised on planted drift."""

from __future__ import annotations

from pathlib import Path

import httpx
import matplotlib.image
import pytest

from assay.serve.service import Service
from assay.workspace import Workspace
from tests.integration.browser import near, needs_chromium, run_chromium
from tests.integration.serving_fixtures import MODEL, config, make_registry, running, traffic, wait_windows

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_registry(tmp_path_factory.mktemp("dashboard") / "home")


def test_the_dashboard_shows_the_raised_incident_and_the_live_charts(ws: Workspace, tmp_path: Path) -> None:
    service = Service(ws, MODEL, "production", config(window=100, rollback_after=None))
    with running(service) as base:
        with httpx.Client(base_url=base, timeout=30) as c:
            for i, shift in enumerate([None, None, "contrast", "contrast"]):
                body = traffic(100, seed=300 + i, shift=shift)
                assert (
                    c.post(f"/v1/models/{MODEL}/predict", json={"inputs": body.tolist()}).status_code == 200
                )
        wait_windows(service, 4)
        incidents = ws.store.list_incidents(MODEL)
        assert incidents, "the planted shift raised no incident"
        dom = run_chromium(tmp_path, "--dump-dom", f"{base}/")
        png = tmp_path / "dashboard.png"
        shot = run_chromium(tmp_path, f"--screenshot={png}", f"{base}/")
        detail = run_chromium(tmp_path, "--dump-dom", f"{base}/incidents/{incidents[0].id}")
        models = run_chromium(tmp_path, "--dump-dom", f"{base}/models/{MODEL}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert f'<a href="/incidents/{incidents[0].id}">{incidents[0].id}</a>' in page
    assert 'class="incident-open">open</td>' in page
    assert incidents[0].detector in page
    assert page.count('class="chart"') >= 4  # one live chart per detector
    assert "alarmed" in page
    assert f"Incident {incidents[0].id}" in detail.stdout and "Detections" in detail.stdout
    first = incidents[0].details["detections"][0]["detectors"][incidents[0].detector]
    assert first["why"] and first["why"] in detail.stdout  # what moved, on the incident's page
    assert "<td>traffic</td>" in detail.stdout  # the window's stream
    assert "Monitored</dt>" in page
    assert "<td>v2</td>" in models.stdout and '<a href="/runs/2/report">comparison 2</a>' in models.stdout
    assert shot.returncode == 0 and png.is_file()
    image = matplotlib.image.imread(png)
    assert float(image[..., :3].std()) > 0.05  # a drawn page, not a blank one
    assert near(image, "#b91c1c", 0.06) > 30  # the open incident and the alarmed windows, in red
    assert near(image, "#1d4ed8", 0.08) > 100  # the detectors' statistic lines

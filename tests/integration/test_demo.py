"""`assay demo` on real Fashion-MNIST, on a stratified subset so it runs in seconds."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from assay.cli import app
from tests.conftest import needs_fashion_mnist


@needs_fashion_mnist
def test_demo_runs_the_whole_loop() -> None:
    result = CliRunner().invoke(app, ["demo", "--limit", "1500", "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    baseline, candidate = summary["steps"]
    assert baseline["version"] == "fmnist-cnn@v1" and baseline["verdict"] == "first release"
    assert candidate["version"] == "fmnist-cnn@v2" and candidate["verdict"] in ("passed", "failed")
    assert summary["production"] == ("fmnist-cnn@v2" if candidate["verdict"] == "passed" else "fmnist-cnn@v1")
    html = Path(summary["report"]).read_text()
    for section in ("summary", "gate", "calibration", "confusion", "efficiency", "environment"):
        assert f'id="{section}' in html, section

"""A small table model served with the defaults: the user's digits example.

``assay train --name digits --data sklearn:digits --arch mlp --epochs 10`` gives a version whose release
reference is its 360 test rows, too few for the default window of 500 (``assay serve digits`` failed with
"A reference of 360 rows is too small for windows of 500"). With the defaults the window is a sixth of
the reference, said on the console; an explicit --window is honoured or refused with the value to pass.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from assay.cli import app
from assay.data import load_dataset, parse_data_arg
from assay.release import Workspace, model_of
from assay.serve.service import ServeConfig, Service
from tests.integration.serving_fixtures import running, wait_windows
from tests.unit.tolerances import U32, assert_same_decisions, network_forward

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
runner = CliRunner()
URL = "/v1/models/digits/predict"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's steps: train digits on scikit-learn's digits, promote it."""
    home = tmp_path_factory.mktemp("digits") / "home"
    for args in (
        ["train", "--name", "digits", "--data", "sklearn:digits", "--arch", "mlp", "--epochs", "10"],
        ["models", "promote", "digits@v1"],
    ):
        result = runner.invoke(app, [*args, "--home", str(home)])
        assert result.exit_code == 0, result.output
    return home


def raw_test_rows() -> tuple[np.ndarray, np.ndarray]:
    """The test split as the user holds it (scikit-learn's raw 0-16 counts), and as the model takes it
    (standardised with its training rows' statistics, which the server applies from its input contract)."""
    spec = parse_data_arg("sklearn:digits")
    data = load_dataset(spec)
    assert data.test.rows is not None  # each example's row in load_digits()
    return load_digits().data[data.test.rows].astype(np.float32), data.test.x


def test_a_window_past_the_reference_is_refused_with_the_value_to_pass(home: Path) -> None:
    result = runner.invoke(app, ["serve", "digits", "--window", "200", "--home", str(home)])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())  # the console wraps the line
    assert "--window 200 is too large for digits@v1: its release reference has 360 rows" in message
    assert "Pass --window 60" in message


def test_the_service_monitors_a_small_reference_with_the_defaults(home: Path) -> None:
    """ServeConfig's own defaults (the monitoring budget too): windows of 60, and they close."""
    ws = Workspace.open(home)
    service = Service(ws, "digits", "production", ServeConfig(poll_s=0.1))
    x, standardised = raw_test_rows()  # the rows the model was evaluated on
    module = model_of(ws, ws.store.resolve("digits@production")).module
    assert module is not None
    # The server standardises the raw rows itself: one float32 rounding of each input, then the network.
    ref = network_forward(module, standardised[:120], input_u=U32)
    with running(service) as base, httpx.Client(base_url=base, timeout=30) as client:
        monitor = service.served.monitor
        assert monitor is not None and monitor.window == 60 and monitor.reference.n == 360
        assert "a sixth of digits@v1's release reference of 360 rows" in service.served.monitoring
        answers = []
        for i, start in enumerate((0, 60)):
            if i:  # the monitoring budget (60 windows a minute) refills one window a second
                time.sleep(1.1)
            answers.append(client.post(URL, json={"inputs": x[start : start + 60].tolist()}))
            wait_windows(service, i + 1)
        assert [a.status_code for a in answers] == [200, 200]
        got = np.concatenate([a.json()["predictions"] for a in answers])
        assert_same_decisions(ref.logits, ref.logits_bound, np.eye(10)[got], max_undecided=0.02)
    ws.store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_assay_serve_digits_works_with_the_defaults(home: Path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "assay", "serve", "digits", "--home", str(home), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the server never became ready"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        rows = raw_test_rows()[0][:5]
        body = io.BytesIO()
        np.save(body, rows)
        url = f"http://127.0.0.1:{port}{URL}"
        as_json = httpx.post(url, json={"inputs": rows.tolist()}, timeout=30)
        as_npy = httpx.post(url, content=body.getvalue(), headers={"Content-Type": "application/x-npy"})
        assert as_json.status_code == as_npy.status_code == 200
        assert as_json.json()["predictions"] == as_npy.json()["predictions"]
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    line = " ".join(stderr.split())
    assert "monitoring: windows of 60 examples (a sixth of digits@v1's release reference of 360 rows" in line
    assert "Traceback" not in stderr

"""``assay serve`` and ``assay incidents`` as a user drives them, including a real kill -9 of the server
in the middle of an incident."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from assay.cli import app
from assay.workspace import Workspace
from tests.integration.serving_fixtures import MODEL, make_registry, traffic

runner = CliRunner()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once and never opened again: each test copies it (copying a store someone has open can meet
    its write-ahead log half-gone)."""
    home = tmp_path_factory.mktemp("cli-serve") / "home"
    make_registry(home).store.close()
    return home


@pytest.fixture
def home(registry: Path, tmp_path: Path) -> Path:
    import shutil

    mine = tmp_path / "home"
    shutil.copytree(registry, mine)
    return mine


def invoke(home: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--home", str(home)])
    return result.exit_code, result.stdout, result.stderr


def test_serving_needs_an_alias_that_exists(home: Path) -> None:
    code, _, stderr = invoke(home, "serve", f"{MODEL}@v1")
    assert code == 2 and "Serve an alias, not a version" in stderr and "Traceback" not in stderr
    code, _, stderr = invoke(home, "serve", f"{MODEL}@staging")
    assert code == 2 and "has no alias 'staging'" in stderr
    code, _, stderr = invoke(home, "serve", "nope")
    assert code == 2 and "No model named 'nope'" in stderr
    assert not (home / "assay.db-wal").exists()  # the command closed the store it opened


def test_incidents_list_show_ack(home: Path) -> None:
    code, stdout, _ = invoke(home, "incidents", "list", "--json")
    assert code == 0 and json.loads(stdout) == []
    now = datetime.now(UTC)
    with Workspace.open(home).store as store:
        store.open_incident(
            MODEL, "production", 2, detector="features", statistic=12.0, threshold=4.5, window=7,
            window_start=now, window_end=now, rollback_after=None,
            detection={"window": 7, "stream": "feedback", "n": 100, "end": now.isoformat(),
                       "alarms": ["features"],
                       "detectors": {"features": {"statistic": 12.0, "threshold": 4.5, "alarm": True,
                                                  "why": "most shifted: std"}}},
        )  # fmt: skip
    code, stdout, _ = invoke(home, "incidents", "list")
    assert code == 0 and "features" in stdout and "open" in stdout
    shown = json.loads(invoke(home, "incidents", "show", "1", "--json")[1])
    assert (shown["version"], shown["status"], shown["detections"]) == (2, "open", 1)
    code, stdout, _ = invoke(home, "incidents", "show", "1")
    assert code == 0 and "12 > 4.5" in stdout and "feedback" in stdout
    assert "most shifted: std" in " ".join(stdout.replace("│", " ").split())  # the cell wraps at 80 columns
    acked = json.loads(
        invoke(home, "incidents", "ack", "1", "--note", "upstream camera fault", "--by", "ana", "--json")[1]
    )
    assert (acked["status"], acked["acked_by"], acked["ack_note"]) == (
        "acknowledged",
        "ana",
        "upstream camera fault",
    )
    assert json.loads(invoke(home, "incidents", "list", "--open", "--json")[1]) == []
    code, _, stderr = invoke(home, "incidents", "show", "99")
    assert code == 2 and "No incident with id 99" in stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(home: Path, port: int) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "assay", "serve", f"{MODEL}@production", "--home", str(home),
               "--port", str(port), "--window", "100", "--rollback-after", "2",
               "--max-windows-per-minute", "0"]  # fmt: skip  # every example: windows close as sent
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the server never became ready")


def _consistent(store: object) -> None:
    """Every rollback in the alias history belongs to exactly one incident, and no rollback is left due."""
    from assay.store import Store

    assert isinstance(store, Store)
    incidents = store.list_incidents(MODEL)
    history = store.alias_history(MODEL, "production")
    rollbacks = {e.id for e in history if e.action == "rollback"}
    linked = [i.rollback_event.id for i in incidents if i.rollback_event is not None]
    assert sorted(linked) == sorted(rollbacks)
    assert all(i.action in ("none", "rolled_back") for i in incidents)
    current = store.current_alias(MODEL, "production")
    assert current is not None and current.version == history[-1].to_version


def test_a_kill_during_an_incident_leaves_a_consistent_store_and_the_restart_carries_on(
    home: Path,
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL}/predict"
    server = _serve(home, port)
    store = Workspace.open(home).store
    try:
        assert (
            httpx.post(url, json={"inputs": traffic(100, seed=1, shift="noise").tolist()}).status_code == 200
        )
        deadline = time.monotonic() + 60
        while not store.list_incidents(MODEL):  # the first alarmed window is on disk: kill now
            assert time.monotonic() < deadline, "no incident was raised"
            time.sleep(0.01)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        _consistent(store)
        assert store.current_alias(MODEL, "production").version == 2  # type: ignore[union-attr]

        server = _serve(home, port)  # the restart, on the same store
        for seed in range(10, 13):
            httpx.post(url, json={"inputs": traffic(100, seed=seed, shift="noise").tolist()}, timeout=30)
        deadline = time.monotonic() + 60
        while store.current_alias(MODEL, "production").version != 1:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the restarted server never rolled back"
            time.sleep(0.05)
        _consistent(store)
        served = httpx.get(f"http://127.0.0.1:{port}/ready").json()
        deadline = time.monotonic() + 30
        while served["version"] != 1:  # the server follows its own rollback
            assert time.monotonic() < deadline
            time.sleep(0.05)
            served = httpx.get(f"http://127.0.0.1:{port}/ready").json()
    finally:
        server.kill()
        server.wait(timeout=30)
        store.close()


def test_a_window_the_reference_cannot_calibrate_is_one_line_and_exit_2(home: Path) -> None:
    code, _, stderr = invoke(home, "serve", MODEL, "--window", "5000")
    message = " ".join(stderr.split())  # the console wraps the line
    assert code == 2 and "Traceback" not in stderr
    assert "--window 5000 is too large for bars@v2: its release reference has 1200 rows" in message
    assert "needs 10000" in message and "Pass --window 200" in message  # a sixth of the reference


def test_a_webhook_that_is_not_http_is_refused(home: Path) -> None:
    code, _, stderr = invoke(home, "serve", MODEL, "--webhook", "file:///etc/passwd")
    assert code == 2 and "must be an http:// or https:// URL" in stderr

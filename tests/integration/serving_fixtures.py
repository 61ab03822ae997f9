"""A registry with two released versions of a tiny CNN, and a real uvicorn server over it.

v1 is promoted first (its evaluation stores its monitoring reference); v2 is gated against it (the gate
stores v2's reference) and promoted, so a rollback has somewhere to go.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import uvicorn

from assay.data import load_dataset, parse_data_arg
from assay.gate import Policy
from assay.release import Workspace, evaluate_target, gate_targets, train_version
from assay.serve.app import create_app
from assay.serve.service import ServeConfig, Service
from assay.train import TrainConfig
from tests.conftest import make_bars, write_bars

MODEL = "bars"
TINY = {"channels": [4, 8], "hidden": 16, "dropout": 0.0}


def make_registry(home: Path, versions: int = 2) -> Workspace:
    """The registry above; ``versions=1`` stops after v1 (in production), for tests that need no rollback."""
    spec = parse_data_arg(f"npz:{write_bars(home.parent / 'bars.npz', 900, 1200)}")
    data = load_dataset(spec)
    ws = Workspace.open(home)
    for seed in range(versions):
        config = TrainConfig(epochs=5, batch_size=32, precision="fp32", seed=seed)
        version, _ = train_version(
            ws, MODEL, data, spec, arch="cnn", config=config, spec_overrides=TINY, progress=False
        )
        if seed == 0:
            evaluate_target(ws, version.ref, efficiency=False)
            ws.store.promote(version.ref)
        else:
            gate_targets(ws, f"{MODEL}@production", version.ref, Policy.default(), efficiency=False)
            ws.store.promote(version.ref, force=True, reason="test set-up")
    return ws


def traffic(n: int, seed: int, shift: str | None = None) -> np.ndarray:
    """Fresh images from the training distribution (never the reference rows), optionally shifted."""
    x, _ = make_bars(np.random.default_rng(seed), n)
    if shift == "contrast":
        x = 0.5 + (x - 0.5) * 0.3
    elif shift == "noise":
        x = np.clip(x + np.random.default_rng(seed + 1).normal(0, 0.3, x.shape), 0, 1)
    return x[:, None].astype(np.float32)


@contextmanager
def serving(app: object, ready: Callable[[], bool] = lambda: True) -> Iterator[str]:
    """Serve the ASGI ``app`` on a free loopback port in a thread; yields the base URL once uvicorn has
    started and ``ready()`` holds."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None: uvicorn's loggers propagate to the root one, so pytest captures what the server logs
    config = uvicorn.Config(app, log_level="warning", lifespan="on", log_config=None)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (server.started and ready()):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def running(service: Service) -> Iterator[str]:
    """The classifier server over ``service``, once /ready would answer."""
    with serving(create_app(service), lambda: service.ready) as url:
        yield url


def wait_windows(service: Service, windows: int, timeout: float = 30) -> None:
    """Wait until the monitor has closed ``windows`` windows (it runs off the request path)."""
    deadline = time.monotonic() + timeout
    while (service.metrics.registry.get_sample_value("assay_monitor_windows_total") or 0) < windows:
        if time.monotonic() > deadline:
            raise AssertionError(f"the monitor closed fewer than {windows} windows in {timeout} s")
        time.sleep(0.02)


def config(**overrides: object) -> ServeConfig:
    base: dict[str, object] = {
        "window": 100,
        "max_windows_per_minute": None,  # every example: the tests count on their windows closing
        "false_alarm_windows": 1000.0,
        "rollback_after": 2,
        "poll_s": 0.1,
    }
    return ServeConfig(**{**base, **overrides})  # type: ignore[arg-type]

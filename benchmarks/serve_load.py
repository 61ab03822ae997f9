"""Serving throughput and latency on loopback: micro-batching against batch-1 serving, and the cost of
monitoring.

    python benchmarks/serve_load.py [--home DIR] [--seconds 20] [--connections 64]

Uses ``fmnist-cnn@production`` from ``--home`` (what ``make demo`` leaves in ./.assay); without one it
trains the demo's baseline CNN for one epoch into a temporary store first. Each configuration runs
``assay serve`` in its own process; a bounded closed-loop load generator (``--connections`` keep-alive
connections, each sending its next request when the last one is answered, one Fashion-MNIST validation
image per request as a .npy body) drives it for ``--seconds`` after a warm-up, and prints requests per
second with p50 and p99 latency. The generator shares the machine's cores with the server: the figures
are for both together.

Saturation needs more connections than a batch holds: with exactly ``max_batch`` of them, every client
waits on the running batch, and the model idles while the event loop answers it and reads the next one.
The default, 128, is twice the default batch, so one batch fills while another runs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import numpy as np

MODEL = "fmnist-cnn"
# assay serve's defaults (one intra-op thread per core) throughout, and batch-1 serving also at its best
# setting, one thread (the event loop keeps the other core).
CONFIGS = {
    "batch1": ("batch-1 (max_batch 1), monitoring off", ["--max-batch", "1", "--no-monitor"]),
    "batch1-1thread": (
        "batch-1 (max_batch 1), monitoring off, 1 thread",
        ["--max-batch", "1", "--no-monitor", "--threads", "1"],
    ),
    "batched": ("micro-batching (max_batch 64, 2 ms), monitoring off", ["--max-batch", "64", "--no-monitor"]),
    "monitored": (
        "micro-batching (max_batch 64, 2 ms), monitoring on (at most 60 windows a minute, the default)",
        ["--max-batch", "64", "--monitor"],
    ),
    "monitored-all": (
        "micro-batching (max_batch 64, 2 ms), monitoring every example",
        ["--max-batch", "64", "--monitor", "--max-windows-per-minute", "0"],
    ),
}


def ensure_model(home: Path) -> None:
    from assay.errors import NotFoundError
    from assay.workspace import Workspace

    ws = Workspace.open(home)
    try:
        if ws.store.current_alias(MODEL, "production") is not None:
            return
    except NotFoundError:  # no such model yet
        pass
    from assay.demo import BASELINE
    from assay.pipeline import pipeline_from_dict, run_pipeline

    print("training the demo baseline for one epoch (no fmnist-cnn@production in this store)", flush=True)
    config = {**BASELINE, "train": {"epochs": 1}, "data": {"source": "fashion-mnist"}}
    run_pipeline(ws, pipeline_from_dict(config, source="benchmark"), progress=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_bytes(port: int, body: bytes) -> bytes:
    head = (
        f"POST /v1/models/{MODEL}/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/x-npy\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection(asyncio.Protocol):
    """One closed-loop keep-alive client: sends a request, reads its whole answer, sends the next.

    A protocol rather than asyncio's streams: the generator shares the server's two cores, and what it
    spends a request is taken from the server (33 to 35 µs of CPU a request against the streams' 43 to 45,
    measured at 3,700 to 4,000 req/s).
    """

    def __init__(self, payloads: list[bytes], offset: int, until: float, warm_until: float, out: dict):
        self.payloads, self.i, self.until, self.warm_until, self.out = (
            payloads,
            offset,
            until,
            warm_until,
            out,
        )
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.need = -1  # bytes of the answer in flight, once its head has arrived
        self.status = 0
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one in all but its class
        self.send()

    def send(self) -> None:
        self.sent = time.perf_counter()
        if self.sent >= self.until:
            self.transport.close()
            return
        self.transport.write(self.payloads[self.i % len(self.payloads)])
        self.i += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            self.status = int(head.split(b" ", 2)[1])
            length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            self.need = end + 4 + length
        if len(self.buffer) < self.need:
            return
        if self.sent >= self.warm_until:
            self.out["latencies"].append(time.perf_counter() - self.sent)
            self.out["status"][self.status] = self.out["status"].get(self.status, 0) + 1
        self.buffer, self.need = self.buffer[self.need :], -1
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def connection(
    port: int, payloads: list[bytes], offset: int, until: float, warm_until: float, out: dict
) -> None:
    # connections start apart (offset), so that a window holds distinct images, as real traffic does
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: Connection(payloads, offset, until, warm_until, out), "127.0.0.1", port
    )
    await client.done


def traffic_images() -> np.ndarray:
    """Fashion-MNIST's validation images: held out from training like the test set the model was gated
    on, but not that set itself, so a monitoring server sees unshifted traffic, as in normal operation.
    (Training images would not do: the model is more confident on them, which the monitor rightly sees.)"""
    from assay.data import DataSpec, load_dataset

    return load_dataset(DataSpec(kind="fashion-mnist")).val.x


async def drive(port: int, connections: int, seconds: float, warmup: float, images: np.ndarray) -> dict:
    payloads = []
    for image in images:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(image[None], dtype=np.float32))
        payloads.append(request_bytes(port, buffer.getvalue()))
    out: dict = {"latencies": [], "status": {}}
    start = time.perf_counter()
    await asyncio.gather(
        *(
            connection(
                port,
                payloads,
                k * len(payloads) // connections,
                start + warmup + seconds,
                start + warmup,
                out,
            )
            for k in range(connections)
        )
    )
    out["seconds"] = seconds
    return out


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 180) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server never became ready")


def run_config(
    home: Path, flags: list[str], connections: int, seconds: float, warmup: float, images: np.ndarray
) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "assay", "serve", f"{MODEL}@production", "--home", str(home),
               "--port", str(port), "--rollback-after", "0", *flags]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port, process)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        cpu = time.process_time()
        result = asyncio.run(drive(port, connections, seconds, warmup, images))
        cpu = time.process_time() - cpu
        metrics = scrape(port)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    lat = np.asarray(result["latencies"]) * 1000
    forward = metrics.get("assay_forward_seconds_total", 0.0)
    monitoring = metrics.get("assay_monitor_seconds_total", 0.0)
    skipped = metrics.get("assay_monitor_skipped_examples_total", 0.0)
    ok = result["status"].get(200, 0)
    return {
        "throughput": ok / seconds,
        "p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "status": result["status"],
        "stderr": stderr[-2000:],
        # the generator's own CPU time per answered request, warm-up included: what it takes from the server
        "generator_us": 1e6 * cpu / max(sum(result["status"].values()) * (seconds + warmup) / seconds, 1),
        # what the monitor took of the model thread, and the share of examples it observed
        "monitor_share": monitoring / max(forward + monitoring, 1e-9),
        "observed": 1 - skipped / max(metrics.get("assay_examples_total", 0.0), 1.0),
    }


def scrape(port: int) -> dict[str, float]:
    """The server's unlabelled Prometheus samples, by name."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            samples[name] = float(value)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=None, help="store with fmnist-cnn@production")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated configurations to run, of {', '.join(CONFIGS)} (default: all)",
    )
    args = parser.parse_args()
    configs = args.configs.split(",")
    if unknown := sorted(set(configs) - set(CONFIGS)):
        parser.error(f"unknown configurations {unknown}; choose from {', '.join(CONFIGS)}")
    tmp = None
    home = args.home
    if home is None:
        tmp = Path(tempfile.mkdtemp(prefix="assay-serve-bench-"))
        home = tmp / "home"
    try:
        ensure_model(home)
        images = traffic_images()
        print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
        # Rounds interleave the configurations, so a burst of other work on the machine hits them all, and
        # every other round runs them in reverse, so neither side of a ratio always goes first.
        results: dict[str, list[dict]] = {key: [] for key in configs}
        for round_ in range(args.rounds):
            for key in configs if round_ % 2 == 0 else configs[::-1]:
                name, flags = CONFIGS[key]
                r = run_config(home, flags, args.connections, args.seconds, args.warmup, images)
                results[key].append(r)
                monitor = ""
                if "--monitor" in flags:
                    monitor = (f", monitor {100 * r['monitor_share']:.1f}% of the model thread, "
                               f"{100 * r['observed']:.0f}% of examples observed")  # fmt: skip
                print(f"round {round_ + 1}, {name}: {r['throughput']:.0f} req/s, p50 {r['p50']:.2f} ms, "
                      f"p99 {r['p99']:.2f} ms, statuses {r['status']}{monitor}, "
                      f"generator {r['generator_us']:.0f} µs CPU a request", flush=True)  # fmt: skip
        rate = {key: np.array([r["throughput"] for r in rs]) for key, rs in results.items()}
        for key, rs in results.items():
            p50 = np.median([r["p50"] for r in rs])
            p99 = np.median([r["p99"] for r in rs])
            print(f"median of {args.rounds}, {CONFIGS[key][0]}: {np.median(rate[key]):.0f} req/s, "
                  f"p50 {p50:.2f}, p99 {p99:.2f} ms")  # fmt: skip
        # Ratios within a round (paired), then their median: a slow round slows both sides of its ratio.
        if "batched" in rate:
            for key in ("batch1", "batch1-1thread"):
                if key in rate:
                    ratio = rate["batched"] / rate[key]
                    print(f"batching speed-up over {CONFIGS[key][0]}: median {np.median(ratio):.2f}x "
                          f"(rounds {', '.join(f'{v:.2f}' for v in ratio)}; target >= 5x)")  # fmt: skip
        for key in ("monitored", "monitored-all"):
            if "batched" in rate and key in rate:
                cost = 100 * (1 - rate[key] / rate["batched"])
                share = 100 * np.median([r["monitor_share"] for r in results[key]])
                print(f"throughput cost of {CONFIGS[key][0]}: median {np.median(cost):.1f}% "
                      f"(rounds {', '.join(f'{v:.1f}' for v in cost)}; target < 5%); "
                      f"the monitor's median share of the model thread {share:.1f}%")  # fmt: skip
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

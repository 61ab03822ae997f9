"""The compression search on the demo's Fashion-MNIST CNN: what it finds, and what the defaults give.

    python benchmarks/compress_search.py [--epochs 4] [--home DIR] [--max-minutes M] [--threads 1]

Trains the demo baseline (or reuses ``fmnist-cnn@v1`` in ``--home``), runs ``assay compress`` with the
default plan and policy (accuracy non-inferior at a 0.5-point margin, ECE and NLL beside it, Holm), and
prints every candidate, then the search's outcome and the three figures it must beat or match: the best
variant (passing, and faster than the parent beyond the timing noise), plain ONNX Runtime
``quantize_static`` with its defaults, and torchao's default config (Int8DynamicActivationInt8WeightConfig).
Latency is p50 at batch 1 against PyTorch eager fp32 on the same machine and threads (one intra-op thread
by default, torch and ONNX Runtime alike: batch-1 serving gives each request one core, and on a shared
2-core VM two-thread timings are dominated by threads waiting for each other); size is the model file on
disk. Run it on an otherwise idle machine, or at high priority (``nice -n -15``), and read the load
average it prints.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import torch

from assay.compress import Budget, compress
from assay.data import DataSpec, load_dataset
from assay.env import cpu_info, package_versions
from assay.gate import Policy
from assay.release import Workspace, train_version
from assay.report.compression import ratio_words
from assay.store.records import VersionInfo
from assay.train import TrainConfig

COMPARATORS = {
    "ORT quantize_static defaults": "ort_static_defaults",
    "torchao default": "torchao_int8_dynamic",
}


def _root(ws: Workspace, epochs: int) -> VersionInfo:
    try:
        return ws.store.resolve("fmnist-cnn@v1")
    except LookupError:
        spec = DataSpec(kind="fashion-mnist")
        config = TrainConfig(epochs=epochs)
        version, _ = train_version(ws, "fmnist-cnn", load_dataset(spec), spec, arch="cnn", config=config)
        return version


def _value(point: dict[str, Any], name: str) -> float | None:
    m = point.get("metrics", {}).get(name)
    return None if m is None else float(m["value"])


def _words(metric: str, root: dict[str, Any], point: dict[str, Any]) -> str:
    """``point`` against the parent, by direction: "9.58x faster", "1.01x larger"."""
    return ratio_words(metric, _value(root, metric), _value(point, metric))


def _line(label: str, t: dict[str, Any], root: dict[str, Any]) -> str:
    latency, size = _value(t, "latency_p50_b1"), _value(t, "size_on_disk")
    acc, delta = t["metrics"].get("accuracy"), t.get("accuracy_delta") or {}
    if latency is None or size is None or acc is None:
        return f"{label:<32} {t['key']:<44} {t['status']}: {t.get('reason', '')}"
    speedup = "implausible" if t.get("flags") else _words("latency_p50_b1", root, t)
    smaller = _words("size_on_disk", root, t)
    d = delta.get("delta")
    return (
        f"{label:<32} {t['key']:<44} {t['status']:<7} acc {acc['value']:.2%} [{acc['ci_low']:.2%}, "
        f"{acc['ci_high']:.2%}] delta {100 * (d or 0):+.2f} pp [{100 * (delta.get('ci_low') or 0):+.2f}, "
        f"{100 * (delta.get('ci_high') or 0):+.2f}]  b1 p50 {latency:7.3f} ms ({speedup})  "
        f"size {size / 1024:7.1f} KiB ({smaller})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--home", help="Store to (re)use; default a temporary one.")
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = cpu_info()
    versions = package_versions()
    print(f"CPU: {cpu['model']}, flags {cpu['flags']}, {cpu['logical_cores']} logical cores, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("runtimes: " + ", ".join(f"{k} {versions.get(k)}" for k in ("torch", "onnxruntime", "torchao")))
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(args.home or tmp)
        root = _root(ws, args.epochs)
        start = time.perf_counter()
        budget = Budget(max_seconds=args.max_minutes * 60 if args.max_minutes else None)
        result = compress(ws, root.ref, Policy.default(), budget=budget, progress=False)
        seconds = time.perf_counter() - start
        doc = result.document
        root_point = doc["root"]
        print(f"\nsearch: {len(doc['trials'])} candidates in {seconds / 60:.1f} min (load average now "
              f"{os.getloadavg()[0]:.2f}); report {result.html}\n")  # fmt: skip
        print(_line("parent (PyTorch eager fp32)", {**root_point, "status": "parent"}, root_point))
        for t in doc["trials"]:
            print(_line("", t, root_point))
        print()
        print(result.message)
        if result.best is not None:
            print(_line("BEST (objective latency)", result.best, root_point))
        trials = {t["key"]: t for t in doc["trials"]}
        for label, key in COMPARATORS.items():
            if key in trials:
                print(_line(label, trials[key], root_point))
        for axis, keys in doc["frontier"].items():
            print(f"frontier ({axis}): {', '.join(keys)}")
        best = result.best
        if best is not None:
            speedup = _value(root_point, "latency_p50_b1") / _value(best, "latency_p50_b1")  # type: ignore[operator]
            smaller = _value(root_point, "size_on_disk") / _value(best, "size_on_disk")  # type: ignore[operator]
            words = (
                f"{_words('latency_p50_b1', root_point, best)}, {_words('size_on_disk', root_point, best)}"
            )
            print(f"\ntarget (>= 4x faster at batch 1, >= 3x smaller): {words} -> "
                  f"{'met' if speedup >= 4 and smaller >= 3 else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()

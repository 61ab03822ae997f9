"""Evaluation overhead: time of a full evaluation divided by the time of the bare forward passes it needs.

    python benchmarks/eval_overhead.py [--epochs 1]

Trains (or reuses) a Fashion-MNIST CNN in a throw-away store, then times, on a cold outputs cache:
  - bare forward passes: the model over the test and validation splits (what evaluation must run);
  - `assess_version` without efficiency timings: inference + all metrics with 1000-resample bootstrap
    intervals + temperature scaling + plot data;
  - the same plus writing the report and recording the run (`assay eval --no-efficiency` in-process);
  - the whole `assay eval` command line (process start, imports, efficiency timings included).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from assay.data import DataSpec, load_dataset
from assay.env import cpu_info
from assay.inference import infer
from assay.models.predictor import TorchPredictor
from assay.release import Workspace, assess_version, dataset_info, model_of, record_evaluation, train_version
from assay.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    print(f"CPU: {cpu_info()['model']}, flags {cpu_info()['flags']}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as home:
        ws = Workspace.open(home)
        spec = DataSpec(kind="fashion-mnist")
        data = load_dataset(spec)
        version, _ = train_version(
            ws, "bench", data, spec, arch="cnn", config=TrainConfig(epochs=args.epochs), progress=False
        )
        predictor = TorchPredictor(model_of(ws, version))

        start = time.perf_counter()
        infer(predictor, data.test)
        infer(predictor, data.val)
        bare = time.perf_counter() - start

        start = time.perf_counter()
        assessment = assess_version(ws, version, data, "test", efficiency=False)
        assess_s = time.perf_counter() - start
        record_evaluation(ws, assessment, dataset_info(data, "test"), version=version)
        recorded_s = time.perf_counter() - start

        for cached in sorted((Path(home) / "outputs").glob("*.npz")):
            cached.unlink()  # the CLI run below starts from a cold cache too
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "assay", "eval", version.ref, "--home", home, "--json"],
            check=True,
            capture_output=True,
        )
        cli_s = time.perf_counter() - start

    n = data.test.n + data.val.n
    print(f"bare forward passes ({n} examples, fp32, batch 1000): {bare:.2f} s")
    print(f"evaluation without efficiency timings:       {assess_s:.2f} s  (overhead x{assess_s / bare:.2f})")
    print(
        f"  + report written and run recorded:         {recorded_s:.2f} s"
        f"  (overhead x{recorded_s / bare:.2f})"
    )
    print(f"`assay eval` command, efficiency included:   {cli_s:.2f} s  (overhead x{cli_s / bare:.2f})")


if __name__ == "__main__":
    main()

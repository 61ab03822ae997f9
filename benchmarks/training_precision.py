"""Training time and accuracy, fp32 against bf16 autocast, in both memory formats, at equal epochs on
Fashion-MNIST.

    python benchmarks/training_precision.py [--epochs 3] [--limit N] [--repeats 2]

Prints one row per memory format and precision: wall seconds, seconds per epoch, process CPU seconds,
test accuracy with its Wilson 95% CI, and the energy reading (measured from RAPL, or estimated); then
bf16's speed-up over fp32 in the same format, and channels-last's over contiguous at the same
precision. Every run uses the same seed, the same initial weights and the same data order; early
stopping is off (patience = epochs) so all train exactly the same number of epochs. ``channels_last``
is the loop's default (TrainConfig's ``memory_format``); ``contiguous`` is PyTorch's default layout.
On a shared machine, ``--repeats 2`` runs every setting twice, round robin, and shows each one's
fastest run.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import torch

from assay.data import Dataset, DataSpec, load_dataset
from assay.env import cpu_info, cpu_supports_bf16
from assay.inference import infer
from assay.models import build_model, default_spec
from assay.models.predictor import TorchPredictor
from assay.stats import wilson_interval
from assay.train import TrainConfig, train
from assay.train.loop import seed_everything


def run(
    data: Dataset, spec: dict[str, Any], epochs: int, memory_format: str, precision: str
) -> dict[str, Any]:
    seed_everything(0)
    model = build_model(spec)
    config = TrainConfig.model_validate(
        {"epochs": epochs, "patience": epochs, "precision": precision, "memory_format": memory_format}
    )
    result = train(model, data, config, progress=False)
    outputs = infer(TorchPredictor(result.model), data.test)
    correct = int(outputs.correct.sum())
    lo, hi = wilson_interval(correct, outputs.n)
    return {
        "memory_format": memory_format,
        "precision": precision,
        "seconds": round(result.energy.wall_seconds, 1),
        "seconds_per_epoch": round(result.energy.wall_seconds / result.epochs_run, 2),
        "cpu_seconds": round(result.energy.cpu_seconds, 1),
        "test_accuracy": round(correct / outputs.n, 4),
        "accuracy_ci95": [round(lo, 4), round(hi, 4)],
        "energy_j": round(result.energy.joules, 1),
        "energy_method": result.energy.method,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--formats", default="contiguous,channels_last", help="memory formats to run")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting; the fastest is shown")
    args = parser.parse_args()
    formats = args.formats.split(",")
    data = load_dataset(DataSpec(kind="fashion-mnist", limit=args.limit))
    spec = default_spec("cnn", data.input_shape, data.n_classes)
    precisions = ["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"]
    print(f"CPU: {cpu_info()['model']}, flags {cpu_info()['flags']}, torch threads {torch.get_num_threads()}")
    print(
        f"Fashion-MNIST: {data.train.n} train / {data.val.n} val / {data.test.n} test; "
        f"cnn {spec}; {args.epochs} epochs"
    )
    runs = [(f, p) for f in formats for p in precisions]
    fastest: dict[tuple[str, str], dict[str, object]] = {}
    for _ in range(args.repeats):  # round robin, so a busy spell of the machine hits every setting alike
        for memory_format, precision in runs:
            row = run(data, spec, args.epochs, memory_format, precision)
            key = (memory_format, precision)
            if key not in fastest or row["seconds"] < fastest[key]["seconds"]:  # type: ignore[operator]
                fastest[key] = row
    rows = [fastest[key] for key in runs]
    header = f"{'format':<15}{'precision':<10}{'seconds':>9}{'s/epoch':>9}{'cpu s':>8}"
    print(f"{header}{'test acc [95% CI]':>28}{'energy J':>11}  method")
    for r in rows:
        ci = f"{r['test_accuracy']:.2%} [{r['accuracy_ci95'][0]:.2%}, {r['accuracy_ci95'][1]:.2%}]"
        print(
            f"{r['memory_format']:<15}{r['precision']:<10}{r['seconds']:>9}{r['seconds_per_epoch']:>9}"
            f"{r['cpu_seconds']:>8}{ci:>28}"
            f"{r['energy_j']:>11}  {r['energy_method']}"
        )
    seconds = {(r["memory_format"], r["precision"]): r["seconds"] for r in rows}
    for f in formats:
        if (f, "bf16") in seconds:
            speedup = seconds[f, "fp32"] / seconds[f, "bf16"]
            print(f"{f}: bf16 {speedup:.2f}x faster than fp32 at equal epochs")
    if {"contiguous", "channels_last"} <= set(formats):
        for p in precisions:
            speedup = seconds["contiguous", p] / seconds["channels_last", p]
            print(f"{p}: channels-last {speedup:.2f}x faster than contiguous")
        if "bf16" in precisions:
            speedup = seconds["contiguous", "fp32"] / seconds["channels_last", "bf16"]
            print(f"channels-last bf16 {speedup:.2f}x faster than contiguous fp32")
    print(f"load average {os.getloadavg()[0]:.2f} (above the core count: other work shared the CPU)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

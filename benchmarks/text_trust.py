"""Text trust suite time and figures on the frozen-MiniLM classifier, Debian's fortunes test split.

    python benchmarks/text_trust.py                  # fits the head first (examples/minilm_head.py's)
    python benchmarks/text_trust.py --head DIR       # a head that script already wrote

The classifier is staged and loaded by the hf adapter, as ``assay models import`` would. Its outputs on
the test, validation and training splits are computed first, as ``assay eval`` fills the cache that
``assay trust`` reads (printed, not counted). Then the suite runs with its defaults (``TrustConfig()``):
text perturbations (6 x 5 severities) on a seeded subset, the greedy character attack on a seeded
subset, OOD against standard-library docstrings and word-shuffled texts, fairness (fortunes has no
groups: skipped), membership inference, and backdoor detection on the training features. Prints each
family's seconds, the total in wall and CPU time, the load average (the machine may be shared) and the
headline figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from assay.data import Split, load_dataset, parse_data_arg
from assay.env import cpu_info
from assay.inference import infer
from assay.measurement import Measurement
from assay.models.adapters.hf import HuggingFaceAdapter
from assay.models.heads import frozen_encoder_classifier, packaged_minilm
from assay.outputs import Outputs
from assay.trust import TrustConfig, run_trust

HEADLINES = (
    "corruption_mca",
    "corruption_mca[text_typo]",
    "corruption_mca[text_keyboard]",
    "corruption_mca[text_casing]",
    "corruption_mca[text_punctuation]",
    "corruption_mca[text_word_deletion]",
    "corruption_mca[text_word_repetition]",
    "corruption_accuracy[text_typo@5]",
    "adv_accuracy[char_greedy-edits@3]",
    "adv_success[char_greedy-edits@3]",
    "adv_edits[char_greedy-edits@3]",
    "adv_queries[char_greedy-edits@3]",
    "ood_auroc[docstrings:msp]",
    "ood_auroc[docstrings:energy]",
    "ood_auroc[docstrings:mahalanobis]",
    "ood_auroc[shuffled:msp]",
    "ood_auroc[shuffled:energy]",
    "ood_auroc[shuffled:mahalanobis]",
    "mia_auc[loss]",
    "mia_tpr_at_fpr[loss]",
)


def _fmt(m: Measurement) -> str:
    if m.status != "ok":
        return f"{m.status}: {m.details.get('reason', m.details)}"
    low, high = (float("nan") if v is None else v for v in (m.ci_low, m.ci_high))
    return f"{m.value:.4f} [{low:.4f}, {high:.4f}] n={m.n}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", type=Path, default=None, help="a head examples/minilm_head.py wrote")
    args = parser.parse_args()
    info = cpu_info()
    threads = torch.get_num_threads()
    print(f"CPU: {info['model']}, flags {info['flags']}, torch threads {threads}")
    data = load_dataset(parse_data_arg("fortunes"))
    print(f"fortunes: train {data.train.n}, val {data.val.n}, test {data.test.n}, {data.n_classes} classes")
    with tempfile.TemporaryDirectory() as scratch:
        head = args.head
        if head is None:
            start = time.perf_counter()
            head = frozen_encoder_classifier(packaged_minilm(), data, Path(scratch) / "head", C=1.0)
            print(f"head fitted in {time.perf_counter() - start:.1f} s (not counted)")
        adapter = HuggingFaceAdapter()
        folder = Path(scratch) / "staged"
        model = adapter.load(folder, adapter.stage(str(head), None, folder))
        cache: dict[str, Outputs] = {}

        def outputs_of(split: Split) -> Outputs:
            key = split.fingerprint()
            if key not in cache:
                cache[key] = infer(model.predictor, split)
            return cache[key]

        start = time.perf_counter()
        for split in (data.test, data.val, data.train):
            outputs_of(split)
        print(f"outputs of test, val, train in {time.perf_counter() - start:.1f} s (not counted)")
        load_before = os.getloadavg()
        start, cpu = time.perf_counter(), time.process_time()
        result = run_trust(model, data, config=TrustConfig(), outputs_of=outputs_of)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
        load_after = os.getloadavg()
    print(f"MiniLM head ({model.parameters} parameters, {model.backend}), test n={data.test.n}")
    for family, seconds in result.seconds.items():
        print(f"  {family:<12} {seconds:6.1f} s")
    print(f"text trust suite total: {total:.1f} s wall, {cpu:.1f} s CPU")
    # On a shared machine the wall time measures the neighbours too; CPU seconds over the threads bound
    # from below what an idle machine with that many cores would take.
    print(f"  CPU seconds / {threads} threads: {cpu / threads:.1f} s")
    loads = " / ".join(f"{a:.2f} {b:.2f} {c:.2f}" for a, b, c in (load_before, load_after))
    print(f"  load average (1, 5, 15 min) before / after: {loads}")
    by_name = {m.name: m for m in result.measurements}
    for name in HEADLINES:
        if name in by_name:
            print(f"  {name:<40} {_fmt(by_name[name])}")
    errors = [f"{m.name}: {m.details}" for m in result.measurements if m.status == "error"]
    print(f"errors: {errors or 'none'}")


if __name__ == "__main__":
    main()

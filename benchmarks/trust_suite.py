"""Trust suite time and figures on the demo's Fashion-MNIST CNN.

    python benchmarks/trust_suite.py                      # trains the demo baseline in a throw-away store
    python benchmarks/trust_suite.py --home DIR --model fmnist-cnn@1   # an existing store and version

Fills the outputs cache first, as ``assay eval`` and an earlier ``assay trust`` would (test, validation
and training splits: printed, not counted), then times the whole suite with its defaults: the 10k test
examples for the standard metrics, corruptions (10 corruptions x 5 severities) and OOD (in-distribution
side), membership inference on 5k of them, FGSM/PGD (L-inf and L2, 20 steps) on a seeded 1k subset,
backdoor detection on the 54k training examples. Prints the time of each family, the total, the load
average before and after (the machine may be shared), and the headline figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from assay.data import DataSpec, load_dataset
from assay.env import cpu_info
from assay.release import Workspace, data_for, model_of, train_version
from assay.train import TrainConfig
from assay.trust import TrustConfig, cached_outputs
from assay.trust_runs import trust_version

HEADLINES = (
    "corruption_mca",
    "corruption_accuracy[gaussian_noise@5]",
    "adv_accuracy[fgsm-linf@0.1]",
    "adv_accuracy[pgd-linf@0.05]",
    "adv_accuracy[pgd-linf@0.1]",
    "adv_accuracy[pgd-linf@0.2]",
    "adv_accuracy[pgd-l2@1]",
    "adv_sanity[linf]",
    "adv_sanity[l2]",
    "ood_auroc[digits:msp]",
    "ood_auroc[digits:energy]",
    "ood_auroc[digits:mahalanobis]",
    "ood_auroc[noise:energy]",
    "ood_auroc[inverted:mahalanobis]",
    "ood_auroc[rotated:energy]",
    "ood_fpr_at_95_tpr[digits:energy]",
    "mia_auc[loss]",
    "mia_tpr_at_fpr[loss]",
)


def _fmt(m: dict[str, object]) -> str:
    if m["status"] != "ok":
        return f"{m['status']}: {m['details']}"
    low, high = (float("nan") if m[k] is None else m[k] for k in ("ci_low", "ci_high"))
    return f"{m['value']:.4f} [{low:.4f}, {high:.4f}] n={m['n']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="an existing store (default: a new one)")
    parser.add_argument("--model", default=None, help="a version in --home (default: train the demo's)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the demo baseline, if trained")
    args = parser.parse_args()
    info = cpu_info()
    print(f"CPU: {info['model']}, flags {info['flags']}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as scratch:
        ws = Workspace.open(args.home or Path(scratch) / "home")
        if args.model is None:
            spec = DataSpec(kind="fashion-mnist")
            start = time.perf_counter()
            version, _ = train_version(ws, "fmnist-cnn", load_dataset(spec), spec, arch="cnn",
                                       config=TrainConfig(epochs=args.epochs), progress=False)  # fmt: skip
            print(f"trained {version.ref} in {time.perf_counter() - start:.1f} s (not counted)")
        else:
            version = ws.store.resolve(args.model)
        data, _ = data_for(version)
        model = model_of(ws, version)
        outputs_of = cached_outputs(model, ws.cache_dir, version.artifact_digest)
        start = time.perf_counter()
        for split in (data.test, data.val, data.train):
            outputs_of(split)
        print(f"outputs cache filled (test, val, train) in {time.perf_counter() - start:.1f} s (not counted)")
        load_before = os.getloadavg()
        start, cpu = time.perf_counter(), time.process_time()
        run = trust_version(ws, version.ref, config=TrustConfig(), out_dir=Path(scratch) / "reports")
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
        load_after = os.getloadavg()
    print(f"model {version.ref} ({model.parameters} parameters, {model.backend}), test n={data.test.n}")
    for family, seconds in run.result.seconds.items():
        print(f"  {family:<12} {seconds:6.1f} s")
    print(f"trust suite total (incl. standard metrics, report, plots): {total:.1f} s wall, {cpu:.1f} s CPU")
    # On a shared machine the wall time measures the neighbours too; CPU seconds over the threads used
    # bound what an idle machine with that many cores would take (from below).
    print(f"  CPU seconds / {torch.get_num_threads()} threads: {cpu / torch.get_num_threads():.1f} s")
    loads = " / ".join(f"{a:.2f} {b:.2f} {c:.2f}" for a, b, c in (load_before, load_after))
    print(f"  load average (1, 5, 15 min) before / after: {loads}")
    by_name = {m["name"]: m for m in run.document["measurements"]}
    for name in HEADLINES:
        if name in by_name:
            print(f"  {name:<36} {_fmt(by_name[name])}")
    errors = [m["name"] for m in run.document["measurements"] if m["status"] == "error"]
    print(f"errors: {errors or 'none'}")


if __name__ == "__main__":
    main()

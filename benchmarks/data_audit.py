"""Data audit on Fashion-MNIST (70,000 images): wall time of every check, without and with label issues;
and where the label-issue check's reliability bar sits against its measured precision.

    python benchmarks/data_audit.py [--folds 3] [--planted]
    python benchmarks/data_audit.py --sweep

Runs the audit in-process the way `assay data audit --data fashion-mnist` does (load, checks, JSON + HTML +
Croissant written atomically), twice: every check except label issues, then label issues alone
(k-fold out-of-fold probabilities of the quick model on the 54,000 training images). Prints seconds per
check, the totals, and what was found. With --planted, also flips 5% of a 10,000-image training subset
and prints the precision and recall of the label-issue check on those flips, and whether it is marked.

--sweep (no Fashion-MNIST needed): 1,200 generated sentences (tests/unit/data/audit/sentences.py) on 2, 4
and 10 topics, features from weak to strong (the share of topical words), 5%, 12% and 25% of the labels
flipped; per configuration the quick model's out-of-fold accuracy, its lift over the majority rate at the
Wilson lower bound, whether the finding is marked unreliable, and the flags' precision and recall.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package, for the generator

from tests.unit.data.audit.sentences import bag_of_words, flip_labels, topic_sentences

from assay.data import parse_data_arg
from assay.data.audit import CHECKS, AuditConfig, AuditContext, load_audit_data, run_audit
from assay.data.audit.labels import find_label_issues, model_reliability, out_of_fold_probs
from assay.data.audit.report import write_audit
from assay.env import cpu_info


def _timed_audit(checks: list[str], config: AuditConfig, out: Path) -> tuple[float, dict[str, float], object]:
    start = time.perf_counter()
    data = load_audit_data(parse_data_arg("fashion-mnist"))
    loaded = time.perf_counter() - start
    result = run_audit(AuditContext(data, config), checks)
    write_audit(result, out)
    return time.perf_counter() - start, {"load": loaded, **result.seconds}, result


def _precision_recall(found: np.ndarray, planted: np.ndarray) -> tuple[float, float]:
    hits = int((found & planted).sum())
    return hits / max(int(found.sum()), 1), hits / int(planted.sum())


def sweep(min_lift: float) -> None:
    """The reliability bar against measured precision, over class counts, feature strength and noise."""
    print(
        f"\n{'classes':>7} {'topical':>7} {'noise':>5} {'accuracy':>8} {'majority':>8} {'lift@low':>8} "
        f"{'flagged':>7} {'precision':>9} {'recall':>6}  marked"
    )
    results = []  # (noise, lift at the lower bound, precision)
    for k in (2, 4, 10):
        for share in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
            texts, y = topic_sentences(1200, k, share, (6, 10), seed=0)
            counts = bag_of_words(texts)
            spread = counts.std(axis=0)
            x = ((counts - counts.mean(axis=0)) / np.where(spread == 0, 1.0, spread)).astype(np.float32)
            for noise in (0.05, 0.12, 0.25):
                labels, planted = flip_labels(y, noise, k, seed=100)
                probs = out_of_fold_probs(x, labels, k, folds=3, seed=0)
                found = find_label_issues(labels, probs)
                model = model_reliability(labels, probs, min_lift, [str(c) for c in range(k)])
                precision, recall = _precision_recall(found, planted)
                results.append((noise, model["lift_low"], precision))
                print(
                    f"{k:>7} {share:>7.1f} {noise:>5.0%} {model['accuracy']:>8.1%} "
                    f"{model['majority_rate']:>8.1%} {model['lift_low']:>8.2f} {found.mean():>7.1%} "
                    f"{precision:>9.2f} {recall:>6.2f}  {'' if model['reliable'] else 'unreliable'}",
                    flush=True,
                )
    print("\nmarked although precision >= 0.5 / not marked although precision < 0.5 (of 54; at 12% noise):")
    for bar in sorted({0.4, min_lift, 0.6}):
        needless = [noise for noise, lift, p in results if lift < bar and p >= 0.5]
        missed = [noise for noise, lift, p in results if lift >= bar and p < 0.5]
        print(
            f"  lift >= {bar}: {len(needless)} / {len(missed)} "
            f"({needless.count(0.12)} / {missed.count(0.12)}); at 5% noise {missed.count(0.05)} missed, "
            f"at 25% noise {needless.count(0.25)} needless"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--planted", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="only the label-issue reliability sweep")
    args = parser.parse_args()
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['logical_cores']} logical cores, flags {cpu['flags']}")
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    config = AuditConfig(label_folds=args.folds)
    if args.sweep:
        sweep(config.label_min_lift)
        return
    with tempfile.TemporaryDirectory() as out:
        others = [c for c in CHECKS.names() if c != "label_issues"]
        total, seconds, result = _timed_audit(others, config, Path(out))
        print(f"\naudit, all checks but label issues: {total:.1f} s (target < 90 s)")
        for name, s in seconds.items():
            print(f"  {name:24s} {s:7.2f} s")
        for m in result.measurements:  # type: ignore[attr-defined]
            if (
                m.status == "ok"
                and m.details.get("count")
                and m.name.startswith(("leakage", "exact", "near"))
            ):
                print(f"  found {m.name}: {m.details['count']} of {m.n}")
        total_labels, seconds, result = _timed_audit(["label_issues"], config, Path(out))
        m = result.get("label_issues[train]")  # type: ignore[attr-defined]
        print(f"\nlabel issues ({args.folds}-fold): {total_labels:.1f} s (target < 300 s)")
        model = m.details["model"]
        print(
            f"  quick model out-of-fold accuracy {model['accuracy']:.3f} [{model['ci_low']:.3f}, "
            f"{model['ci_high']:.3f}], majority rate {model['majority_rate']:.3f}, lift at the lower bound "
            f"{model['lift_low']:.2f}: {'reliable' if model['reliable'] else 'marked unreliable'}"
        )
        print(f"  flagged {m.details['count']} of {m.n} ({m.value:.2%} [{m.ci_low:.2%}, {m.ci_high:.2%}])")
    if args.planted:
        data = load_audit_data(parse_data_arg("fashion-mnist", limit=10_000))
        train = data.splits["train"]
        noisy, truth = flip_labels(train.labels, 0.05, 10, seed=0)
        start = time.perf_counter()
        probs = out_of_fold_probs(train.x, noisy, 10, folds=args.folds, seed=0)
        found = find_label_issues(noisy, probs)
        precision, recall = _precision_recall(found, truth)
        model = model_reliability(noisy, probs, config.label_min_lift, data.class_names)
        print(
            f"\nplanted 5% flips in {train.n} Fashion-MNIST training images: precision {precision:.3f}, "
            f"recall {recall:.3f} ({time.perf_counter() - start:.1f} s); accuracy {model['accuracy']:.3f}, "
            f"lift at the lower bound {model['lift_low']:.2f}: "
            f"{'reliable' if model['reliable'] else 'marked unreliable'}"
        )


if __name__ == "__main__":
    main()

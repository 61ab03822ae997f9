"""Data audit on Fashion-MNIST (70,000 images): wall time of every check, without and with label issues.

    python benchmarks/data_audit.py [--folds 3] [--planted]

Runs the audit in-process the way `assay data audit --data fashion-mnist` does (load, checks, JSON + HTML +
Croissant written atomically), twice: every check except label issues, then label issues alone
(k-fold out-of-fold probabilities of the quick model on the 54,000 training images). Prints seconds per
check, the totals, and what was found. With --planted, also flips 5% of a 10,000-image training subset
and prints the precision and recall of the label-issue check on those flips.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from assay.data import parse_data_arg
from assay.data.audit import CHECKS, AuditConfig, AuditContext, load_audit_data, run_audit
from assay.data.audit.labels import find_label_issues, out_of_fold_probs
from assay.data.audit.report import write_audit
from assay.env import cpu_info


def _timed_audit(checks: list[str], config: AuditConfig, out: Path) -> tuple[float, dict[str, float], object]:
    start = time.perf_counter()
    data = load_audit_data(parse_data_arg("fashion-mnist"))
    loaded = time.perf_counter() - start
    result = run_audit(AuditContext(data, config), checks)
    write_audit(result, out)
    return time.perf_counter() - start, {"load": loaded, **result.seconds}, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--planted", action="store_true")
    args = parser.parse_args()
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['logical_cores']} logical cores, flags {cpu['flags']}")
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    config = AuditConfig(label_folds=args.folds)
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
        print(f"  quick model out-of-fold accuracy {m.details['model_accuracy']:.3f}")
        print(f"  flagged {m.details['count']} of {m.n} ({m.value:.2%} [{m.ci_low:.2%}, {m.ci_high:.2%}])")
    if args.planted:
        data = load_audit_data(parse_data_arg("fashion-mnist", limit=10_000))
        train = data.splits["train"]
        rng = np.random.default_rng(0)
        flipped = rng.choice(train.n, train.n // 20, replace=False)
        noisy = train.labels.copy()
        noisy[flipped] = (noisy[flipped] + rng.integers(1, 10, len(flipped))) % 10
        start = time.perf_counter()
        probs = out_of_fold_probs(train.x, noisy, 10, folds=args.folds, seed=0)
        found = find_label_issues(noisy, probs)
        truth = np.zeros(train.n, bool)
        truth[flipped] = True
        print(
            f"\nplanted 5% flips in {train.n} Fashion-MNIST training images: precision "
            f"{(found & truth).sum() / found.sum():.3f}, recall {(found & truth).sum() / truth.sum():.3f} "
            f"({time.perf_counter() - start:.1f} s)"
        )


if __name__ == "__main__":
    main()

"""Coverage of the calibration intervals in the issue's simulation, and what ece_debiased costs.

    python benchmarks/calibration_coverage.py [--sets 60] [--n 2000] [--n-boot 1000] [--temperature 1.8]
                                              [--json]

A known population (tests/unit/metrics/simulation.py): 10 classes, a pool of 200,000 Dirichlet(0.3)
predictions; labels drawn from the predictions (a calibrated model, true calibration error 0) or from
softmax(log p / T) (T = 1.8: an overconfident model with a true binned ECE of 14.7%). For each model,
``--sets`` test sets of ``--n`` examples get measure()'s 95% intervals with ``--n-boot`` resamples;
printed per metric: how many intervals contain the population value, with the Wilson interval of that
share, and the median bounds; for ece_debiased also how often the calibration test rejects at 5%.
Then the time of measure() on 10,000 examples with and without ece_debiased (median of 5 runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package, for the population

from tests.unit.metrics.simulation import dirichlet_population

from assay.env import cpu_info
from assay.metrics import METRICS, measure
from assay.stats import wilson_interval

POOL = 200_000


def coverage(
    temperature: float, sets: int, n: int, n_boot: int, seed: int, names: list[str]
) -> dict[str, Any]:
    """Each metric's coverage over ``sets`` test sets of the population at ``temperature``."""
    pop = dirichlet_population(seed=0, size=POOL, temperature=temperature)
    truth = {name: pop.value(name) for name in names}
    rng = np.random.default_rng(seed)
    bounds: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    rejections = 0  # sets in which the calibration test (in ece_debiased's details) rejects at 5%
    for s in range(sets):
        for m in measure(pop.sample(rng, n), names, n_boot=n_boot, seed=s):
            assert m.ci_low is not None and m.ci_high is not None
            bounds[m.name].append((m.ci_low, m.ci_high))
            if m.name == "ece_debiased":
                rejections += m.details["calibration_test"]["p_value"] < 0.05
    rows = {}
    for name in names:
        low, high = np.array(bounds[name]).T
        covers = int(np.count_nonzero((low <= truth[name]) & (truth[name] <= high)))
        rows[name] = {
            "true_value": truth[name],
            "covers": covers,
            "sets": sets,
            "coverage_wilson_95": wilson_interval(covers, sets),
            "median_low": float(np.median(low)),
            "median_high": float(np.median(high)),
        }
    return {"temperature": temperature, "metrics": rows, "calibration_test_rejections_at_5pct": rejections}


def timing(n: int, repeats: int = 5) -> dict[str, float]:
    """Median seconds of measure() on n examples: every metric, and every metric but ece_debiased."""
    outputs = dirichlet_population(seed=1, size=POOL).sample(np.random.default_rng(0), n)
    everything = METRICS.names()
    without = [name for name in everything if name != "ece_debiased"]

    def median_seconds(names: list[str]) -> float:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            measure(outputs, names)
            runs.append(time.perf_counter() - start)
        return float(np.median(runs))

    median_seconds(everything)  # warm-up: imports, caches
    return {
        "load_average_1min": os.getloadavg()[0],
        "all_metrics_s": median_seconds(everything),
        "without_ece_debiased_s": median_seconds(without),
        "ece_debiased_alone_s": median_seconds(["ece_debiased"]),
    }


def _print(results: dict[str, Any]) -> None:
    cpu = results["cpu"]
    print(f"CPU: {cpu['model']} ({', '.join(cpu['flags'])}), {cpu['logical_cores']} logical cores")
    for model, result in results["models"].items():
        print(
            f"\n{model} (truth temperature {result['temperature']}), {results['n']} examples per set, "
            f"{results['n_boot']} resamples:"
        )
        print(f"  {'metric':13} {'true':>8} {'covers':>8} {'Wilson 95%':>14} {'median bounds':>20}")
        for name, r in result["metrics"].items():
            lo, hi = r["coverage_wilson_95"]
            print(
                f"  {name:13} {r['true_value']:8.4f} {r['covers']:>4}/{r['sets']:<3} "
                f"[{lo:5.1%}, {hi:5.1%}]  [{r['median_low']:.4f}, {r['median_high']:.4f}]"
            )
        if "ece_debiased" in result["metrics"]:
            rejected = result["calibration_test_rejections_at_5pct"]
            print(f"  calibration test rejects at 5%: {rejected}/{results['sets']}")
    t = results["timing"]
    print(
        f"\nmeasure() on {t['n']:,} examples, median of 5: all metrics {t['all_metrics_s']:.2f} s, "
        f"without ece_debiased {t['without_ece_debiased_s']:.2f} s, ece_debiased alone "
        f"{t['ece_debiased_alone_s']:.2f} s (1,000 resamples and 1,000 consistency draws); "
        f"load average {t['load_average_1min']:.2f} on {cpu['logical_cores']} cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=60)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per interval")
    parser.add_argument("--temperature", type=float, default=1.8)
    parser.add_argument("--metrics", default=",".join(METRICS.names()), help="comma-separated names")
    parser.add_argument("--timing-n", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args()
    names = [METRICS.get(name).name for name in args.metrics.split(",")]  # an unknown name says so
    results: dict[str, Any] = {
        "cpu": cpu_info(),
        "n": args.n,
        "n_boot": args.n_boot,
        "sets": args.sets,
        "models": {
            "calibrated": coverage(1.0, args.sets, args.n, args.n_boot, 1, names),
            "overconfident": coverage(args.temperature, args.sets, args.n, args.n_boot, 2, names),
        },
        "timing": {"n": args.timing_n, **timing(args.timing_n)},
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print(results)


if __name__ == "__main__":
    main()

"""Which variant a search calls best: passing, plausible, and better than the parent beyond the noise.

The comparisons are the gate's own (:func:`assay.compare.compare_measurements`) on planted timings; whether
a variant improves is checked against SciPy's two-sample percentile bootstrap of the same samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from assay.compare import compare_measurements
from assay.compress.search import choose_best, vs_parent
from assay.measurement import Comparison, Measurement

N_BOOT = 2000
rng = np.random.default_rng(7)
PARENT_MS = 1.0 + 0.05 * rng.standard_normal(100)
TIMINGS = {
    "fast": 0.5 + 0.05 * rng.standard_normal(100),  # twice as fast: the interval excludes no change
    "noise": rng.permutation(PARENT_MS) - 0.001,  # better by the point estimate, far inside the noise
    "slow": 2.0 + 0.05 * rng.standard_normal(100),
}


def _timing(samples: np.ndarray, name: str = "latency_p50_b1", unit: str = "ms") -> Measurement:
    return Measurement(
        name, "efficiency", float(np.percentile(samples, 50)), unit=unit,
        higher_is_better=name == "throughput", details={"samples": list(samples), "statistic": "p50"},
    )  # fmt: skip


def _size(n_bytes: float) -> Measurement:
    return Measurement("size_on_disk", "efficiency", n_bytes, unit="bytes", higher_is_better=False)


def _versus(variant: Measurement, parent: Measurement) -> Comparison:
    return compare_measurements(parent, variant, n_boot=N_BOOT, seed=0).comparison


def _latency(key: str) -> Comparison:
    return _versus(_timing(TIMINGS[key]), _timing(PARENT_MS))


def _scipy_interval(variant: np.ndarray, parent: np.ndarray) -> tuple[float, float]:
    """Percentile bootstrap of the difference of medians, each sample resampled on its own."""
    result = stats.bootstrap(
        (variant, parent),
        lambda v, p, axis: np.median(v, axis=axis) - np.median(p, axis=axis),
        paired=False, vectorized=True, method="percentile", n_resamples=N_BOOT, random_state=1,
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@pytest.mark.parametrize("key", ["fast", "noise", "slow"])
def test_a_timing_improves_only_when_its_interval_says_so(key: str) -> None:
    vs = vs_parent(_latency(key))
    low, high = _scipy_interval(TIMINGS[key], PARENT_MS)
    assert vs["improves"] == (high < 0) == (key == "fast")
    # The planted cases sit far from the boundary: both intervals decide alike, whatever their draws.
    assert (vs["ci_high"] < 0) == (high < 0) and (vs["ci_low"] > 0) == (low > 0)
    if key == "noise":
        assert vs["delta"] < 0  # better by the point estimate: not enough
    ratio = float(np.median(PARENT_MS) / np.median(TIMINGS[key]))
    word = f"{ratio:.2f}x faster" if ratio > 1 else f"{1 / ratio:.2f}x slower"
    assert vs["ratio"] == word and vs["parent"] == pytest.approx(np.median(PARENT_MS))


def test_throughput_improves_upwards_and_size_exactly() -> None:
    base = 1000 + 20 * rng.standard_normal(100)
    more = _versus(_timing(1500 + 20 * rng.standard_normal(100), "throughput", "examples/s"),
                   _timing(base, "throughput", "examples/s"))  # fmt: skip
    assert vs_parent(more)["improves"] and vs_parent(more)["ratio"].endswith("x faster")
    less = _versus(_timing(base * 0.5, "throughput", "examples/s"), _timing(base, "throughput", "examples/s"))
    assert not vs_parent(less)["improves"] and vs_parent(less)["ratio"] == "2.00x slower"
    smaller = vs_parent(_versus(_size(900), _size(1000)))
    assert (
        smaller["improves"]
        and smaller["ratio"] == "1.11x smaller"
        and smaller["test"] == "exact (no sampling)"
    )
    larger = vs_parent(_versus(_size(1100), _size(1000)))
    assert not larger["improves"] and larger["ratio"] == "1.10x larger"
    same = vs_parent(_versus(_size(1000), _size(1000)))
    assert not same["improves"] and same["ratio"] == "the same size"


def _trial(key: str, status: str, *comparisons: Comparison, flags: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "key": key,
        "version": f"bars@{key}",
        "status": status,
        "flags": list(flags),
        "metrics": {c.name: {"value": c.candidate, "unit": c.unit} for c in comparisons},
        "versus_parent": {c.name: vs_parent(c) for c in comparisons},
    }


ROOT = {"key": "root", "metrics": {"latency_p50_b1": {"value": float(np.median(PARENT_MS)), "unit": "ms"},
                                   "size_on_disk": {"value": 1000.0, "unit": "bytes"}}}  # fmt: skip
FLAG = ("implausible: 9.0x faster than root at batch 1",)


def test_a_slower_passing_variant_is_never_best() -> None:
    evaluated = [
        _trial("fast", "failed", _latency("fast")),  # faster, but it failed the gate
        _trial("flagged", "passed", _latency("fast"), flags=FLAG),  # faster, by a timing nobody can trust
        _trial("slow", "passed", _latency("slow")),
    ]
    outcome = choose_best(evaluated, ROOT, "latency_b1")
    assert (outcome.verdict, outcome.best, outcome.closest) == ("no_improvement", None, "slow")
    slower = np.median(TIMINGS["slow"]) / np.median(PARENT_MS)
    assert outcome.message.startswith(
        "no variant improves on the parent for latency_b1: best passing was slow (bars@slow) at 2."
    )
    assert outcome.message.endswith(
        f"ms against the parent's {np.median(PARENT_MS):.2f} ms ({slower:.2f}x slower)"
    )


def test_a_gain_inside_the_noise_is_not_an_improvement() -> None:
    evaluated = [_trial("slow", "passed", _latency("slow")), _trial("noise", "passed", _latency("noise"))]
    outcome = choose_best(evaluated, ROOT, "latency_b1")
    assert (outcome.verdict, outcome.best, outcome.closest) == ("no_improvement", None, "noise")
    assert "x faster); within the noise: the 95% interval of the difference is " in outcome.message


def test_a_really_faster_passing_variant_is_best() -> None:
    evaluated = [
        _trial("slow", "passed", _latency("slow")),
        _trial("noise", "passed", _latency("noise")),
        _trial("fast", "passed", _latency("fast")),
    ]
    outcome = choose_best(evaluated, ROOT, "latency_b1")
    assert (outcome.verdict, outcome.best, outcome.closest) == ("improves", "fast", None)
    faster = np.median(PARENT_MS) / np.median(TIMINGS["fast"])
    assert outcome.message.startswith("best passing variant for latency_b1: fast (bars@fast) at 0.")
    assert outcome.message.endswith(f"({faster:.2f}x faster)")


def test_size_objective_reads_the_exact_sizes() -> None:
    larger = _trial("larger", "passed", _versus(_size(1100), _size(1000)))
    same = _trial("same", "passed", _versus(_size(1000), _size(1000)))
    smaller = _trial("smaller", "passed", _versus(_size(250), _size(1000)))
    outcome = choose_best([larger, same], ROOT, "size")
    assert (outcome.verdict, outcome.closest) == ("no_improvement", "same")
    assert outcome.message.endswith("against the parent's 1000 B (the same size)")
    assert choose_best([larger], ROOT, "size").message.endswith("(1.10x larger)")
    outcome = choose_best([larger, same, smaller], ROOT, "size")
    assert (outcome.verdict, outcome.best) == ("improves", "smaller")
    assert outcome.message == (
        "best passing variant for size: smaller (bars@smaller) at 250 B against the parent's 1000 B "
        "(4.00x smaller)"
    )


def test_nothing_passing_or_nothing_plausible_is_said() -> None:
    failed = _trial("fast", "failed", _latency("fast"))
    outcome = choose_best([failed], ROOT, "latency_b1")
    assert (outcome.verdict, outcome.best, outcome.message) == (
        "none_passed",
        None,
        "no variant passed the gate",
    )
    flagged = _trial("flagged", "passed", _latency("fast"), flags=FLAG)
    outcome = choose_best([failed, flagged], ROOT, "latency_b1")
    assert (outcome.verdict, outcome.best) == ("none_plausible", None)
    assert outcome.message == (
        "no variant passed the gate with timings to trust (flagged: implausible: 9.0x faster than root at "
        "batch 1)"
    )
    # A parent whose own timings moved its figure (blocks of calls that disagree) makes every variant look
    # faster: no best. A busy machine alone is said, not held against it (both were timed in it).
    drifting, busy = _timing(PARENT_MS), _timing(PARENT_MS)
    drifting.details["flags"] = ["the medians of 5 consecutive blocks of timings disagree: 0.036 to 6.65 ms"]
    busy.details["flags"] = ["busy machine: other processes used 1.6 of its 2 cores"]
    outcome = choose_best([_trial("fast", "passed", _versus(_timing(TIMINGS["fast"]), drifting))], ROOT,
                          "latency_b1")  # fmt: skip
    assert (outcome.verdict, outcome.best) == ("none_plausible", None)
    assert outcome.message.endswith(
        "(fast: the parent's timings: the medians of 5 consecutive blocks of timings disagree: "
        "0.036 to 6.65 ms)"
    )
    outcome = choose_best([_trial("fast", "passed", _versus(_timing(TIMINGS["fast"]), busy))], ROOT,
                          "latency_b1")  # fmt: skip
    assert (outcome.verdict, outcome.best) == ("improves", "fast")
    # Size is measured exactly: a suspect timing does not disqualify a variant that is smaller.
    small = _trial("small", "passed", _versus(_size(250), _size(1000)), flags=FLAG)
    assert choose_best([small], ROOT, "size").best == "small"

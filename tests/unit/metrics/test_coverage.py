"""Coverage: do the 95% intervals contain the population value, calibrated and miscalibrated alike?

A known population (tests/unit/metrics/simulation.py: 10 classes, Dirichlet-drawn predictions, labels
drawn from the predictions themselves for a calibrated model and from a flatter truth for an
overconfident one) gives every metric's population value exactly; REPLICATIONS test sets of N examples
each get measure()'s intervals. benchmarks/calibration_coverage.py runs the issue's full-size simulation.

The bounds come from the binomial arithmetic of REPLICATIONS independent sets. The percentile bootstrap
falls a little short of 95% at n = 500: over 400 sets at n_boot = 200 (``benchmarks/calibration_coverage.py
--n 500 --sets 400 --n-boot 200 --temperature 2``, docs/statistics.md) the bootstrap metrics covered in
91-96% of sets, ece_debiased and mce in 95-100%. So an interval is held to "its coverage is at least
90%": such an interval reaches COVERAGE_FLOOR covers with probability above 99.9%, while one that covers
70% of the time (the plain percentile interval of ece_debiased, without its recentring, covered a
calibrated model's 0 in 72 of these 100 sets) passes with probability 0.016.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.stats import binom

from assay.compare import compare_metric
from assay.metrics import METRICS, measure
from tests.unit.metrics.simulation import Population, dirichlet_population

N = 500
N_BOOT = 200
REPLICATIONS = 100
COVERAGE_FLOOR = int(binom.ppf(0.001, REPLICATIONS, 0.90))  # 80 of 100
# Under perfect calibration a valid test rejects at 5% in at most this many sets, with probability 99.9%.
REJECTIONS_CEILING = int(binom.ppf(0.999, REPLICATIONS, 0.05))  # 13 of 100

MODELS = {"calibrated": 1.0, "overconfident": 2.0}  # the truth's temperature over the model's
# Interval meant to cover the population value: every registered metric except the binned plug-in L1
# errors at a calibrated model, whose interval cannot contain 0 (the documented defect asserted below).
PLUG_IN_L1 = ("ece", "adaptive_ece")


def _population(model: str) -> Population:
    return dirichlet_population(seed=0, size=100_000, temperature=MODELS[model])


def _simulate(model: str) -> dict[str, Any]:
    pop = _population(model)
    names = METRICS.names()
    truth = {name: pop.value(name) for name in names}
    rng = np.random.default_rng(1)
    bounds: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    p_values = []
    for replication in range(REPLICATIONS):
        for m in measure(pop.sample(rng, N), names, n_boot=N_BOOT, seed=replication):
            assert m.status == "ok" and m.ci_low is not None and m.ci_high is not None, m
            bounds[m.name].append((m.ci_low, m.ci_high))
            if m.name == "ece_debiased":
                p_values.append(m.details["calibration_test"]["p_value"])
    covers = {name: sum(low <= truth[name] <= high for low, high in bounds[name]) for name in names}
    return {"truth": truth, "covers": covers, "bounds": bounds, "p_values": np.array(p_values)}


@pytest.fixture(scope="module")
def simulations() -> dict[str, dict[str, Any]]:
    return {model: _simulate(model) for model in MODELS}


def _meant_to_cover() -> list[tuple[str, str]]:
    return [
        (model, name)
        for model in MODELS
        for name in METRICS.names()
        if not (model == "calibrated" and name in PLUG_IN_L1)
    ]


@pytest.mark.parametrize(("model", "name"), _meant_to_cover())
def test_the_interval_covers_the_population_value(
    simulations: dict[str, dict[str, Any]], model: str, name: str
) -> None:
    covers = simulations[model]["covers"][name]
    assert covers >= COVERAGE_FLOOR, f"{name} covered its population value in {covers}/{REPLICATIONS} sets"


def test_the_population_values_are_what_the_models_are() -> None:
    calibrated, overconfident = _population("calibrated"), _population("overconfident")
    for name in ("ece", "ece_debiased", "adaptive_ece", "mce"):
        assert calibrated.value(name) == 0.0
    assert 0.15 < overconfident.value("ece") < 0.2  # the "true ECE of 15%" scale
    assert overconfident.value("ece_debiased") >= overconfident.value("ece")  # L2 >= L1 (Jensen)


@pytest.mark.parametrize("name", PLUG_IN_L1)
def test_the_plug_in_interval_excludes_a_calibrated_models_zero(
    simulations: dict[str, dict[str, Any]], name: str
) -> None:
    # The defect ece_debiased exists for: every resample of a binned L1 error is above 0, so the
    # percentile interval never contains a calibrated model's 0, and its lower bound is well above it.
    sim = simulations["calibrated"]
    assert sim["covers"][name] == 0
    assert np.median([low for low, _ in sim["bounds"][name]]) > 0.02
    debiased_low = [low for low, _ in sim["bounds"]["ece_debiased"]]
    assert np.count_nonzero(np.asarray(debiased_low) == 0.0) >= COVERAGE_FLOOR


def test_the_calibration_test_holds_its_level_and_detects_overconfidence(
    simulations: dict[str, dict[str, Any]],
) -> None:
    assert np.count_nonzero(simulations["calibrated"]["p_values"] < 0.05) <= REJECTIONS_CEILING
    assert np.all(simulations["overconfident"]["p_values"] == 1 / (N_BOOT + 1))


def test_the_paired_delta_of_ece_debiased_covers_the_population_delta() -> None:
    # Two models on the same examples: a calibrated baseline and a sharpened candidate (p² renormalised).
    baseline = _population("calibrated")
    sharpened = baseline.probs**2 / (baseline.probs**2).sum(axis=1, keepdims=True)
    candidate = Population(probs=sharpened, truth=baseline.truth)
    delta = candidate.value("ece_debiased") - baseline.value("ece_debiased")
    assert delta > 0.05
    rng = np.random.default_rng(2)
    covers = 0
    for replication in range(REPLICATIONS):
        idx, labels = baseline.draw(rng, N)
        c = compare_metric(
            baseline.outputs(idx, labels),
            candidate.outputs(idx, labels),
            "ece_debiased",
            n_boot=N_BOOT,
            seed=replication,
        ).comparison
        assert c.delta_ci_low is not None and c.delta_ci_high is not None and c.delta is not None
        assert c.delta_ci_low <= c.delta <= c.delta_ci_high
        covers += c.delta_ci_low <= delta <= c.delta_ci_high
    assert covers >= COVERAGE_FLOOR

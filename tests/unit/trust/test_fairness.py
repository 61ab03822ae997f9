"""Fairness: per-group rates equal fairlearn's MetricFrame, demographic parity and equalized odds equal
fairlearn's functions, bootstrap replicates equal the gap on resampled examples, BH equals statsmodels,
a planted bad slice is found and null data gives (almost) no discoveries."""

from __future__ import annotations

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score
from statsmodels.stats.multitest import multipletests

from assay.errors import UsageError
from assay.metrics import fairness as fair
from assay.stats import benjamini_hochberg, bootstrap_indices


def _binary(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    y = rng.integers(0, 2, n)
    flip = rng.random(n) < np.where(g == "c", 0.35, 0.15)  # group c is served worse
    p = np.where(flip, 1 - y, y)
    return y, p, g


@pytest.mark.parametrize("seed", [0, 1])
def test_per_group_rates_equal_fairlearn_metricframe(seed: int) -> None:
    y, p, g = _binary(seed)
    frame = MetricFrame(
        metrics={
            "accuracy": accuracy_score,
            "selection_rate": selection_rate,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
        },
        y_true=y,
        y_pred=p,
        sensitive_features=g,
    )
    ms = {m.name: m for m in fair.fairness_measurements(y, p, g, n_boot=200)}
    for metric in ("accuracy", "selection_rate", "tpr", "fpr"):
        for group, value in frame.by_group[metric].items():
            assert ms[f"{metric}[group={group}]"].value == pytest.approx(value, abs=1e-12)
        assert ms[f"{metric}_gap[group]"].value == pytest.approx(frame.difference()[metric], abs=1e-12)
        assert ms[f"{metric}_ratio[group]"].value == pytest.approx(frame.ratio()[metric], abs=1e-12)
    assert ms["demographic_parity_difference[group]"].value == pytest.approx(
        demographic_parity_difference(y, p, sensitive_features=g), abs=1e-12
    )
    assert ms["equalized_odds_difference[group]"].value == pytest.approx(
        equalized_odds_difference(y, p, sensitive_features=g), abs=1e-12
    )
    worst = ms["worst_group_accuracy[group]"]
    assert worst.details["worst_group"] == "c" and worst.value == pytest.approx(frame.group_min()["accuracy"])


def test_multiclass_gets_accuracy_only_and_parity_is_skipped() -> None:
    rng = np.random.default_rng(0)
    y, p, g = rng.integers(0, 4, 300), rng.integers(0, 4, 300), rng.choice(["x", "y"], 300)
    frame = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=p, sensitive_features=g)
    ms = {m.name: m for m in fair.fairness_measurements(y, p, g, attribute="site", n_boot=100)}
    assert ms["accuracy[site=x]"].value == pytest.approx(frame.by_group["x"])
    assert "tpr[site=x]" not in ms
    assert ms["demographic_parity_difference[site]"].status == "skipped"


def test_intervals_are_wilson_per_group_and_bootstrap_for_gaps() -> None:
    y, p, g = _binary(3)
    ms = {m.name: m for m in fair.fairness_measurements(y, p, g, n_boot=300)}
    rows = bootstrap_indices(y.size, 3, seed=0)
    replicate = fair._gap_replicates(y, p, g, "accuracy", "gap")(rows)
    by_hand = [
        MetricFrame(metrics=accuracy_score, y_true=y[r], y_pred=p[r], sensitive_features=g[r]).difference()
        for r in rows
    ]
    np.testing.assert_allclose(replicate, by_hand, atol=1e-12)
    gap = ms["accuracy_gap[group]"]
    assert gap.ci_low is not None and gap.ci_high is not None
    assert 0 < gap.ci_low < (gap.value or 0) < gap.ci_high  # the planted gap is clearly non-zero
    acc_c = ms["accuracy[group=c]"]
    assert acc_c.details["interval"] == "wilson" and acc_c.n == int((g == "c").sum())


def test_benjamini_hochberg_equals_statsmodels() -> None:
    p = np.random.default_rng(0).uniform(0, 0.2, 40) ** 2
    np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], atol=1e-12)


def _table(seed: int, n: int = 2000, plant: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=n), rng.normal(size=n), rng.integers(0, 3, n), rng.normal(size=n)])
    error_rate = np.full(n, 0.1)
    if plant:
        error_rate[(x[:, 1] > np.quantile(x[:, 1], 0.75))] = 0.3  # top quartile of x1 errs 3x as often
    return x, rng.random(n) >= error_rate


def test_a_planted_slice_is_found() -> None:
    x, correct = _table(0)
    found, tested = fair.discover_slices(x, correct, ["a", "b", "colour", "d"])
    assert len(tested) == 4 + 4 + 3 + 4
    assert found and found[0].feature == "b" and found[0].description.startswith("b in (")
    assert found[0].n == 500 and found[0].error_rate > 0.2 and found[0].q_value < 1e-6
    assert all(s.feature == "b" for s in found)  # nothing else is reported


def test_null_data_gives_few_false_discoveries() -> None:
    discoveries = sum(len(fair.discover_slices(*_table(seed, plant=False))[0]) for seed in range(20))
    assert discoveries <= 2  # at FDR 5% under the global null, P(any discovery) <= 0.05 per table


def test_slice_measurement_and_bad_arguments() -> None:
    x, correct = _table(1)
    m = fair.slice_measurement(x, correct)
    assert m.value is not None and m.value >= 1 and m.details["slices"][0]["feature"] == "x1"
    with pytest.raises(UsageError, match="fdr"):
        fair.discover_slices(x, correct, fdr=0)
    with pytest.raises(UsageError, match="1-D"):
        fair.fairness_measurements(np.zeros(3), np.zeros(4), np.zeros(3))

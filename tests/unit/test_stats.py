"""assay.stats against statsmodels/scipy references, plus determinism and coverage sanity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint

from assay import stats
from assay.errors import UsageError
from assay.measurement import Measurement
from assay.stats import (
    benjamini_hochberg,
    bootstrap_ci,
    bootstrap_indices,
    bootstrap_p_value,
    holm,
    iter_bootstrap_indices,
    mcnemar_exact,
    mcnemar_from_counts,
    mde_accuracy,
    mde_paired_accuracy,
    one_sided_bound,
    wilson_interval,
)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (1, 3), (37, 50), (500, 1000), (9_123, 10_000)])
def test_wilson_matches_statsmodels(k: int, n: int, confidence: float) -> None:
    low, high = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    assert wilson_interval(k, n, confidence) == pytest.approx((low, high), abs=1e-12)


@pytest.mark.parametrize("n", [7, 13, 10_000, 54_321])
def test_wilson_bounds_are_exact_at_zero_and_n(n: int) -> None:
    """0 and 1 exactly, not a rounding residue like 3.5e-18 (a count of 0 reads as 'at least a trace')."""
    assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0


@pytest.mark.parametrize(
    ("k", "n"), [(0, 1), (0, 40), (40, 40), (1, 3), (37, 50), (9_999, 10_000), (0, 54_321)]
)
def test_a_proportion_measurement_is_the_share_with_statsmodels_wilson_interval(k: int, n: int) -> None:
    m = Measurement.proportion(
        "accuracy[x]", "quality", k, n, higher_is_better=True, estimator="share", details={"by": "test"}
    )
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert (m.value, m.n, m.name, m.family, m.higher_is_better) == (k / n, n, "accuracy[x]", "quality", True)
    assert (m.ci_low, m.ci_high) == pytest.approx((low, high), abs=1e-12)
    assert m.details == {"interval": "wilson", "successes": k, "by": "test"}
    # The interval holds the estimate, and is pinned at the ends: 0 and 1 exactly, not 1e-18 beside them.
    assert m.ci_low is not None and m.ci_high is not None and m.ci_low <= m.value <= m.ci_high
    assert (m.ci_low == 0.0) == (k == 0) and (m.ci_high == 1.0) == (k == n)


def test_a_proportion_names_its_count_as_asked_and_refuses_no_examples() -> None:
    m = Measurement.proportion(
        "churn", "churn", 3, 9, higher_is_better=False, estimator="s", count_key="count"
    )
    assert m.details == {"interval": "wilson", "count": 3} and m.higher_is_better is False
    with pytest.raises(UsageError, match="'n' must be a positive count"):
        Measurement.proportion("churn", "churn", 0, 0, higher_is_better=False, estimator="s")


@pytest.mark.parametrize(
    ("k", "n", "confidence"), [(-1, 10, 0.95), (11, 10, 0.95), (1, 0, 0.95), (1, 10, 1.0)]
)
def test_wilson_rejects_bad_arguments(k: int, n: int, confidence: float) -> None:
    with pytest.raises(UsageError):
        wilson_interval(k, n, confidence)


def test_bootstrap_indices_are_seeded_and_shaped() -> None:
    a = bootstrap_indices(50, 200, seed=3)
    assert a.shape == (200, 50) and a.dtype == np.int32
    assert a.min() >= 0 and a.max() < 50
    np.testing.assert_array_equal(a, bootstrap_indices(50, 200, seed=3))
    assert not np.array_equal(a, bootstrap_indices(50, 200, seed=4))
    np.testing.assert_array_equal(a, np.random.default_rng(3).integers(0, 50, size=(200, 50), dtype=np.int32))


def test_chunked_indices_equal_one_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = bootstrap_indices(37, 101, seed=9)
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 37 * 7)  # 7 rows per chunk, the last one short
    chunks = list(iter_bootstrap_indices(37, 101, seed=9))
    assert len(chunks) == 15
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_bootstrap_ci_vectorised_equals_loop_and_is_deterministic() -> None:
    values = np.random.default_rng(0).normal(size=300)
    loop = bootstrap_ci(lambda idx: float(values[idx].mean()), 300, n_boot=400, seed=5)
    vec = bootstrap_ci(lambda rows: values[rows].mean(axis=1), 300, n_boot=400, seed=5, vectorized=True)
    np.testing.assert_allclose(loop.samples, vec.samples, rtol=1e-12)
    assert loop.estimate == pytest.approx(values.mean())
    assert (loop.ci_low, loop.ci_high) == pytest.approx((vec.ci_low, vec.ci_high))
    again = bootstrap_ci(lambda rows: values[rows].mean(axis=1), 300, n_boot=400, seed=5, vectorized=True)
    np.testing.assert_array_equal(vec.samples, again.samples)
    low, high = np.quantile(vec.samples, [0.025, 0.975])
    assert (vec.ci_low, vec.ci_high) == pytest.approx((low, high), rel=1e-12)


def test_bootstrap_ci_of_accuracy_is_close_to_wilson_on_large_n() -> None:
    correct = (np.random.default_rng(1).random(5000) < 0.83).astype(float)
    result = bootstrap_ci(lambda rows: correct[rows].mean(axis=1), 5000, n_boot=2000, seed=0, vectorized=True)
    low, high = wilson_interval(int(correct.sum()), 5000)
    assert result.ci_low == pytest.approx(low, abs=0.003)
    assert result.ci_high == pytest.approx(high, abs=0.003)


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(2)
    hits = 0
    for trial in range(300):
        x = rng.exponential(1.0, 200)  # skewed, true mean 1
        r = bootstrap_ci(lambda rows, x=x: x[rows].mean(axis=1), 200, n_boot=400, seed=trial, vectorized=True)
        hits += r.ci_low <= 1.0 <= r.ci_high
    assert 0.90 <= hits / 300 <= 0.98


def test_bootstrap_p_value_counts_with_the_plus_one_correction() -> None:
    samples = np.arange(-10, 90, dtype=float)  # 100 replicates, 11 of them <= 0
    assert bootstrap_p_value(samples, 0.0, alternative="greater") == pytest.approx(12 / 101)
    assert bootstrap_p_value(samples, 0.0, alternative="less") == pytest.approx(91 / 101)
    assert bootstrap_p_value(samples, 0.0, alternative="two-sided") == pytest.approx(24 / 101)
    assert bootstrap_p_value(np.zeros(50), 0.0, alternative="two-sided") == 1.0


@pytest.mark.parametrize("multiplier", [1, 2, 3])
@pytest.mark.parametrize(("n_boot", "level"), [(999, 0.05), (1000, 0.05), (200, 0.025)])
def test_one_sided_bound_agrees_with_the_p_value_everywhere(
    n_boot: int, level: float, multiplier: int
) -> None:
    samples = np.round(np.random.default_rng(n_boot).normal(size=n_boot), 2)  # rounding makes ties
    for x in np.unique(np.r_[samples, samples + 0.005]):
        p_up = bootstrap_p_value(samples, x, alternative="greater")
        p_down = bootstrap_p_value(samples, x, alternative="less")
        lower = one_sided_bound(samples, level, side="lower", multiplier=multiplier)
        upper = one_sided_bound(samples, level, side="upper", multiplier=multiplier)
        assert lower is not None and upper is not None
        assert (lower > x) == (multiplier * p_up < level)
        assert (upper < x) == (multiplier * p_down < level)


def test_one_sided_bound_is_none_when_resamples_are_too_few() -> None:
    assert one_sided_bound(np.zeros(10), 0.05, side="lower") is None


def _random_pairs(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.random(n) < 0.8
    b = np.where(rng.random(n) < 0.1, ~a, a)
    return a, b


@pytest.mark.parametrize(("seed", "n"), [(0, 40), (1, 200), (2, 1000), (3, 15)])
def test_mcnemar_matches_statsmodels(seed: int, n: int) -> None:
    a, b = _random_pairs(seed, n)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    result = mcnemar_exact(a, b)
    assert (result.b, result.c) == (table[0][1], table[1][0])
    assert result.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)


def test_mcnemar_one_sided_matches_scipy_binomtest() -> None:
    for b, c in [(3, 12), (12, 3), (7, 7), (0, 5)]:
        greater = mcnemar_from_counts(b, c, alternative="greater").p_value
        less = mcnemar_from_counts(b, c, alternative="less").p_value
        assert greater == pytest.approx(binomtest(c, b + c, 0.5, alternative="greater").pvalue)
        assert less == pytest.approx(binomtest(c, b + c, 0.5, alternative="less").pvalue)


def test_mcnemar_without_discordant_pairs_is_one() -> None:
    a = np.array([True, False, True])
    assert mcnemar_exact(a, a).p_value == 1.0
    with pytest.raises(UsageError):
        mcnemar_exact(a, a[:2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holm_and_bh_match_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.r_[rng.uniform(0, 0.1, 6), rng.uniform(0, 1, 6), [0.02, 0.02]]  # includes a tie
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=1e-12)
    np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12)


def test_holm_known_values_and_bad_input() -> None:
    np.testing.assert_allclose(holm([0.03, 0.04]), [0.06, 0.06])
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    assert holm([]).shape == (0,)
    with pytest.raises(UsageError):
        holm([0.1, 1.5])


@pytest.mark.parametrize(("n", "accuracy"), [(1000, 0.9), (10_000, 0.75), (250, 0.5)])
def test_mde_accuracy_matches_statsmodels_power(n: int, accuracy: float) -> None:
    d = NormalIndPower().solve_power(effect_size=None, nobs1=n, alpha=0.05, power=0.8, ratio=0)
    assert mde_accuracy(n, accuracy) == pytest.approx(d * math.sqrt(accuracy * (1 - accuracy)), rel=1e-4)


def test_mde_paired_solves_connors_formula() -> None:
    n, psi = 5000, 0.04
    delta = mde_paired_accuracy(n, psi)
    z_a, z_b = 1.959963984540054, 0.8416212335729143
    assert n == pytest.approx((z_a * math.sqrt(psi) + z_b * math.sqrt(psi - delta**2)) ** 2 / delta**2)
    assert mde_paired_accuracy(4 * n, psi) < delta  # more examples, smaller detectable effect
    assert math.isnan(mde_paired_accuracy(n, 0.0))
    assert math.isnan(mde_paired_accuracy(3, 0.01))  # not even a 1-point difference is detectable


def test_mde_paired_has_about_the_stated_power_under_exact_mcnemar() -> None:
    n, psi = 4000, 0.05
    delta = mde_paired_accuracy(n, psi)
    rng = np.random.default_rng(0)
    counts = rng.multinomial(n, [(psi - delta) / 2, (psi + delta) / 2, 1 - psi], size=4000)
    b, c = counts[:, 0], counts[:, 1]
    p = np.minimum(1.0, 2 * binom.cdf(np.minimum(b, c), b + c, 0.5))
    assert 0.74 <= float(np.mean(p < 0.05)) <= 0.84


def test_monte_carlo_p_value_counts_ties_and_the_observed_draw() -> None:
    null = np.array([0.1, 0.2, 0.2, 0.3, 0.5])
    assert stats.monte_carlo_p_value(null, 0.2) == pytest.approx(5 / 6)  # 4 draws >= 0.2, plus one
    assert stats.monte_carlo_p_value(null, 0.6) == pytest.approx(1 / 6)
    assert stats.monte_carlo_p_value(null, 0.0) == 1.0


@pytest.mark.parametrize(("n", "p", "observed"), [(40, 0.3, 18), (200, 0.7, 128), (25, 0.5, 13)])
def test_consistency_resampling_of_a_count_matches_the_binomial_tail(n: int, p: float, observed: int) -> None:
    # The number of successes among n Bernoulli(p) draws is Binomial(n, p): the Monte Carlo p-value must
    # estimate P(X >= observed) within its own sampling error.
    result = stats.consistency_resampling(
        lambda outcomes: outcomes.sum(axis=1), np.full(n, p), observed, n_resamples=20_000, seed=3
    )
    exact = float(binom.sf(observed - 1, n, p))
    assert result.statistic == observed and result.null_samples.shape == (20_000,)
    assert result.p_value == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 20_000) + 1e-4)
    np.testing.assert_allclose(result.null_samples.mean(), n * p, rtol=0.01)


def test_consistency_resampling_draws_the_same_outcomes_in_any_block_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probabilities = np.random.default_rng(0).random(30)
    weights = np.arange(30.0)

    def statistic(outcomes: np.ndarray) -> np.ndarray:
        return outcomes @ weights  # a different value for almost every outcome vector

    whole = stats.consistency_resampling(statistic, probabilities, 100.0, n_resamples=50, seed=(7, 1))
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 30 * 8)  # 8 rows per block, the last one short
    blocks = stats.consistency_resampling(statistic, probabilities, 100.0, n_resamples=50, seed=(7, 1))
    np.testing.assert_array_equal(whole.null_samples, blocks.null_samples)
    assert whole.p_value == blocks.p_value


def test_consistency_resampling_rejects_bad_arguments() -> None:
    with pytest.raises(UsageError, match="n_resamples"):
        stats.consistency_resampling(np.sum, np.full(3, 0.5), 1.0, n_resamples=0, seed=0)
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        stats.consistency_resampling(np.sum, np.array([0.5, 1.5]), 1.0, n_resamples=10, seed=0)


@pytest.mark.parametrize("confidence", [0.95, 0.999])
def test_clopper_pearson_matches_statsmodels(confidence: float) -> None:
    k = np.array([0, 1, 3, 7, 10, 250, 9_999])
    n = np.array([5, 1, 10, 7, 40, 1000, 10_000])
    low, high = stats.clopper_pearson_interval(k, n, confidence)
    ref_low, ref_high = proportion_confint(k, n, alpha=1 - confidence, method="beta")
    np.testing.assert_allclose(low, ref_low, atol=1e-12)
    np.testing.assert_allclose(high, ref_high, atol=1e-12)
    assert low[0] == 0.0 and high[3] == 1.0 and np.all(low <= k / n) and np.all(k / n <= high)
    with pytest.raises(UsageError, match="successes"):
        stats.clopper_pearson_interval(np.array([3]), np.array([2]))

"""The statistics behind every interval, comparison and gate decision.

- :func:`wilson_interval`: the Wilson score interval for a proportion (accuracy, recall, churn).
- :func:`bootstrap_ci`: seeded percentile bootstrap for any statistic of the examples; the same
  indices (:func:`bootstrap_indices`) resample two models' outputs for paired comparisons.
- :func:`consistency_resampling`: the null distribution of a calibration statistic (Bröcker & Smith
  2007) and its Monte Carlo p-value (:func:`monte_carlo_p_value`).
- :func:`clopper_pearson_interval`: exact binomial intervals, vectorised (calibration bins).
- :func:`mcnemar_exact`: exact McNemar test on the discordant pairs (paired accuracy).
- :func:`holm`, :func:`benjamini_hochberg`: adjusted p-values for several tests at once.
- :func:`mde_accuracy`, :func:`mde_paired_accuracy`: the minimum detectable effect of a test set.

Pure numpy/scipy; every function names its estimator in its docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize
from scipy.stats import beta, binom, norm

from assay.errors import UsageError

# Replicates are resampled in row chunks so that at most about this many index cells (and as many
# gathered values) exist at once: 2M cells = 8 MB of int32 indices, 16 MB of gathered float64 values.
_CHUNK_CELLS = 2_000_000


MIN_BOOTSTRAP = 100  # fewer resamples make the tails of a 95% percentile interval unstable


@dataclass(frozen=True)
class BootstrapResult:
    """A statistic on the full sample, its percentile interval and the bootstrap replicates."""

    estimate: float
    ci_low: float
    ci_high: float
    samples: np.ndarray  # (n_boot,) float64


@dataclass(frozen=True)
class MonteCarloTest:
    """An observed statistic, its Monte Carlo p-value and the statistic's draws under the null."""

    statistic: float
    p_value: float
    null_samples: np.ndarray  # (n_resamples,) float64


@dataclass(frozen=True)
class McNemarResult:
    """Discordant pair counts and the exact p-value.

    ``b``: first model right, second wrong; ``c``: first wrong, second right.
    """

    b: int
    c: int
    p_value: float


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise UsageError(f"'confidence' must be strictly between 0 and 1. Got {confidence}.")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Estimator: the set of p whose score test is not rejected,
    ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`` with ``z = Φ⁻¹(1 − (1−confidence)/2)``.
    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps its coverage near 0 and 1.
    """
    _check_confidence(confidence)
    if n <= 0:
        raise UsageError(f"'n' must be a positive count. Got {n}.")
    if not 0 <= successes <= n:
        raise UsageError(f"'successes' must be between 0 and n = {n}. Got {successes}.")
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At p = 0 (or 1) the bound is exactly 0 (or 1); rounding leaves a residue such as 3.5e-18 there.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` resamples of ``range(n)`` with replacement: an (n_boot, n) int32 array.

    Drawn with ``numpy.random.default_rng(seed).integers``. Two models resampled with the same
    indices give a paired bootstrap. :func:`iter_bootstrap_indices` yields the same rows in chunks.
    """
    return np.concatenate(list(iter_bootstrap_indices(n, n_boot, seed)), axis=0)


def iter_bootstrap_indices(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The rows of :func:`bootstrap_indices`, in chunks small enough to bound memory.

    Successive draws from one generator continue the same stream, so the concatenated chunks equal
    the single (n_boot, n) draw for any chunk size.
    """
    if n <= 0 or n_boot <= 0:
        raise UsageError(f"'n' and 'n_boot' must be positive. Got n={n}, n_boot={n_boot}.")
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // n)
    for start in range(0, n_boot, rows):
        yield rng.integers(0, n, size=(min(rows, n_boot - start), n), dtype=np.int32)


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval: the (1−confidence)/2 and (1+confidence)/2 quantiles (linear interpolation)."""
    _check_confidence(confidence)
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_ci(
    stat: Callable[[np.ndarray], float] | Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    vectorized: bool = False,
) -> BootstrapResult:
    """Seeded percentile bootstrap interval of ``stat``.

    ``stat(idx)`` computes the statistic on the examples ``idx`` (a 1-D index array); the estimate is
    ``stat(arange(n))``. With ``vectorized=True`` ``stat`` instead takes a (b, n) array of index rows
    and returns the b statistics at once, which is how the metrics avoid a Python loop per replicate.
    The interval is the percentile interval of the ``n_boot`` replicates (:func:`percentile_interval`).
    """
    full = np.arange(n)
    if vectorized:
        estimate = float(np.asarray(stat(full[None, :]))[0])
        samples = np.concatenate(
            [np.asarray(stat(chunk), dtype=np.float64) for chunk in iter_bootstrap_indices(n, n_boot, seed)]
        )
    else:
        estimate = float(stat(full))
        samples = np.array(
            [float(stat(row)) for chunk in iter_bootstrap_indices(n, n_boot, seed) for row in chunk]
        )
    low, high = percentile_interval(samples, confidence)
    return BootstrapResult(estimate=estimate, ci_low=low, ci_high=high, samples=samples)


def monte_carlo_p_value(null_samples: np.ndarray, observed: float) -> float:
    """Upper-tail Monte Carlo p-value ``(1 + #{T* >= observed}) / (B + 1)`` of B draws T* of the statistic.

    The +1 counts the observed statistic as one of the B + 1 draws, so that under H0 P(p <= a) <= a holds
    exactly for every B (Davison & Hinkley 1997, §4.2.1) and p is never 0.
    """
    b = null_samples.shape[0]
    return (1 + int(np.count_nonzero(null_samples >= observed))) / (b + 1)


def bootstrap_p_value(
    samples: np.ndarray, null: float, *, alternative: Literal["two-sided", "greater", "less"]
) -> float:
    """p-value of H0 ``θ = null`` (or its one-sided versions) from bootstrap replicates of θ̂.

    One-sided, H1 ``θ > null`` ("greater"): ``(1 + #{θ* ≤ null}) / (B + 1)``; "less" mirrors it. The +1
    counts the observed sample as one of the B + 1 and keeps p > 0 (the Monte Carlo p-value convention,
    :func:`monte_carlo_p_value`). Two-sided: twice the smaller one-sided p, capped at 1 (the
    percentile-interval test).
    """
    p_greater = monte_carlo_p_value(-samples, -null)
    p_less = monte_carlo_p_value(samples, null)
    if alternative == "greater":
        return p_greater
    if alternative == "less":
        return p_less
    return min(1.0, 2 * min(p_greater, p_less))


def one_sided_bound(
    samples: np.ndarray, level: float, *, side: Literal["lower", "upper"], multiplier: float = 1.0
) -> float | None:
    """The one-sided bootstrap bound that matches :func:`bootstrap_p_value` exactly.

    For ``side="lower"``: ``bound > x`` if and only if ``multiplier · p < level``, p being the "greater"
    p-value for ``null = x`` (``multiplier`` is a Holm factor m − j + 1; 1 gives the plain (1 − level)
    bound). It is the K-th smallest replicate, K the number of counts k = #{θ* <= x} that would pass;
    None when B is too small for any p-value to pass (multiplier/(B+1) >= level). "upper" mirrors it.
    """
    b = samples.shape[0]
    # Counted with the very expression the decision uses, so float rounding cannot split them.
    k = int(np.count_nonzero(multiplier * ((1 + np.arange(b + 1)) / (b + 1)) < level))
    if k < 1:
        return None
    ordered = np.sort(samples)
    return float(ordered[k - 1] if side == "lower" else ordered[b - k])


def consistency_resampling(
    stat: Callable[[np.ndarray], np.ndarray],
    probabilities: np.ndarray,
    observed: float,
    *,
    n_resamples: int,
    seed: int | Sequence[int],
) -> MonteCarloTest:
    """Consistency resampling (Bröcker & Smith 2007): a test of the null that forecasts are calibrated.

    Under H0 each outcome is an independent Bernoulli draw with the forecast ``probabilities`` (N,) as its
    probability. ``stat`` maps a (b, N) block of such 0/1 outcomes (float64) to the b values of the
    statistic; ``observed`` is its value on the real outcomes. The p-value is the upper-tail
    :func:`monte_carlo_p_value` of ``n_resamples`` draws, made with ``numpy.random.default_rng(seed)`` in
    blocks as small as the bootstrap's (the same draws for any block size). An outcome is
    ``uniform < probability`` in float32, four times faster to draw than float64 (the draws are most of
    the test's time); a probability is then resolved to 2⁻²⁴, far below any calibration error.
    """
    if n_resamples <= 0:
        raise UsageError(f"'n_resamples' must be positive. Got {n_resamples}.")
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] == 0 or np.any((p < 0) | (p > 1)):
        raise UsageError(f"'probabilities' must be a non-empty 1-D array in [0, 1]; got shape {p.shape}.")
    rng = np.random.default_rng(seed)
    p32 = p.astype(np.float32)

    def outcomes(count: int) -> np.ndarray:
        return (rng.random((count, p.shape[0]), dtype=np.float32) < p32).astype(np.float64)

    rows = max(1, _CHUNK_CELLS // p.shape[0])
    blocks = [
        np.asarray(stat(outcomes(min(rows, n_resamples - start)))) for start in range(0, n_resamples, rows)
    ]
    null = np.concatenate(blocks).astype(np.float64)
    return MonteCarloTest(
        statistic=float(observed), p_value=monte_carlo_p_value(null, observed), null_samples=null
    )


def clopper_pearson_interval(
    successes: np.ndarray, n: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson (exact) interval of each binomial proportion ``successes / n``, elementwise.

    ``[B(α/2; k, n − k + 1), B(1 − α/2; k + 1, n − k)]`` with B the beta quantile and α = 1 − confidence;
    the bound is 0 at k = 0 and 1 at k = n. Its coverage is at least ``confidence`` for every p and n,
    which is what a union bound over many small counts needs (Wilson can fall below it for small n).
    """
    _check_confidence(confidence)
    k, m = np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if np.any(m <= 0) or np.any((k < 0) | (k > m)):
        raise UsageError(f"Need 0 <= successes <= n and n > 0; got successes={k.tolist()}, n={m.tolist()}.")
    tail = (1 - confidence) / 2
    with np.errstate(invalid="ignore"):  # beta(0, ·) at k = 0 or k = n: replaced by the exact bound
        low = np.where(k > 0, beta.ppf(tail, k, m - k + 1), 0.0)
        high = np.where(k < m, beta.ppf(1 - tail, k + 1, m - k), 1.0)
    return low, high


def mcnemar_exact(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    alternative: Literal["two-sided", "greater", "less"] = "two-sided",
) -> McNemarResult:
    """Exact McNemar test of equal accuracy for two classifiers scored on the same examples.

    Only discordant pairs carry information: ``b`` = a right and b wrong, ``c`` = a wrong and b right.
    See :func:`mcnemar_from_counts` for the test itself.
    """
    a_right = np.asarray(correct_a, dtype=bool)
    b_right = np.asarray(correct_b, dtype=bool)
    if a_right.shape != b_right.shape or a_right.ndim != 1:
        raise UsageError(
            f"McNemar needs two 1-D arrays of equal length; got shapes {a_right.shape} and {b_right.shape}."
        )
    b = int(np.count_nonzero(a_right & ~b_right))
    c = int(np.count_nonzero(~a_right & b_right))
    return mcnemar_from_counts(b, c, alternative=alternative)


def mcnemar_from_counts(
    b: int, c: int, *, alternative: Literal["two-sided", "greater", "less"] = "two-sided"
) -> McNemarResult:
    """Exact McNemar test from the discordant counts ``b`` (a right, b wrong) and ``c`` (a wrong, b right).

    Under H0 (equal accuracy) ``c ~ Binomial(b + c, 1/2)``. Two-sided p = ``min(1, 2·P(X <= min(b, c)))``;
    ``alternative="greater"`` tests H1 "b is more accurate than a" with p = ``P(X >= c)``; "less" mirrors
    it. p = 1 when there are no discordant pairs.
    """
    if b < 0 or c < 0:
        raise UsageError(f"Discordant counts must be >= 0. Got b={b}, c={c}.")
    m = b + c
    if m == 0:
        return McNemarResult(b=b, c=c, p_value=1.0)
    if alternative == "greater":
        p = float(binom.sf(c - 1, m, 0.5))
    elif alternative == "less":
        p = float(binom.cdf(c, m, 0.5))
    else:
        p = min(1.0, 2.0 * float(binom.cdf(min(b, c), m, 0.5)))
    return McNemarResult(b=b, c=c, p_value=p)


def _as_p_values(p_values: np.ndarray | list[float]) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise UsageError(f"p-values must be a 1-D sequence; got shape {p.shape}.")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise UsageError(f"p-values must lie in [0, 1]; got {p.tolist()}.")
    return p


def holm(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, controlling the family-wise error rate.

    With ascending p₍₁₎ <= ... <= p₍ₘ₎: ``p̃₍ᵢ₎ = max_{j<=i} min(1, (m − j + 1)·p₍ⱼ₎)``; reject H₍ᵢ₎ iff
    ``p̃₍ᵢ₎ < α``. Returned in the input order.
    """
    p = _as_p_values(p_values)
    m = p.shape[0]
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def benjamini_hochberg(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Benjamini–Hochberg (1995) step-up adjusted p-values, controlling the false discovery rate.

    With ascending p₍₁₎ <= ... <= p₍ₘ₎: ``p̃₍ᵢ₎ = min_{j>=i} min(1, m·p₍ⱼ₎ / j)``. Returned in input order.
    """
    p = _as_p_values(p_values)
    m = p.shape[0]
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, m * p[order] / np.arange(1, m + 1))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return adjusted


def _z_sum(alpha: float, power: float) -> tuple[float, float]:
    if not 0 < alpha < 1 or not 0.5 < power < 1:
        raise UsageError(f"Need 0 < alpha < 1 and 0.5 < power < 1. Got alpha={alpha}, power={power}.")
    return float(norm.ppf(1 - alpha / 2)), float(norm.ppf(power))


def mde_accuracy(n: int, accuracy: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect of one evaluation: the smallest true deviation of accuracy from a
    reference value that a two-sided z-test at level ``alpha`` detects with probability ``power``.

    Normal approximation with the variance at the observed accuracy p:
    ``MDE = (z_{1−α/2} + z_{power}) · sqrt(p(1 − p) / n)``.
    """
    if n <= 0 or not 0 <= accuracy <= 1:
        raise UsageError(f"Need n > 0 and 0 <= accuracy <= 1. Got n={n}, accuracy={accuracy}.")
    z_alpha, z_power = _z_sum(alpha, power)
    return (z_alpha + z_power) * math.sqrt(accuracy * (1 - accuracy) / n)


def mde_paired_accuracy(n: int, discordance_rate: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable accuracy difference of a paired (McNemar) comparison on n examples.

    Connor (1987)'s sample size for McNemar's test, with ψ the discordance rate (share of examples on
    which exactly one model is right) and δ the accuracy difference:
    ``n = (z_{1−α/2}·sqrt(ψ) + z_{power}·sqrt(ψ − δ²))² / δ²``.
    Solved for δ on (0, ψ] (|δ| <= ψ always). Returns NaN when ψ = 0 (no discordant pairs: the test
    has no information) or when not even δ = ψ is detectable at this n.
    """
    if n <= 0 or not 0 <= discordance_rate <= 1:
        raise UsageError(f"Need n > 0 and 0 <= discordance_rate <= 1. Got n={n}, {discordance_rate}.")
    z_alpha, z_power = _z_sum(alpha, power)
    psi = discordance_rate
    if psi == 0:
        return math.nan

    def gap(delta: float) -> float:
        # Increasing in delta: detectable iff sqrt(n)·δ reaches the right-hand side.
        rhs = z_alpha * math.sqrt(psi) + z_power * math.sqrt(max(psi - delta * delta, 0.0))
        return math.sqrt(n) * delta - rhs

    if gap(psi) < 0:
        return math.nan
    return float(optimize.brentq(gap, 0.0, psi, xtol=1e-12))

"""The monitor's budget: a token bucket of examples, checked on a fake clock."""

from __future__ import annotations

import numpy as np

from assay.serve.service import MonitorBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = Clock()
    budget = MonitorBudget(rate=50.0, burst=100, clock=clock)
    assert budget.take(60) and not budget.take(60)  # 40 left
    clock.now = 0.4  # +20
    assert budget.take(60) and budget.tokens == 0.0
    assert budget.take(10, always=True) and budget.tokens == -10.0  # labelled: observed regardless
    clock.now = 0.5  # +5
    assert not budget.take(1)
    clock.now = 100.0  # full again, not more
    assert budget.tokens < 0 and budget.take(150) and budget.tokens == -50.0  # a batch over the burst


def test_unlimited_observes_everything() -> None:
    budget = MonitorBudget(rate=None, burst=10, clock=Clock())
    assert all(budget.take(1000) for _ in range(100))


def test_over_a_long_run_the_observed_rate_is_the_budget() -> None:
    """Batches of 1 to 64 at 3,500 examples a second against 500 a second: the observed examples match
    the budget to within one burst and one batch, whatever the traffic."""
    clock = Clock()
    budget = MonitorBudget(rate=500.0, burst=500, clock=clock)
    rng = np.random.default_rng(0)
    observed = total = 0
    while clock.now < 60.0:
        n = int(rng.integers(1, 65))
        total += n
        observed += n * budget.take(n)
        clock.now += n / 3500
    assert total > 200_000
    assert abs(observed - 500 * 60) <= 500 + 64

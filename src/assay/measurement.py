"""The measurement: the one record every metric, check and comparison produces.

Its JSON form is the stable schema CI users script against (see docs/architecture.md):

    {"name": "ece", "family": "calibration", "value": 0.031, "ci_low": 0.026, "ci_high": 0.037,
     "n": 10000, "unit": null, "higher_is_better": false,
     "estimator": "top-label, 15 equal-width bins, L1", "status": "ok", "details": {}}

A comparison adds ``delta``, ``delta_ci_low``, ``delta_ci_high``, ``p_value`` and ``test``.
``status`` is ``ok``, ``skipped`` (reason in details) or ``error`` (message in details): one failing
check never stops a run and never hides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Self

from assay.stats import wilson_interval

Status = Literal["ok", "skipped", "error"]


def _clean(x: float | None) -> float | None:
    """JSON has no NaN/inf: store them as null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class _Record:
    """JSON round trip shared by Measurement and Comparison: floats that JSON cannot hold become null."""

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) if isinstance(v, float) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        names = cls.__dataclass_fields__  # type: ignore[attr-defined]
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Measurement(_Record):
    name: str
    family: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    unit: str | None = None
    higher_is_better: bool | None = None
    estimator: str = ""
    status: Status = "ok"
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def proportion(
        cls,
        name: str,
        family: str,
        k: int,
        n: int,
        *,
        higher_is_better: bool | None,
        estimator: str,
        details: Mapping[str, Any] | None = None,
        count_key: str = "successes",
    ) -> Measurement:
        """``k`` of ``n`` as a share with its 95% Wilson score interval (:func:`assay.stats.wilson_interval`).

        The bounds are pinned to hold the estimate: exactly 0 at ``k = 0`` and 1 at ``k = n``, where
        rounding would otherwise leave a residue such as 1e-18 beside them. ``details`` gains
        ``interval: "wilson"`` and ``k`` under ``count_key`` ("successes"; the data audit's findings and
        churn say "count", as their readers expect). ``n`` must be positive: a caller with no examples
        reports a skipped measurement instead.

        >>> m = Measurement.proportion("accuracy", "quality", 0, 20, higher_is_better=True, estimator="share")
        >>> (m.value, m.ci_low, round(m.ci_high, 4), m.details)
        (0.0, 0.0, 0.1611, {'interval': 'wilson', 'successes': 0})
        """
        k, n = int(k), int(n)
        low, high = wilson_interval(k, n)
        value = k / n
        return cls(
            name=name,
            family=family,
            value=value,
            ci_low=min(low, value),
            ci_high=max(high, value),
            n=n,
            higher_is_better=higher_is_better,
            estimator=estimator,
            details={"interval": "wilson", count_key: k, **(details or {})},
        )

    @classmethod
    def skipped(cls, name: str, family: str, reason: str) -> Measurement:
        return cls(name=name, family=family, value=None, status="skipped", details={"reason": reason})

    @classmethod
    def error(cls, name: str, family: str, message: str) -> Measurement:
        return cls(name=name, family=family, value=None, status="error", details={"message": message})


@dataclass(frozen=True)
class Comparison(_Record):
    """A paired comparison of one metric between a baseline and a candidate on the same examples.

    ``delta`` is candidate minus baseline, in the metric's unit.
    """

    name: str
    family: str
    baseline: float | None
    candidate: float | None
    delta: float | None
    delta_ci_low: float | None
    delta_ci_high: float | None
    p_value: float | None
    test: str
    n: int | None = None
    unit: str | None = None
    higher_is_better: bool | None = None
    estimator: str = ""
    status: Status = "ok"
    details: dict[str, Any] = field(default_factory=dict)

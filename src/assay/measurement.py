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
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Self

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

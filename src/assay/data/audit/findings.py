"""Findings as measurements: a count of flagged examples, its rate with a Wilson interval, example ids.

Every audit check reports through :func:`rate_finding`, so each finding reads the same way in the JSON
document, the HTML report and the CLI: ``value`` is the rate (flagged / n), ``ci_low``/``ci_high`` its 95%
Wilson interval, ``details["count"]`` the number flagged and ``details["examples"]`` a few ids (or pairs of
ids with their distance) to look at. Values themselves (an e-mail address, a card number) never appear.

A finding whose check cannot vouch for it keeps ``status: "ok"`` (its count was measured) and carries
``details["unreliable"]``: why it means little and what to do. The status stays within the schema's
ok/skipped/error because nothing was skipped and nothing failed; the marker is what every reader of
findings (the report, the CLI, the datasheet, the summary) checks through :func:`unreliable` before it
presents a finding as a fact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from assay.format import format_interval, format_value
from assay.measurement import Measurement

FAMILY = "data"
MAX_EXAMPLES = 12  # example ids or pairs kept in a finding's details


def rate_finding(
    name: str,
    count: int,
    n: int,
    estimator: str,
    *,
    check: str,
    examples: Sequence[Any] = (),
    higher_is_better: bool = False,
    **details: Any,
) -> Measurement:
    """``count`` of ``n`` examples flagged: the rate with its Wilson interval and up to 12 examples."""
    if n <= 0:
        return Measurement.skipped(name, FAMILY, "no examples to check")
    return Measurement.proportion(
        name,
        FAMILY,
        count,
        n,
        higher_is_better=higher_is_better,
        estimator=estimator,
        details={"check": check, "examples": list(examples)[:MAX_EXAMPLES], **details},
        count_key="count",
    )


def unreliable(m: Mapping[str, Any]) -> str | None:
    """Why a finding (a measurement dict) is not to be read as a fact, or None when it can be."""
    if m["status"] != "ok":
        return None
    reason = m["details"].get("unreliable")
    return str(reason) if reason else None


def format_finding(m: Mapping[str, Any], *, mark: bool = True) -> str:
    """A finding as the CLI, the report and the datasheet print it: rates in %, other values as they are,
    and (``mark``) ``(unreliable)`` after the value of a finding its check cannot vouch for."""
    if m["status"] != "ok":
        return f"{m['status']}: {m['details'].get('reason') or m['details'].get('message')}"
    if m["details"].get("interval") == "wilson":
        text = format_interval({**m, "name": "rate"})  # the name decides the scale: a rate reads in %
    else:
        text = format_value(m["value"], m["name"], m["unit"])
    return f"{text} (unreliable)" if mark and unreliable(m) else text


def value_finding(
    name: str,
    value: float,
    n: int,
    estimator: str,
    *,
    check: str,
    unit: str | None = None,
    higher_is_better: bool | None = None,
    ci: tuple[float, float] | None = None,
    **details: Any,
) -> Measurement:
    """A finding that is not a rate (an imbalance ratio, a p-value), optionally with an interval."""
    return Measurement(
        name=name,
        family=FAMILY,
        value=float(value),
        ci_low=None if ci is None else float(ci[0]),
        ci_high=None if ci is None else float(ci[1]),
        n=int(n),
        unit=unit,
        higher_is_better=higher_is_better,
        estimator=estimator,
        details={"check": check, **details},
    )

"""How numbers read in reports and tables: the unit, the scale and the digits chosen per metric.

One table decides, for a metric name, unit and family, how its value, its interval and a delta between two
models read, so the HTML report and the CLI print the same number the same way:

    accuracy      0.9123 -> "91.2% [90.6, 91.7] (n=10,000)"     delta -0.003 -> "−0.30 pp [−0.60, +0.05]"
    nll           0.2561 -> "0.2561 [0.2480, 0.2650]"
    latency (ms)  3.214  -> "3.21 ms [3.18, 3.25]"
    size (bytes)  1.8e6  -> "1.7 MiB"                           parameters (count) 1.2e6 -> "1.2 M"

A value and its interval share one scale (chosen from the value), so the bounds read in the same unit.

Beside the numbers, the words that keep statistics from being misread, shared by the report and the CLI:
a p-value's test named with its sidedness (:func:`describe_test`), a gate rule's badge (:func:`rule_badge`:
informational rules never get a gated rule's pass or FAIL), the note an estimate outside its own
interval carries (:func:`outside_interval_note`) and the calibration estimator a summary leads with
(:func:`headline_calibration`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

MINUS = "\u2212"  # typographic minus: a hyphen reads as a dash next to digits
DASH = "\u2014"  # shown where a number is absent (None, NaN)

# Words of a metric name (split on "_", the "[class]" suffix dropped) that make it a rate shown in %.
_PERCENT_WORDS = frozenset(
    {"accuracy", "f1", "recall", "precision", "ece", "mce", "rate", "churn", "coverage"}
)
# Proper scoring rules are small unitless numbers whose third and fourth decimals matter.
_FIXED4_WORDS = frozenset({"nll", "brier", "loss"})

_LABELS = {
    "accuracy": "Accuracy",
    "macro_f1": "Macro F1",
    "ece": "ECE",
    "ece_debiased": "ECE (debiased)",
    "adaptive_ece": "Adaptive ECE",
    "mce": "MCE",
    "nll": "NLL",
    "brier": "Brier score",
    "temperature": "Temperature",
    "churn": "Churn",
    "churn_correct_to_wrong": "Churn: correct \u2192 wrong",
    "churn_wrong_to_correct": "Churn: wrong \u2192 correct",
    "parameters": "Parameters",
    "size_on_disk": "Size on disk",
    "latency_p50_b1": "Latency p50, batch 1",
    "latency_p95_b1": "Latency p95, batch 1",
    "latency_p99_b1": "Latency p99, batch 1",
    "latency_p50_batch": "Latency p50, throughput batch",
    "throughput": "Throughput",
    "peak_memory": "Peak memory",
}
_ACRONYMS = frozenset(
    {"ece", "mce", "nll", "f1", "ood", "auroc", "fpr", "tpr", "pgd", "fgsm", "p50", "p95", "p99"}
)


@dataclass(frozen=True)
class Scale:
    """How one number reads: ``raw * factor`` with ``decimals`` digits, then ``suffix``."""

    factor: float
    decimals: int
    suffix: str
    grouping: bool = False  # thousands separators for large counts and rates

    def number(self, x: float, *, signed: bool = False) -> str:
        spec = f"{',' if self.grouping else ''}.{self.decimals}f"
        text = format(abs(x * self.factor), spec)
        # A value that rounds to zero carries no sign: "−0.00" would claim a direction it does not have.
        if float(text.replace(",", "")) == 0:
            return text
        sign = MINUS if x < 0 else ("+" if signed else "")
        return sign + text


def _finite(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def base_name(name: str) -> str:
    """``"recall[Coat]"`` -> ``"recall"``: the per-class suffix does not change how a number reads."""
    return name.split("[", 1)[0].lower()


def is_rate(name: str, unit: str | None = None, family: str | None = None) -> bool:
    """True for unitless rates in [0, 1] that read as percentages (and their deltas as points)."""
    if unit is not None:
        return unit == "%"  # a measurement that names a unit is never rescaled by its name
    if family == "churn":
        return True
    base = base_name(name)
    return bool(_PERCENT_WORDS & set(base.split("_")))


def _magnitude_decimals(m: float) -> int:
    """About three significant digits for a number of magnitude ``m``; at least two below 1.

    A 0.0012 ms latency delta must not print as "0.00 ms" next to an interval that excludes zero.
    """
    if m >= 100:
        return 0
    if m >= 10:
        return 1
    if m <= 0 or m >= 0.1:
        return 2
    return min(6, 1 - math.floor(math.log10(m)))


def scale_for(
    name: str, unit: str | None, magnitude: float, *, family: str | None = None, delta: bool = False
) -> Scale:
    """The scale of a metric's numbers; ``magnitude`` is the absolute value that picks prefixes and digits."""
    m = abs(magnitude)
    if is_rate(name, unit, family):
        factor = 1.0 if unit == "%" else 100.0
        # Deltas of rates read in percentage points; sub-percent values get one more digit.
        decimals = 2 if m * factor < (10 if delta else 1) else 1
        return Scale(factor, decimals, " pp" if delta else "%")
    if unit is None:
        base_words = set(base_name(name).split("_"))
        if _FIXED4_WORDS & base_words:
            return Scale(1.0, 4, "")
        return Scale(1.0, 3 if m < 10 else _magnitude_decimals(m), "", grouping=True)
    if unit == "bytes":
        for power, prefix in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
            if m >= 1024**power:
                return Scale(1024.0**-power, 1, f" {prefix}")
        return Scale(1.0, 0, " B")
    if unit == "count":
        for factor, prefix in ((1e-9, " G"), (1e-6, " M"), (1e-3, " k")):
            if m * factor >= 1:
                return Scale(factor, 1, prefix)
        return Scale(1.0, 0, "", grouping=True)
    if unit == "J":
        for factor, prefix in ((1e-6, " MJ"), (1e-3, " kJ")):
            if m * factor >= 1:
                return Scale(factor, 2, prefix)
        return Scale(1.0, 1, " J")
    if unit == "examples/s":
        return Scale(1.0, 0 if m >= 100 else 1, " examples/s", grouping=True)
    if unit == "MiB":
        return Scale(1.0, 1, " MiB", grouping=True)
    return Scale(1.0, _magnitude_decimals(m), f" {unit}", grouping=True)


def label(name: str) -> str:
    """Display name: ``"macro_f1"`` -> ``"Macro F1"``, ``"recall[Coat]"`` -> ``"Recall: Coat"``."""
    base, _, rest = name.partition("[")
    if base in _LABELS:
        text = _LABELS[base]
    else:
        words = [w.upper() if w in _ACRONYMS else w for w in base.split("_")]
        text = " ".join(words)
        text = text[:1].upper() + text[1:]
    return f"{text}: {rest.rstrip(']')}" if rest else text


def format_value(value: Any, name: str = "", unit: str | None = None, *, family: str | None = None) -> str:
    x = _finite(value)
    if x is None:
        return DASH
    scale = scale_for(name, unit, x, family=family)
    return scale.number(x) + scale.suffix


def format_bounds(ci_low: Any, ci_high: Any, scale: Scale, *, signed: bool = False) -> str:
    """``"[90.6, 91.7]"`` in the given scale, or ``""`` when either bound is absent."""
    lo, hi = _finite(ci_low), _finite(ci_high)
    if lo is None or hi is None:
        return ""
    return f"[{scale.number(lo, signed=signed)}, {scale.number(hi, signed=signed)}]"


def format_count(n: Any) -> str:
    x = _finite(n)
    return DASH if x is None else f"{round(x):,}"


def format_measurement_value(
    value: Any, ci_low: Any, ci_high: Any, name: str, unit: str | None = None
) -> str:
    """``"91.2% [90.6, 91.7]"`` from the parts of a measurement."""
    return format_interval({"name": name, "unit": unit, "value": value, "ci_low": ci_low, "ci_high": ci_high})


def format_interval(m: Mapping[str, Any], *, with_n: bool = False) -> str:
    """A measurement dict as ``"91.2% [90.6, 91.7]"``, plus ``" (n=10,000)"`` with ``with_n``."""
    x = _finite(m.get("value"))
    if x is None:
        return DASH
    scale = scale_for(m.get("name", ""), m.get("unit"), x, family=m.get("family"))
    text = scale.number(x) + scale.suffix
    bounds = format_bounds(m.get("ci_low"), m.get("ci_high"), scale)
    if bounds:
        text += " " + bounds
    if with_n and _finite(m.get("n")) is not None:
        text += f" (n={format_count(m['n'])})"
    return text


def delta_parts(
    delta: Any, ci_low: Any, ci_high: Any, name: str, unit: str | None = None, *, family: str | None = None
) -> tuple[str, str, str]:
    """A paired delta (candidate minus baseline) as ``("−0.30", " pp", "[−0.60, +0.05]")``, signed."""
    x = _finite(delta)
    if x is None:
        return DASH, "", ""
    spread = max(abs(x), abs(_finite(ci_low) or 0.0), abs(_finite(ci_high) or 0.0))
    scale = scale_for(name, unit, spread, family=family, delta=True)
    return scale.number(x, signed=True), scale.suffix, format_bounds(ci_low, ci_high, scale, signed=True)


def format_delta(
    delta: Any, ci_low: Any, ci_high: Any, name: str, unit: str | None = None, *, family: str | None = None
) -> str:
    value, suffix, bounds = delta_parts(delta, ci_low, ci_high, name, unit, family=family)
    return f"{value}{suffix} {bounds}" if bounds else value + suffix


def format_margin(margin: Any, name: str, unit: str | None = None) -> str:
    """A non-inferiority margin in the unit a delta of this metric reads in (points for rates)."""
    x = _finite(margin)
    if x is None:
        return DASH
    scale = scale_for(name, unit, x, delta=True)
    return scale.number(x) + scale.suffix


def format_p(p: Any) -> str:
    x = _finite(p)
    if x is None:
        return DASH
    if x < 0.001:
        return "<0.001"
    return f"{x:.3f}"


def trim(x: float, decimals: int) -> str:
    """``trim(4.0, 1)`` -> ``"4"``, ``trim(0.61, 1)`` -> ``"0.6"``: prose reads better without them."""
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def significant(x: float, digits: int = 3) -> str:
    """``x`` to ``digits`` significant figures in positional notation: ``significant(1.613e-5)`` ->
    ``"0.0000161"`` (a cost per 1,000 inferences is often a few millionths of a dollar)."""
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def format_usd(value: Any) -> str:
    """``"$0.0000161"``: US dollars to 3 significant figures."""
    x = _finite(value)
    return DASH if x is None else f"${significant(x)}"


def format_wh(value: Any) -> str:
    """``"0.0139 Wh"``: watt-hours to 3 significant figures."""
    x = _finite(value)
    return DASH if x is None else f"{significant(x)} Wh"


def format_duration(seconds: Any) -> str:
    x = _finite(seconds)
    if x is None:
        return DASH
    if x < 60:
        return f"{x:.1f} s"
    minutes, secs = divmod(round(x), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_timestamp(iso: Any) -> str:
    """``"2026-11-22T02:10:00+00:00"`` -> ``"2026-11-22 02:10 UTC"``; other text stays as it is."""
    try:
        moment = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    offset = moment.utcoffset()
    if offset is None:
        zone = ""
    elif offset == timedelta(0):
        zone = " UTC"
    else:
        zone = " " + moment.strftime("%z")
    return moment.strftime("%Y-%m-%d %H:%M") + zone


# SciPy's names for a test's alternative hypothesis, as the words a reader needs beside a p-value.
_SIDEDNESS = {"two-sided": "two-sided", "greater": "one-sided", "less": "one-sided"}


def sidedness(alternative: Any) -> str:
    """``"greater"``/``"less"`` -> ``"one-sided"``, ``"two-sided"`` -> ``"two-sided"``, else ``""``."""
    return _SIDEDNESS.get(str(alternative or ""), "")


def describe_test(test: Any, alternative: Any) -> str:
    """The test behind a p-value, named with its sidedness: ``("exact McNemar", "two-sided")`` ->
    ``"two-sided exact McNemar"``, ``("paired bootstrap", "greater")`` -> ``"one-sided paired bootstrap"``.

    ``alternative`` is SciPy's word for H1; without one the test's name stands alone.
    """
    name = str(test or "")
    side = sidedness(alternative)
    return f"{side} {name}" if name and side else name


def rule_badge(rule: Mapping[str, Any]) -> tuple[str, str]:
    """A gate rule's outcome as ``(text, kind)``; kind is ``"pass"``, ``"fail"``, ``"skipped"`` or ``"info"``.

    ``rule`` is a rule of a verdict's JSON (:meth:`assay.gate.RuleResult.to_dict`). Status comes before
    outcome: a skipped optional rule does not block, a skipped required rule or one that could not be
    computed does. An informational rule (``gated = false``) never decides, so it never shows a gated
    rule's pass or FAIL: it says what it would have done, under its own badge.
    """
    status, passed = rule.get("status", "ok"), bool(rule.get("passed"))
    if not rule.get("gated", True):
        outcome = status if status in ("skipped", "error") else "would pass" if passed else "would fail"
        return f"info: {outcome}", "info"
    if status == "skipped":
        return ("skipped", "skipped") if passed else ("SKIPPED: blocks the gate", "fail")
    if status == "error":
        return "ERROR: blocks the gate", "fail"
    return ("pass", "pass") if passed else ("FAIL", "fail")


OUTSIDE_INTERVAL = "estimate outside its 95% interval"


def outside_interval_note(value: Any, ci_low: Any, ci_high: Any, details: Mapping[str, Any] | None) -> str:
    """The note an estimate outside its own interval shows beside it (with ``details["note"]``, the
    measurement's reason, when it has one), or ``""`` when it lies inside or either is absent.

    A percentile bootstrap of a biased or bounded statistic (a binned calibration error, a maximum) can
    sit beside its estimate; the reader must see that next to the number, not only in the JSON.
    """
    x, lo, hi = _finite(value), _finite(ci_low), _finite(ci_high)
    if x is None or lo is None or hi is None:
        return ""
    # A bound equal to the estimate up to float rounding (an exact delta, a degenerate bootstrap) is inside.
    slack = 1e-12 * max(abs(x), abs(lo), abs(hi))
    if lo - slack <= x <= hi + slack:
        return ""
    note = (details or {}).get("note")
    return f"{OUTSIDE_INTERVAL} \u2014 {note}" if note else OUTSIDE_INTERVAL


# The calibration figure a summary leads with, best first: the debiased ECE (Kumar et al. 2019), whose
# interval covers a calibrated model's 0, then the binned plug-in ECE, biased upwards at finite n.
CALIBRATION_HEADLINE = ("ece_debiased", "ece")


def headline_calibration(measurements: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The measured calibration error a summary leads with (:data:`CALIBRATION_HEADLINE` order), or None."""
    measured = {
        m.get("name"): m
        for m in measurements
        if m.get("status", "ok") == "ok" and _finite(m.get("value")) is not None
    }
    return next((measured[name] for name in CALIBRATION_HEADLINE if name in measured), None)


def forced_inputs(document: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """``(model ref, what did not fit)`` for each model of a run document that ran on data outside its
    input contract (``--force-data``; the document's ``input_contract``), in the document's order."""
    models = (document.get("input_contract") or {}).get("models") or {}
    return [
        (str(ref), [str(d) for d in m["differences"]]) for ref, m in models.items() if m.get("differences")
    ]

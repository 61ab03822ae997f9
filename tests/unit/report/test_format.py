"""Number formatting shared by the HTML report and the CLI tables."""

from __future__ import annotations

import pytest

from assay.format import (
    describe_test,
    format_delta,
    format_duration,
    format_interval,
    format_margin,
    format_p,
    format_timestamp,
    format_value,
    headline_calibration,
    is_rate,
    label,
    outside_interval_note,
    rule_badge,
)


def m(
    name: str, value: float | None, lo: float | None = None, hi: float | None = None, **kw: object
) -> dict[str, object]:
    return {"name": name, "value": value, "ci_low": lo, "ci_high": hi, **kw}


@pytest.mark.parametrize(
    ("measurement", "with_n", "expected"),
    [
        (m("accuracy", 0.9123, 0.9061, 0.9172, n=10_000), True, "91.2% [90.6, 91.7] (n=10,000)"),
        (m("accuracy", 0.9123, 0.9061, 0.9172, n=10_000), False, "91.2% [90.6, 91.7]"),
        (m("recall[Coat]", 0.86, 0.838, 0.88, n=1000), True, "86.0% [83.8, 88.0] (n=1,000)"),
        (m("ece", 0.031, 0.026, 0.037), False, "3.1% [2.6, 3.7]"),
        (m("ece", 0.004, 0.002, 0.006), False, "0.40% [0.20, 0.60]"),
        (m("churn", 0.041, 0.037, 0.045, family="churn"), False, "4.1% [3.7, 4.5]"),
        (m("nll", 0.25612, 0.248, 0.265), False, "0.2561 [0.2480, 0.2650]"),
        (m("latency_p50_b1", 3.214, 3.18, 3.25, unit="ms"), False, "3.21 ms [3.18, 3.25]"),
        (
            m("throughput", 23_456.7, 22_900, 23_800, unit="examples/s"),
            False,
            "23,457 examples/s [22,900, 23,800]",
        ),
        (m("size_on_disk", 4_800_512, unit="bytes"), False, "4.6 MiB"),
        (m("parameters", 1_199_882, unit="count"), False, "1.2 M"),
        (m("parameters", 850, unit="count"), False, "850"),
        (m("accuracy", None), True, "\u2014"),
        (m("accuracy", float("nan")), True, "\u2014"),
    ],
)
def test_format_interval(measurement: dict[str, object], with_n: bool, expected: str) -> None:
    assert format_interval(measurement, with_n=with_n) == expected


def test_deltas_of_rates_read_in_points_with_signs() -> None:
    assert format_delta(-0.003, -0.006, 0.0005, "accuracy") == "\u22120.30 pp [\u22120.60, +0.05]"
    assert format_delta(0.02, 0.01, 0.03, "macro_f1") == "+2.00 pp [+1.00, +3.00]"
    assert format_delta(-0.12, -0.15, -0.09, "accuracy") == "\u221212.0 pp [\u221215.0, \u22129.0]"
    assert (
        format_delta(-0.436, -0.52, -0.35, "latency_p50_b1", "ms") == "\u22120.44 ms [\u22120.52, \u22120.35]"
    )
    # A bound that rounds to zero carries no sign.
    assert format_delta(0.0, -0.00001, 0.0, "accuracy") == "0.00 pp [0.00, 0.00]"
    assert format_delta(None, None, None, "accuracy") == "\u2014"


def test_units_win_over_names() -> None:
    # "rate" in the name would make it a percentage, but the measurement names its unit.
    assert format_value(120.0, "sample_rate", "examples/s") == "120 examples/s"
    assert is_rate("error_rate") and not is_rate("error_rate", "ms")


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (512, "bytes", "512 B"),
        (2048, "bytes", "2.0 KiB"),
        (3 * 1024**3, "bytes", "3.0 GiB"),
        (4210.0, "J", "4.21 kJ"),
        (12_345, "count", "12.3 k"),
        (41.3, "MiB", "41.3 MiB"),
        (1.5, "s", "1.50 s"),
    ],
)
def test_units(value: float, unit: str, expected: str) -> None:
    assert format_value(value, "x", unit) == expected


def test_p_values_margins_durations_labels_and_timestamps() -> None:
    assert [format_p(p) for p in (0.0001, 0.01, 0.5, None)] == ["<0.001", "0.010", "0.500", "\u2014"]
    assert format_margin(0.005, "accuracy") == "0.50 pp"
    assert [format_duration(s) for s in (12.34, 134.5, 7322)] == ["12.3 s", "2 min 14 s", "2 h 02 min"]
    assert label("macro_f1") == "Macro F1"
    assert label("recall[T-shirt/top]") == "Recall: T-shirt/top"
    assert label("adversarial_accuracy_eps0.1") == "Adversarial accuracy eps0.1"
    assert format_timestamp("2026-11-22T02:10:00+00:00") == "2026-11-22 02:10 UTC"
    assert format_timestamp("2026-11-22T02:10:00+01:00") == "2026-11-22 02:10 +0100"
    assert format_timestamp("yesterday") == "yesterday"


def test_tests_are_named_with_their_sidedness() -> None:
    assert describe_test("exact McNemar", "two-sided") == "two-sided exact McNemar"
    assert describe_test("paired bootstrap", "greater") == "one-sided paired bootstrap"
    assert describe_test("bootstrap (unpaired)", "less") == "one-sided bootstrap (unpaired)"
    assert describe_test("consistency resampling", None) == "consistency resampling"  # no side is guessed
    assert describe_test("", "greater") == "" and describe_test(None, None) == ""


def rule(status: str = "ok", passed: bool = True, gated: bool = True) -> dict[str, object]:
    return {
        "metric": "accuracy",
        "kind": "non_inferiority",
        "status": status,
        "passed": passed,
        "gated": gated,
    }


@pytest.mark.parametrize(
    ("result", "badge"),
    [
        (rule(), ("pass", "pass")),
        (rule(passed=False), ("FAIL", "fail")),
        (rule("skipped", passed=True), ("skipped", "skipped")),  # optional: does not block
        (rule("skipped", passed=False), ("SKIPPED: blocks the gate", "fail")),
        (rule("error", passed=False), ("ERROR: blocks the gate", "fail")),
        (rule(gated=False), ("info: would pass", "info")),
        (rule(passed=False, gated=False), ("info: would fail", "info")),
        (rule("skipped", passed=True, gated=False), ("info: skipped", "info")),
        (rule("error", passed=True, gated=False), ("info: error", "info")),
    ],
)
def test_rule_badges_keep_informational_rules_apart(
    result: dict[str, object], badge: tuple[str, str]
) -> None:
    assert rule_badge(result) == badge


def test_an_estimate_outside_its_interval_gets_a_note() -> None:
    assert outside_interval_note(0.225, 0.238, 0.66, {}) == "estimate outside its 95% interval"
    assert outside_interval_note(0.7, 0.238, 0.66, {"note": "biased"}) == (
        "estimate outside its 95% interval \u2014 biased"
    )
    assert outside_interval_note(0.3, 0.238, 0.66, {"note": "biased"}) == ""  # inside: nothing to say
    assert outside_interval_note(0.1, 0.1, 0.1, None) == ""  # an exact delta is its own interval
    assert outside_interval_note(0.3 + 1e-17, 0.1, 0.3, None) == ""  # float rounding is not "outside"
    assert outside_interval_note(0.5, None, 0.6, None) == "" and outside_interval_note(None, 0, 1, None) == ""


def test_the_calibration_headline_is_the_debiased_ece_when_measured() -> None:
    ece = m("ece", 0.031, 0.026, 0.037, status="ok")
    debiased = m("ece_debiased", 0.012, 0.004, 0.021, status="ok")
    failed = m("ece_debiased", None, status="error")
    assert headline_calibration([ece, debiased]) is debiased
    assert headline_calibration([ece, failed]) is ece
    assert headline_calibration([m("nll", 0.2)]) is None

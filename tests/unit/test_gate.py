"""Policy files, rule decisions, Holm, skipped rules and the verdict."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from assay.catalogue import EFFICIENCY_METRICS
from assay.compare import PairedResult
from assay.errors import ConfigError, DataError
from assay.gate import DEFAULT_POLICY_TOML, Policy, Rule, evaluate_policy, judge
from assay.measurement import Comparison, Measurement
from assay.metrics import METRICS, MetricSpec
from assay.metrics.efficiency import checked_timings
from assay.stats import mde_paired_accuracy
from tests.unit.test_compare import baseline_case, flip, planted_outputs

GOOD_RULES = """
[[rules]]
metric = "accuracy"
kind = "non_inferiority"
margin = 0.005
"""


def load(text: str) -> Policy:
    return Policy.from_toml_text(text, source="policy.toml")


# --- policy files -------------------------------------------------------------------------------------


def test_malformed_toml_names_file_line_and_column() -> None:
    with pytest.raises(ConfigError, match=r"^policy\.toml: not valid TOML: .*line 3, column \d+"):
        load('[policy]\nname = "x"\nalpha = \n')


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            GOOD_RULES + '[[rules]]\nmetric = "ecee"\nkind = "at_most"\nthreshold = 0.05\n',
            "policy.toml: rule 2 ('ecee'): unknown metric 'ecee' (did you mean 'ece'?). "
            "Known: accuracy, adaptive_ece, ",
        ),
        (
            '[[rules]]\nmetric = "accuracy"\nkind = "non_inferiority"\nmargin = -0.5\n',
            "policy.toml: rule 1 ('accuracy'): 'margin' must be >= 0. Got -0.5.",
        ),
        (
            '[[rules]]\nmetric = "accuracy"\nkind = "better"\n',
            "policy.toml: rule 1 ('accuracy'): unknown kind 'better'. "
            "Known: non_inferiority, improvement, at_most, at_least.",
        ),
        (
            '[[rules]]\nmetric = "accuracy"\nkind = "non_inferiority"\n',
            "policy.toml: rule 1 ('accuracy'): kind 'non_inferiority' needs 'margin'.",
        ),
        (
            '[[rules]]\nmetric = "ece"\nkind = "at_most"\nmargin = 0.01\nthreshold = 0.05\n',
            "policy.toml: rule 1 ('ece'): 'margin' does not apply to kind 'at_most' (it takes 'threshold').",
        ),
        (
            '[[rules]]\nmetric = "ece"\nkind = "improvement"\nmin_effect = -1.0\n',
            "policy.toml: rule 1 ('ece'): 'min_effect' must be >= 0. Got -1.0.",
        ),
        (
            '[[rules]]\nmetric = "ece"\nkind = "at_most"\nthreshold = "0.05"\n',
            "policy.toml: rule 1 ('ece'): 'threshold' must be a number. Got '0.05'.",
        ),
        (
            '[[rules]]\nmetric = "ece"\nkind = "at_most"\nthreshold = nan\n',
            "policy.toml: rule 1 ('ece'): 'threshold' must be a finite number. Got nan.",
        ),
        (
            '[[rules]]\nmetric = "ece"\nkind = "at_most"\nthreshold = 0.05\nmarginn = 1.0\n',
            "policy.toml: rule 1 ('ece'): unknown key 'marginn'.",
        ),
        ('[[rules]]\nkind = "at_most"\nthreshold = 0.05\n', "policy.toml: rule 1: missing key 'metric'."),
        (
            "[policy]\nalpha = 0.7\n" + GOOD_RULES,
            "policy.toml: [policy]: 'alpha' must be less than 0.5. Got 0.7.",
        ),
        (
            "[policy]\nn_bootstrap = 10\n" + GOOD_RULES,
            "policy.toml: [policy]: 'n_bootstrap' must be greater than or equal to 100. Got 10.",
        ),
        (
            "[policy]\nseed = 1.5\n" + GOOD_RULES,
            "policy.toml: [policy]: 'seed' must be a whole number. Got 1.5.",
        ),
        ('[policy]\nname = "empty"\n', "policy.toml: file: missing key 'rules'."),
        ("rules = []\n", "policy.toml: file: no [[rules]]: a policy needs at least one rule."),
        ("[gate]\nx = 1\n" + GOOD_RULES, "policy.toml: file: unknown key 'gate'."),
        ("policy = 3\n" + GOOD_RULES, "policy.toml: file: 'policy' must be a table. Got 3."),
        ("rules = [1]\n", "policy.toml: rule 1: it must be a table. Got 1."),
    ],
)
def test_invalid_policies_give_one_line_config_errors(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(body)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_policy_file_errors_name_the_path(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text('[[rules]]\nmetric = "accuracy"\nkind = "at_least"\n')
    with pytest.raises(
        ConfigError, match=rf"^{path}: rule 1 \('accuracy'\): kind 'at_least' needs 'threshold'"
    ):
        Policy.from_toml(path)
    with pytest.raises(ConfigError, match="cannot read"):
        Policy.from_toml(tmp_path / "missing.toml")


def test_efficiency_and_extra_metric_names_are_accepted() -> None:
    for name in EFFICIENCY_METRICS:
        load(f'[[rules]]\nmetric = "{name}"\nkind = "improvement"\n')
    text = '[[rules]]\nmetric = "auroc_ood"\nkind = "at_least"\nthreshold = 0.9\n'
    with pytest.raises(ConfigError, match="unknown metric 'auroc_ood'"):
        load(text)
    assert Policy.from_toml_text(text, extra_metrics=["auroc_ood"]).rules[0].metric == "auroc_ood"


def test_default_policy_round_trips_and_is_the_documented_text() -> None:
    policy = Policy.default()
    assert policy == load(DEFAULT_POLICY_TOML)
    assert Policy.from_toml_text(policy.to_toml()) == policy
    assert Policy.from_dict(policy.to_dict()) == policy
    assert Policy.from_dict(tomllib.loads(policy.to_toml())) == policy
    assert (policy.name, policy.alpha, policy.n_bootstrap, policy.seed) == ("default", 0.05, 1000, 0)
    gated = {r.metric: r for r in policy.rules if r.gated}
    assert gated == {
        "accuracy": Rule("accuracy", "non_inferiority", margin=0.005),
        "ece": Rule("ece", "non_inferiority", margin=0.01),
        "nll": Rule("nll", "non_inferiority", margin=0.02),
    }


# --- decisions on planted evidence ---------------------------------------------------------------------


def planted_result(name: str, higher_is_better: bool, deltas: np.ndarray) -> PairedResult:
    comparison = Comparison(
        name=name,
        family="quality",
        baseline=0.5,
        candidate=0.5 + float(np.median(deltas)),
        delta=float(np.median(deltas)),
        delta_ci_low=None,
        delta_ci_high=None,
        p_value=None,
        test="paired bootstrap",
        higher_is_better=higher_is_better,
    )
    return PairedResult(comparison, deltas, np.full(len(deltas), 0.5), 0.5 + deltas)


def with_tail(n_bad: int, bad: float, n_boot: int = 999) -> np.ndarray:
    """``n_boot`` replicates, ``n_bad`` of them ``bad``, the rest 0: one-sided p = (1 + n_bad) / 1000."""
    return np.r_[np.full(n_bad, bad), np.zeros(n_boot - n_bad)]


def two_rule_policy(*, nll_gated: bool = True) -> Policy:
    return Policy(
        "holm",
        alpha=0.05,
        n_bootstrap=999,
        seed=0,
        rules=(
            Rule("accuracy", "non_inferiority", margin=0.005),
            Rule("nll", "non_inferiority", margin=0.02, gated=nll_gated),
        ),
    )


PAIRED_03_04 = {
    "accuracy": planted_result("accuracy", True, with_tail(29, -0.01)),  # p = 0.03
    "nll": planted_result("nll", False, with_tail(39, +0.03)),  # p = 0.04
}


def test_holm_turns_two_unadjusted_passes_into_failures() -> None:
    accuracy, nll = judge(two_rule_policy(), PAIRED_03_04)
    assert (accuracy.p_value, nll.p_value) == pytest.approx((0.03, 0.04))
    assert (accuracy.p_adjusted, nll.p_adjusted) == pytest.approx((0.06, 0.06))
    assert not accuracy.passed and not nll.passed  # each p < 0.05, but Holm's first step (0.03 * 2) fails
    assert "→ fail" in accuracy.message
    assert "Holm's step-down stopped" in nll.message  # its own step (0.04 < 0.05) would have passed
    assert accuracy.bound_level == pytest.approx(0.025) and nll.bound_level == pytest.approx(0.05)


def test_without_a_second_gated_rule_the_same_evidence_passes() -> None:
    accuracy, nll = judge(two_rule_policy(nll_gated=False), PAIRED_03_04)
    assert accuracy.passed and accuracy.p_adjusted == pytest.approx(0.03)
    assert nll.p_adjusted is None and nll.passed and "informational" in nll.message


def test_holm_with_three_rules_passes_only_the_strongest() -> None:
    policy = Policy(
        "three",
        alpha=0.05,
        n_bootstrap=999,
        seed=0,
        rules=(
            Rule("accuracy", "non_inferiority", margin=0.005),
            Rule("nll", "non_inferiority", margin=0.02),
            Rule("ece", "non_inferiority", margin=0.01),
        ),
    )
    paired = {**PAIRED_03_04, "ece": planted_result("ece", False, with_tail(0, 0.0))}  # p = 0.001
    accuracy, nll, ece = judge(policy, paired)
    assert [ece.passed, accuracy.passed, nll.passed] == [True, False, False]
    assert ece.p_adjusted == pytest.approx(0.003)


def test_bound_in_the_message_agrees_with_the_decision() -> None:
    accuracy, nll = judge(two_rule_policy(), PAIRED_03_04)
    assert accuracy.bound is not None and nll.bound is not None
    assert accuracy.bound <= -0.005 and "<= −0.50 pp (margin)" in accuracy.message  # fails at level 0.025
    assert nll.bound < 0.02 and "< +0.0200 (margin)" in nll.message  # passes its own step at 0.05


# --- evaluate_policy on planted outputs ----------------------------------------------------------------


def test_identical_candidate_passes_the_default_policy() -> None:
    labels, preds = baseline_case(3000)
    base = planted_outputs(labels, preds)
    verdict = evaluate_policy(Policy.default(), base, base)
    assert verdict.passed and verdict.summary().startswith("PASS: 3 of 3 gated rule(s) passed")
    assert {c.name for c in verdict.comparisons} == set(METRICS.names())
    assert [m.name for m in verdict.churn] == ["churn", "churn_correct_to_wrong", "churn_wrong_to_correct"]
    assert verdict.mde["discordance"] == 0.0 and verdict.mde["n"] == 3000
    latency = next(r for r in verdict.rules if r.metric == "latency_p50_b1")
    assert latency.status == "skipped" and latency.passed
    d = verdict.to_dict()
    assert d["mde"]["accuracy"] is None  # no discordant pairs: NaN, stored as null
    json.dumps(d)
    assert d["policy"]["name"] == "default" and d["rules"][0]["gated"] is True


def test_worse_candidate_fails_the_default_policy_with_reasons() -> None:
    labels, preds = baseline_case(3000)
    base = planted_outputs(labels, preds)
    cand = planted_outputs(labels, flip(labels, preds, to_wrong=90, to_right=0))  # -3 accuracy points
    verdict = evaluate_policy(Policy.default(), base, cand)
    assert not verdict.passed
    accuracy = verdict.rules[0]
    assert accuracy.metric == "accuracy" and not accuracy.passed and accuracy.delta == pytest.approx(-0.03)
    assert "FAIL" in verdict.summary() and "accuracy (non_inferiority)" in verdict.summary()
    assert verdict.mde["discordance"] == pytest.approx(0.03)
    assert verdict.mde["accuracy"] == pytest.approx(mde_paired_accuracy(3000, 0.03))


def test_accuracy_improvement_uses_one_sided_exact_mcnemar() -> None:
    labels, preds = baseline_case(3000)
    base = planted_outputs(labels, preds)
    cand = planted_outputs(labels, flip(labels, preds, to_wrong=20, to_right=40))
    policy = Policy("up", 0.05, 500, 0, (Rule("accuracy", "improvement"),))
    (rule,) = evaluate_policy(policy, base, cand).rules
    assert rule.test == "exact McNemar" and rule.alternative == "greater"
    assert "(one-sided exact McNemar p = " in rule.message
    assert rule.p_value == pytest.approx(binomtest(40, 60, 0.5, alternative="greater").pvalue)
    assert rule.p_value is not None and rule.p_value < 0.01 and rule.passed


def test_at_most_and_at_least_judge_the_candidate_value() -> None:
    labels, preds = baseline_case(2000)
    base = planted_outputs(labels, preds)
    policy = Policy(
        "abs",
        0.05,
        500,
        0,
        (Rule("ece", "at_most", threshold=0.5), Rule("accuracy", "at_least", threshold=0.95, gated=False)),
    )
    ece, accuracy = evaluate_policy(policy, base, base).rules
    assert ece.passed and ece.candidate_ci_high is not None and ece.candidate_ci_high < 0.5
    assert not accuracy.passed and accuracy.candidate == pytest.approx(np.mean(labels == preds))
    strict = Policy("strict", 0.05, 500, 0, (Rule("ece", "at_most", threshold=0.001),))
    assert not evaluate_policy(strict, base, base).passed


def latency(name: str, samples: np.ndarray) -> Measurement:
    return Measurement(
        name,
        "efficiency",
        float(np.median(samples)),
        unit="ms",
        higher_is_better=False,
        details={"samples": samples.tolist(), "statistic": "p50"},
    )


def test_efficiency_rules_use_the_raw_timings() -> None:
    labels, preds = baseline_case(500)
    base = planted_outputs(labels, preds)
    timings = np.random.default_rng(0).gamma(20, 0.1, 100)
    size = lambda v: Measurement("size_on_disk", "efficiency", v, unit="bytes", higher_is_better=False)  # noqa: E731
    policy = Policy(
        "eff",
        0.05,
        500,
        0,
        (
            Rule("latency_p50_b1", "improvement"),
            Rule("latency_p95_b1", "at_most", threshold=10.0),
            Rule("size_on_disk", "improvement"),
        ),
    )
    verdict = evaluate_policy(
        policy,
        base,
        base,
        baseline_efficiency=[latency("latency_p50_b1", timings), size(4e6)],
        candidate_efficiency=[
            latency("latency_p50_b1", 0.7 * timings),
            latency("latency_p95_b1", timings),
            size(1e6),
        ],
    )
    assert verdict.passed, [r.message for r in verdict.rules]
    faster, p95, smaller = verdict.rules
    assert faster.delta is not None and faster.delta < 0 and faster.test == "bootstrap (unpaired)"
    assert p95.baseline is None and p95.candidate_ci_high is not None and p95.candidate_ci_high < 10
    assert smaller.delta == -3e6
    slower = evaluate_policy(
        Policy("eff", 0.05, 500, 0, (Rule("latency_p50_b1", "improvement"),)),
        base,
        base,
        baseline_efficiency=[latency("latency_p50_b1", timings)],
        candidate_efficiency=[latency("latency_p50_b1", 1.2 * timings)],
    )
    assert not slower.passed


def checked_latency(name: str, samples: np.ndarray, q: float = 50) -> Measurement:
    """A latency measurement with the timing flags assay.metrics.efficiency gives these samples."""
    measured = latency(name, samples)
    checked = checked_timings(samples, q, None, [])
    return replace(measured, details={**measured.details, **checked})


def test_a_rule_judged_on_flagged_timings_says_so() -> None:
    labels, preds = baseline_case(500)
    base = planted_outputs(labels, preds)
    rng = np.random.default_rng(0)
    quiet = rng.gamma(400, 0.01, 100)  # 4 ms, 5% spread
    slow_start = np.r_[quiet[:50] * 40, quiet[50:]]  # the first half of the baseline's run 40x slower
    policy = Policy(
        "eff",
        0.05,
        500,
        0,
        (Rule("latency_p50_b1", "improvement"), Rule("latency_p95_b1", "at_most", threshold=10.0)),
    )
    verdict = evaluate_policy(
        policy,
        base,
        base,
        baseline_efficiency=[checked_latency("latency_p50_b1", slow_start)],
        candidate_efficiency=[
            checked_latency("latency_p50_b1", quiet),
            checked_latency("latency_p95_b1", quiet, 95),
        ],
    )
    faster, p95 = verdict.rules
    assert list(faster.flags) == ["baseline"] and "blocks of timings disagree" in faster.flags["baseline"][0]
    assert "; judged on flagged timings (baseline: the medians of 5 consecutive blocks" in faster.message
    comparison = next(c for c in verdict.comparisons if c.name == "latency_p50_b1")
    assert comparison.details["flags"] == faster.flags  # the JSON's comparison carries them too
    assert p95.flags == {} and "flagged" not in p95.message  # quiet timings: nothing to say


def test_p_values_name_their_test_and_sidedness() -> None:
    labels, preds = baseline_case(2000)
    base = planted_outputs(labels, preds)
    cand = planted_outputs(labels, flip(labels, preds, to_wrong=10, to_right=10))
    verdict = evaluate_policy(Policy.default(), base, cand)
    accuracy = verdict.rules[0]
    assert (accuracy.test, accuracy.alternative) == ("paired bootstrap", "greater")
    assert f"(one-sided paired bootstrap p = {accuracy.p_value:.3g}, Holm-adjusted " in accuracy.message
    nll = next(r for r in verdict.rules if r.metric == "nll")
    assert nll.alternative == "less"  # lower is better: H1 is a delta below the margin
    compared = next(c for c in verdict.comparisons if c.name == "accuracy")
    assert (compared.test, compared.details["alternative"]) == ("exact McNemar", "two-sided")
    assert "one-sided rules, Holm at family-wise alpha 0.05" in verdict.summary()
    assert verdict.to_dict()["rules"][0]["alternative"] == "greater"


@pytest.mark.parametrize(
    ("rule", "passes"),
    [
        (Rule("latency_p50_b1", "improvement"), False),
        (Rule("latency_p50_b1", "improvement", required=False), True),
        (Rule("latency_p50_b1", "improvement", gated=False), True),
    ],
)
def test_a_rule_without_its_measurement_is_skipped(rule: Rule, passes: bool) -> None:
    labels, preds = baseline_case(500)
    base = planted_outputs(labels, preds)
    policy = Policy("skip", 0.05, 200, 0, (Rule("accuracy", "non_inferiority", margin=0.01), rule))
    verdict = evaluate_policy(policy, base, base)
    skipped = verdict.rules[1]
    assert skipped.status == "skipped" and "no 'latency_p50_b1' measurement" in skipped.message
    assert verdict.passed is passes
    if not passes:
        assert "required = false" in skipped.message and "latency_p50_b1 (skipped)" in verdict.summary()


def test_a_failing_metric_is_an_error_rule_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(labels: np.ndarray, probs: np.ndarray) -> float:
        raise RuntimeError("plugin exploded")

    monkeypatch.setitem(METRICS._items, "boom", MetricSpec("boom", "quality", boom, True, "always fails"))
    labels, preds = baseline_case(300)
    base = planted_outputs(labels, preds)
    policy = Policy("err", 0.05, 200, 0, (Rule("boom", "at_least", threshold=0.5),))
    verdict = evaluate_policy(policy, base, base)
    assert (
        not verdict.passed
        and verdict.rules[0].status == "error"
        and "plugin exploded" in verdict.rules[0].message
    )
    assert next(c for c in verdict.comparisons if c.name == "boom").status == "error"


def test_outputs_on_different_examples_raise() -> None:
    labels, preds = baseline_case(200)
    base = planted_outputs(labels, preds)
    other = planted_outputs(labels[:150], preds[:150])
    with pytest.raises(DataError):
        evaluate_policy(Policy.default(), base, other)


@pytest.mark.parametrize(("to_wrong", "to_right", "passes"), [(0, 150, True), (150, 0, False)])
def test_improvement_on_a_lower_is_better_proportion_uses_the_right_side(
    monkeypatch: pytest.MonkeyPatch, to_wrong: int, to_right: int, passes: bool
) -> None:
    """An error-rate plugin (0/1 per example, lower is better): fewer errors is the improvement."""

    def errors(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
        return (probs.argmax(axis=1) != labels).astype(float)

    spec = MetricSpec(
        "error_rate", "quality", lambda y, p: float(errors(y, p).mean()), False, "share wrong",
        interval="wilson", per_example=errors,
    )  # fmt: skip
    monkeypatch.setitem(METRICS._items, "error_rate", spec)
    labels, preds = baseline_case(3000)
    base = planted_outputs(labels, preds)
    candidate = planted_outputs(labels, flip(labels, preds, to_wrong=to_wrong, to_right=to_right))
    policy = Policy("plugin", 0.05, 500, 0, (Rule("error_rate", "improvement"),))
    rule = evaluate_policy(policy, base, candidate).rules[0]
    assert rule.passed is passes
    assert "McNemar" in rule.message or rule.p_value is not None
    assert (rule.p_value < 0.05) is passes  # type: ignore[operator]


def test_a_policy_with_no_gated_rule_is_refused() -> None:
    text = '[[rules]]\nmetric = "accuracy"\nkind = "non_inferiority"\nmargin = 0.01\ngated = false\n'
    with pytest.raises(ConfigError, match="no rule is gated"):
        Policy.from_toml_text(text, source="p.toml")

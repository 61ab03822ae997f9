"""The contract every rule kind in assay.gate.RULE_KINDS keeps, run over every registered name.

A kind validates a rule that gives its parameter and refuses, with a message naming the key, one that
gives another kind's parameter, a negative one where it must be >= 0, or none where it has no default.
Judged on planted evidence, a candidate far on H1's side of the kind's own boundary passes and one far on
H0's side fails, in both directions of the metric.
"""

from __future__ import annotations

import numpy as np
import pytest

from assay.compare import PairedResult
from assay.errors import ConfigError
from assay.gate import PARAMETERS, RULE_KINDS, Policy, judge
from assay.measurement import Comparison

NAMES = RULE_KINDS.names()


def _policy(kind: str, **parameters: float) -> Policy:
    keys = "".join(f"{key} = {value!r}\n" for key, value in parameters.items())
    return Policy.from_toml_text(f'[[rules]]\nmetric = "nll"\nkind = "{kind}"\n{keys}', source="p.toml")


@pytest.mark.parametrize("name", NAMES)
def test_a_kind_validates_its_parameter_and_refuses_others(name: str) -> None:
    kind = RULE_KINDS.get(name)
    assert kind.parameter in PARAMETERS and kind.label
    rule = _policy(name, **{kind.parameter: 0.5}).rules[0]
    assert rule.kind == name and getattr(rule, kind.parameter) == 0.5
    for other in PARAMETERS:
        if other != kind.parameter:
            with pytest.raises(ConfigError, match=rf"'{other}' does not apply to kind '{name}'"):
                _policy(name, **{kind.parameter: 0.5, other: 0.5})
    if kind.nonnegative:
        with pytest.raises(ConfigError, match=rf"'{kind.parameter}' must be >= 0. Got -0.5"):
            _policy(name, **{kind.parameter: -0.5})
    if kind.default is None:
        with pytest.raises(ConfigError, match=rf"kind '{name}' needs '{kind.parameter}'"):
            _policy(name)
    else:
        assert getattr(_policy(name).rules[0], kind.parameter) is None  # the default applies when judged


def test_an_unknown_kind_lists_the_registered_ones() -> None:
    with pytest.raises(
        ConfigError, match="unknown kind 'better'. Known: " + ", ".join(RULE_KINDS.in_order())
    ):
        _policy("better", margin=0.1)


def _paired(delta: float, baseline: float, higher_is_better: bool) -> PairedResult:
    """A comparison whose replicates sit tightly around ``delta`` (candidate = baseline + delta)."""
    noise = np.random.default_rng(0).normal(0.0, 0.001, 400)
    comparison = Comparison(
        name="nll", family="quality", baseline=baseline, candidate=baseline + delta, delta=delta,
        delta_ci_low=delta - 0.002, delta_ci_high=delta + 0.002, p_value=None, test="paired bootstrap",
        higher_is_better=higher_is_better,
    )  # fmt: skip
    return PairedResult(
        comparison,
        delta + noise,
        np.full(400, baseline),
        baseline + delta + noise,
        resampling="paired bootstrap",
    )


@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_a_kind_passes_far_on_h1s_side_and_fails_far_on_h0s(name: str, higher_is_better: bool) -> None:
    kind = RULE_KINDS.get(name)
    value = 0.5
    null, alternative = kind.hypothesis(value, higher_is_better)
    assert alternative in ("greater", "less")
    toward_h1 = 1.0 if alternative == "greater" else -1.0
    policy = _policy(name, **{kind.parameter: value})
    for offset, passes in ((0.2, True), (-0.2, False)):
        judged = null + toward_h1 * offset  # the delta for paired kinds, the candidate's value otherwise
        # A paired kind judges the delta; the others the candidate's own value (baseline 1.0 apart).
        result = _paired(judged if kind.paired else judged - 1.0, 1.0, higher_is_better)
        (rule,) = judge(policy, {"nll": result})
        assert rule.status == "ok" and rule.passed is passes, rule.message
        assert rule.alternative == alternative and rule.kind in rule.message

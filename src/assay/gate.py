"""Release gate: a stated policy, a paired test per rule, Holm across the gated rules, one verdict.

A policy is a TOML file (``[policy]`` settings, ``[[rules]]``); :data:`DEFAULT_POLICY_TOML` is the one
assay uses when none is given. Rule kinds (each a :class:`RuleKind` in the registry :data:`RULE_KINDS`),
in the metric's own unit, direction taken from the metric:

- ``non_inferiority`` (``margin >= 0``): the candidate may be worse than the baseline by less than
  ``margin``. H0: delta is at or beyond ``margin`` in the bad direction.
- ``improvement`` (optional ``min_effect >= 0``, default 0): the candidate is better by more than
  ``min_effect``. For accuracy with ``min_effect = 0`` the one-sided exact McNemar test decides.
- ``at_most`` / ``at_least`` (``threshold``): the candidate's own value is below / above ``threshold``.

Each rule gives a one-sided p-value from bootstrap replicates (paired for metrics of the outputs,
independent resamples for timings), ``(1 + #replicates on the H0 side) / (B + 1)``; its result names the
test (``test``) and H1's direction (``alternative``, "greater" or "less"), and its message says both
beside the p-value, since the comparisons' two-sided p-values for "no difference" sit next to it in the
report. A rule judged on timings that were flagged (outliers, a busy machine:
:mod:`assay.metrics.efficiency`) carries the flags and says so. The p-values of
the gated rules are Holm-adjusted at the policy's ``alpha`` and a rule passes iff its adjusted
p < alpha; the message also states the one-sided bootstrap bound at the rule's Holm level, which
crosses the margin exactly when the rule's own Holm step passes. ``gated = false`` makes a rule
informational (judged at alpha, outside Holm, never deciding). A rule whose metric was not measured
(latency for a predictions file) is ``skipped`` and fails the gate unless it says
``required = false``. Statistical outcomes never raise: a failed gate is a :class:`Verdict` with
``passed=False``.

Metric names valid in rules: those of the catalogue (:mod:`assay.catalogue`: the metrics of the outputs,
the efficiency measurements, and the trust suite's measurements with per-example evidence, robust and
corruption accuracies and OOD metrics; ``assay gate`` runs the families that a policy's rules name on
both models, on the same seeded examples), metrics plugins register (:data:`assay.metrics.METRICS`),
and any ``extra_metrics`` given when loading a policy. Checking a name imports nothing that measures it.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from assay import catalogue
from assay.compare import (
    PairedResult,
    PerExample,
    align,
    churn,
    compare_aligned,
    compare_measurements,
    compare_per_example,
    flags_by_side,
    resample_statistic,
)
from assay.errors import AssayError, ConfigError
from assay.format import describe_test, format_delta, format_measurement_value, scale_for
from assay.measurement import Comparison, Measurement, _clean
from assay.metrics.registry import METRICS
from assay.outputs import Outputs
from assay.plugins import Registry
from assay.stats import (
    MIN_BOOTSTRAP,
    bootstrap_p_value,
    holm,
    mcnemar_from_counts,
    mde_paired_accuracy,
    one_sided_bound,
    percentile_interval,
)

Parameter = Literal["margin", "min_effect", "threshold"]
PARAMETERS: tuple[Parameter, ...] = ("margin", "min_effect", "threshold")
Alternative = Literal["greater", "less"]


@dataclass(frozen=True)
class RuleKind:
    """One kind of rule: the parameter it takes and the one-sided hypothesis it tests.

    ``paired``: judged on the delta (candidate − baseline) of the paired comparison, so it needs the
    baseline's measurement; otherwise on the candidate's own value. ``hypothesis(value, higher_is_better)``
    gives H0's boundary for the parameter's ``value`` (in the units of what is judged) and H1's direction.
    ``default``: the parameter's value when a rule leaves it out (None: a rule must give it);
    ``nonnegative``: it must be >= 0 (a margin, an effect size); ``label``: how messages name it.
    ``exact_mcnemar``: on a 0/1 metric with a null of 0, the exact McNemar test decides, not the bootstrap.
    Any other parameter on a rule of this kind is an error, so a misplaced 'margin' cannot be ignored.
    """

    parameter: Parameter
    paired: bool
    hypothesis: Callable[[float, bool], tuple[float, Alternative]]
    label: str
    default: float | None = None
    nonnegative: bool = False
    exact_mcnemar: bool = False


def _better(higher_is_better: bool) -> Alternative:
    return "greater" if higher_is_better else "less"


def _non_inferiority(margin: float, higher_is_better: bool) -> tuple[float, Alternative]:
    # H0: delta is at or beyond the margin in the bad direction.
    return -(1.0 if higher_is_better else -1.0) * margin, _better(higher_is_better)


def _improvement(min_effect: float, higher_is_better: bool) -> tuple[float, Alternative]:
    sign = 1.0 if higher_is_better else -1.0
    return (sign * min_effect if min_effect else 0.0), _better(higher_is_better)  # never -0.0 ("-0")


# Rule kinds by name, in the order messages list them. A plugin adds one with RULE_KINDS.add or the
# entry-point group assay.rule_kind; tests/contract/test_rule_kinds.py checks every one.
RULE_KINDS: Registry[RuleKind] = Registry("rule_kind")
for _name, _kind in (
    ("non_inferiority", RuleKind("margin", True, _non_inferiority, "margin", nonnegative=True)),
    (
        "improvement",
        RuleKind(
            "min_effect", True, _improvement, "min effect", default=0.0, nonnegative=True, exact_mcnemar=True
        ),
    ),
    ("at_most", RuleKind("threshold", False, lambda threshold, _: (threshold, "less"), "threshold")),
    ("at_least", RuleKind("threshold", False, lambda threshold, _: (threshold, "greater"), "threshold")),
):
    RULE_KINDS.add(_name, _kind)
_POWER = 0.8
# Proportions whose deltas read best in percentage points.

DEFAULT_POLICY_TOML = """\
# assay's default release policy: on the same test examples, the candidate may not be worse than the
# baseline by a stated margin or more. Holm's correction across the gated rules keeps the chance that
# a candidate which is that much worse on some gated metric still passes at most alpha.
[policy]
name = "default"
alpha = 0.05         # family-wise error rate across the gated rules (Holm)
n_bootstrap = 1000   # paired bootstrap resamples
seed = 0

# Accuracy may not drop by 0.5 points or more.
[[rules]]
metric = "accuracy"
kind = "non_inferiority"
margin = 0.005

# Top-label ECE (15 bins, L1) may not rise by 0.01 or more. Paired, the plug-in's upward bias is much
# the same for both models and largely cancels, and its delta is tight (about +/-0.45 pp at n = 10,000);
# ece_debiased, which the report leads with for a model's own calibration, takes a square root that
# makes paired deltas near 0 four times as wide, so a calibrated candidate would fail for want of power.
[[rules]]
metric = "ece"
kind = "non_inferiority"
margin = 0.01

# Mean negative log-likelihood may not rise by 0.02 nats or more.
[[rules]]
metric = "nll"
kind = "non_inferiority"
margin = 0.02

# Reported, not deciding: macro F1 within 1 point.
[[rules]]
metric = "macro_f1"
kind = "non_inferiority"
margin = 0.01
gated = false

# Reported, not deciding: is the candidate faster at batch 1? Skipped for predictions files.
[[rules]]
metric = "latency_p50_b1"
kind = "improvement"
gated = false
required = false
"""


# ---------------------------------------------------------------------------------------------------
# Policy file


def _known_metrics(extra: Iterable[str]) -> dict[str, Any]:
    """The validator's context: every name a rule may use, and how to list them in a message."""
    own = sorted({
        *catalogue.OUTPUT_METRICS, *METRICS.names(), *catalogue.EFFICIENCY_METRICS,
        *catalogue.LANGUAGE_MODEL_METRICS, *extra,
    })  # fmt: skip
    return {
        "known_metrics": {*own, *catalogue.trust_entries()},
        "known_text": f"{', '.join(own)}; and the trust suite's {catalogue.describe_trust()}",
    }


class _RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    metric: str
    kind: str
    margin: float | None = None
    min_effect: float | None = None
    threshold: float | None = None
    gated: bool = True
    required: bool = True

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str, info: ValidationInfo) -> str:
        context = info.context or {}
        known = context.get("known_metrics")
        if known is not None and value not in known:
            close = difflib.get_close_matches(value, sorted(known), n=1, cutoff=0.8)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown metric '{value}'{hint}. Known: {context['known_text']}")
        return value

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in RULE_KINDS:
            raise ValueError(f"unknown kind '{value}'. Known: {', '.join(RULE_KINDS.in_order())}")
        return value

    @field_validator("margin", "min_effect", "threshold")
    @classmethod
    def _finite(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"'{info.field_name}' must be a finite number. Got {value}")
        return value

    @model_validator(mode="after")
    def _parameters_fit_kind(self) -> _RuleModel:
        kind = RULE_KINDS.get(self.kind)
        wanted = kind.parameter
        for name in PARAMETERS:
            if name != wanted and getattr(self, name) is not None:
                raise ValueError(f"'{name}' does not apply to kind '{self.kind}' (it takes '{wanted}')")
        value = getattr(self, wanted)
        if value is None and kind.default is None:
            raise ValueError(f"kind '{self.kind}' needs '{wanted}'")
        if kind.nonnegative and value is not None and value < 0:
            raise ValueError(f"'{wanted}' must be >= 0. Got {value}")
        return self


class _SettingsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = "policy"
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    # Fewer resamples cannot resolve p-values near alpha / (number of rules).
    n_bootstrap: int = Field(default=1000, ge=MIN_BOOTSTRAP)
    seed: int = Field(default=0, ge=0)


class _PolicyFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    policy: _SettingsModel = Field(default_factory=_SettingsModel)
    rules: list[_RuleModel] = Field(min_length=1)

    @model_validator(mode="after")
    def _something_is_gated(self) -> _PolicyFileModel:
        if not any(rule.gated for rule in self.rules):
            raise ValueError("no rule is gated (all have gated = false), so every candidate would pass")
        return self


_TYPE_WORDS = {
    "float_type": "a number",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "an array of tables ([[rules]])",
    "model_type": "a table",
    "dict_type": "a table",
}


def _where(loc: tuple[Any, ...], data: Any) -> tuple[str, str | None]:
    """('rule 2 ('ece')', 'margin') for loc ('rules', 1, 'margin'); the key is None at table level."""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules") if isinstance(data, dict) else None
        rule = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
        metric = rule.get("metric") if isinstance(rule, dict) else None
        label = f"rule {loc[1] + 1}" + (f" ('{metric}')" if isinstance(metric, str) else "")
        return label, (str(loc[2]) if len(loc) > 2 else None)
    if len(loc) >= 2 and loc[0] == "policy":
        return "[policy]", (str(loc[1]) if len(loc) > 1 else None)
    return "file", (str(loc[0]) if loc else None)


def _problem(error: Any, key: str | None) -> str:
    kind, message = error["type"], str(error["msg"])
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind == "missing":
        return f"missing key '{key}'"
    if kind == "extra_forbidden":
        return f"unknown key '{key}'"
    if kind == "too_short" and key == "rules":
        return "no [[rules]]: a policy needs at least one rule"
    subject = f"'{key}'" if key else "it"
    if kind in _TYPE_WORDS:
        return f"{subject} must be {_TYPE_WORDS[kind]}. Got {error.get('input')!r}"
    constraint = message.removeprefix("Input should be ")
    return f"{subject} must be {constraint}. Got {error.get('input')!r}"


def _config_error(source: str, error: ValidationError, data: Any) -> ConfigError:
    errors = error.errors()
    first = errors[0]
    where, key = _where(tuple(first["loc"]), data)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return ConfigError(f"{source}: {where}: {_problem(first, key)}{more}.")


@dataclass(frozen=True)
class Rule:
    """One policy rule; see the module docstring for the kinds."""

    metric: str
    kind: str  # a name in RULE_KINDS
    margin: float | None = None
    min_effect: float | None = None
    threshold: float | None = None
    gated: bool = True
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The TOML keys of this rule; defaults and unused parameters left out."""
        d: dict[str, Any] = {"metric": self.metric, "kind": self.kind}
        for key in PARAMETERS:
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if not self.gated:
            d["gated"] = False
        if not self.required:
            d["required"] = False
        return d


@dataclass(frozen=True)
class Policy:
    """A validated release policy. Load with :meth:`from_toml` or take :meth:`default`."""

    name: str
    alpha: float
    n_bootstrap: int
    seed: int
    rules: tuple[Rule, ...]
    source: str = field(default="<dict>", compare=False)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "<dict>", extra_metrics: Iterable[str] = ()
    ) -> Policy:
        """Validate the TOML-shaped ``{"policy": {...}, "rules": [...]}`` (or :meth:`to_dict`'s flat form)."""
        if "policy" not in data and "name" in data:
            settings = {k: data[k] for k in ("name", "alpha", "n_bootstrap", "seed") if k in data}
            data = {"policy": settings, "rules": data.get("rules", [])}
        context = _known_metrics(extra_metrics)
        try:
            model = _PolicyFileModel.model_validate(data, context=context)
        except ValidationError as e:
            raise _config_error(source, e, data) from None
        rules = tuple(Rule(**r.model_dump()) for r in model.rules)
        s = model.policy
        return cls(
            name=s.name, alpha=s.alpha, n_bootstrap=s.n_bootstrap, seed=s.seed, rules=rules, source=source
        )

    @classmethod
    def from_toml_text(
        cls, text: str, *, source: str = "<string>", extra_metrics: Iterable[str] = ()
    ) -> Policy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: not valid TOML: {e}.") from None
        return cls.from_dict(data, source=source, extra_metrics=extra_metrics)

    @classmethod
    def from_toml(cls, path: str | Path, *, extra_metrics: Iterable[str] = ()) -> Policy:
        """Read a policy file; each problem is a :class:`~assay.errors.ConfigError` naming file, rule, key."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the policy file ({e}).") from None
        return cls.from_toml_text(text, source=str(path), extra_metrics=extra_metrics)

    @classmethod
    def default(cls) -> Policy:
        """The documented default policy, :data:`DEFAULT_POLICY_TOML`."""
        return cls.from_toml_text(DEFAULT_POLICY_TOML, source="default policy")

    @classmethod
    def load(
        cls,
        source: Policy | str | Path | None,
        *,
        default: Callable[[], Policy] | None = None,
        extra_metrics: Iterable[str] = (),
    ) -> Policy:
        """``source`` as a policy: itself, the TOML file it names (its rules may also name
        ``extra_metrics``: a gate reads the file once it knows what its inputs measure, such as the
        metrics of an lm-eval log), or for None ``default()`` (:meth:`default` unless given)."""
        if source is None:
            return (default or cls.default)()
        if isinstance(source, Policy):
            return source
        return cls.from_toml(source, extra_metrics=extra_metrics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "alpha": self.alpha,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "rules": [rule.to_dict() for rule in self.rules],
        }

    def to_toml(self) -> str:
        """This policy as a TOML file that :meth:`from_toml_text` reads back to an equal policy."""
        lines = [
            "[policy]",
            f"name = {_toml_value(self.name)}",
            f"alpha = {_toml_value(self.alpha)}",
            f"n_bootstrap = {self.n_bootstrap}",
            f"seed = {self.seed}",
        ]
        for rule in self.rules:
            lines += ["", "[[rules]]", *(f"{k} = {_toml_value(v)}" for k, v in rule.to_dict().items())]
        return "\n".join(lines) + "\n"


def _toml_value(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(float(value))


# ---------------------------------------------------------------------------------------------------
# Decision


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule.

    ``passed`` says whether the rule lets the candidate through: a gated rule that passed its Holm step;
    for informational rules (``gated=False``) its own outcome at alpha, which never decides; a skipped
    rule passes only when ``required`` is False. ``bound`` is the one-sided bootstrap bound (on the
    delta, or on the candidate value for ``at_most``/``at_least``) at ``bound_level``, the rule's Holm
    level alpha / (m − j + 1).
    """

    metric: str
    kind: str
    gated: bool
    required: bool
    margin: float | None
    min_effect: float | None
    threshold: float | None
    passed: bool
    status: Literal["ok", "skipped", "error"]
    message: str
    # The numbers behind the decision; absent (None) for a rule that was skipped or failed to run.
    baseline: float | None = None
    candidate: float | None = None
    delta: float | None = None
    delta_ci_low: float | None = None
    delta_ci_high: float | None = None
    candidate_ci_low: float | None = None
    candidate_ci_high: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    bound: float | None = None
    bound_level: float | None = None
    test: str = ""
    alternative: str = ""  # H1's direction of the one-sided test, SciPy's word: "greater" or "less"
    # Timing flags of the measurements the rule was judged on, by side ("baseline", "candidate").
    flags: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        rule: Rule,
        *,
        passed: bool,
        status: Literal["ok", "skipped", "error"],
        message: str,
        **numbers: Any,
    ) -> RuleResult:
        """A result that repeats the rule's own fields."""
        return cls(
            rule.metric,
            rule.kind,
            rule.gated,
            rule.required,
            rule.margin,
            rule.min_effect,
            rule.threshold,
            passed,
            status,
            message,
            **numbers,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class Verdict:
    """The gate's answer: passed or not, and every number behind it."""

    passed: bool
    policy: dict[str, Any]
    rules: list[RuleResult]
    comparisons: list[Comparison]
    churn: list[Measurement]
    mde: dict[str, Any]  # see _mde: the paired minimum detectable effect of accuracy and its context

    def summary(self) -> str:
        gated = [r for r in self.rules if r.gated]
        failed = [r for r in gated if not r.passed]
        head = (
            f"policy '{self.policy.get('name', '')}', one-sided rules, Holm at family-wise alpha "
            f"{self.policy.get('alpha')}"
        )
        if not failed:
            return f"PASS: {len(gated)} of {len(gated)} gated rule(s) passed ({head})"
        names = ", ".join(f"{r.metric} ({r.kind if r.status == 'ok' else r.status})" for r in failed)
        return f"FAIL: {len(failed)} of {len(gated)} gated rule(s) failed: {names} ({head})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "summary": self.summary(),
            "policy": self.policy,
            "rules": [r.to_dict() for r in self.rules],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "churn": [m.to_dict() for m in self.churn],
            "mde": {k: _clean(v) if isinstance(v, float) else v for k, v in self.mde.items()},
        }


@dataclass
class _Evidence:
    """What one rule is judged on: a comparison, replicates and the metric's direction."""

    result: PairedResult | None
    candidate_samples: np.ndarray | None
    candidate_value: float | None
    higher_is_better: bool
    unit: str | None
    resampling: str  # how the replicates were drawn, named in the rule's ``test``
    flags: dict[str, list[str]] = field(default_factory=dict)  # timing flags by side


@dataclass
class _Test:
    """A rule's one-sided test before Holm: p, the decision null and which bound to report."""

    p_value: float
    samples: np.ndarray  # replicates the bound is taken from
    null: float  # in the units of ``samples``: delta for relative rules, candidate value otherwise
    side: Literal["lower", "upper"]
    test: str
    alternative: Literal["greater", "less"]


def _efficiency_index(measurements: Sequence[Measurement]) -> dict[str, Measurement]:
    return {m.name: m for m in measurements if m.status == "ok" and m.value is not None}


def _compare_efficiency(
    baseline: dict[str, Measurement], candidate: dict[str, Measurement], n_boot: int, seed: int
) -> dict[str, PairedResult | str]:
    out: dict[str, PairedResult | str] = {}
    for name in sorted(baseline.keys() & candidate.keys()):
        try:
            out[name] = compare_measurements(baseline[name], candidate[name], n_boot=n_boot, seed=seed)
        except Exception as e:  # one broken measurement must not stop the gate; the rule reports it
            out[name] = f"{type(e).__name__}: {e}"
    return out


def _compare_registered(
    baseline: Outputs, candidate: Outputs, n_boot: int, seed: int
) -> dict[str, PairedResult | str]:
    out: dict[str, PairedResult | str] = {}
    for name in METRICS.names():
        try:
            out[name] = compare_aligned(METRICS.get(name), baseline, candidate, n_boot=n_boot, seed=seed)
        except Exception as e:  # a plugin metric may fail in any way; its rules and comparison say so
            out[name] = f"{type(e).__name__}: {e}"
    return out


def _family(name: str) -> str:
    """The family of a metric that failed to compare: the catalogue's, a plugin metric's, else efficiency
    (a measurement outside both came with the efficiency measurements)."""
    entry = catalogue.lookup(name)
    if entry is not None:
        return entry.family
    return METRICS.get(name).family if name in METRICS else catalogue.EFFICIENCY


def _error_comparison(name: str, message: str, family: str | None) -> Comparison:
    return Comparison(
        name=name,
        family=family or _family(name),
        baseline=None,
        candidate=None,
        delta=None,
        delta_ci_low=None,
        delta_ci_high=None,
        p_value=None,
        test="",
        status="error",
        details={"message": message},
    )


def _evidence(
    rule: Rule,
    paired: Mapping[str, PairedResult | str],
    candidate_efficiency: dict[str, Measurement],
    policy: Policy,
) -> _Evidence | str:
    """The evidence for ``rule``, or the reason it has none (a string starting 'skipped:' or 'error:')."""
    found = paired.get(rule.metric)
    if isinstance(found, str):
        return f"error: {found}"
    if found is not None:
        c = found.comparison
        return _Evidence(
            found,
            found.candidate_samples,
            c.candidate,
            bool(c.higher_is_better),
            c.unit,
            found.resampling,
            c.details.get("flags") or {},
        )
    measurement = candidate_efficiency.get(rule.metric)
    if measurement is None:
        return f"skipped: no '{rule.metric}' measurement for the candidate"
    if RULE_KINDS.get(rule.kind).paired:
        return f"skipped: no '{rule.metric}' measurement for the baseline"
    if measurement.higher_is_better is None:
        return f"error: the '{rule.metric}' measurement does not say whether higher is better"
    samples = resample_statistic(measurement, n_boot=policy.n_bootstrap, seed=policy.seed)
    return _Evidence(
        None,
        samples,
        measurement.value,
        measurement.higher_is_better,
        measurement.unit,
        "bootstrap of the samples",
        flags_by_side(None, measurement),
    )


def _side(alternative: Literal["greater", "less"]) -> Literal["lower", "upper"]:
    """H1 "greater" is decided by the interval's lower bound, "less" by its upper bound."""
    return "lower" if alternative == "greater" else "upper"


def _one_sided_test(rule: Rule, evidence: _Evidence) -> _Test:
    """The rule's H1 as a one-sided test: on the delta (paired kinds) or on the candidate value."""
    kind = RULE_KINDS.get(rule.kind)
    value = getattr(rule, kind.parameter)
    value = kind.default if value is None else value
    assert value is not None  # validated: a kind without a default needs its parameter
    null, alternative = kind.hypothesis(value, evidence.higher_is_better)
    if kind.paired:
        assert evidence.result is not None
        samples = evidence.result.delta_samples
        comparison = evidence.result.comparison
        if kind.exact_mcnemar and comparison.test == "exact McNemar" and null == 0.0:
            details = comparison.details
            b, c = int(details["baseline_only_correct"]), int(details["candidate_only_correct"])
            # "greater": the candidate gets more examples right. For a lower-is-better 0/1 metric (an
            # error rate from a plugin) improvement means the reverse.
            p = mcnemar_from_counts(b, c, alternative=alternative).p_value
            return _Test(p, samples, null, _side(alternative), "exact McNemar", alternative)
    else:
        assert evidence.candidate_samples is not None
        samples = evidence.candidate_samples
    p = bootstrap_p_value(samples, null, alternative=alternative)
    return _Test(p, samples, null, _side(alternative), evidence.resampling, alternative)


def _fmt_versus(metric: str, a: float, b: float, signed: bool, unit: str | None) -> tuple[str, str]:
    """Two numbers on one scale (as the report prints them), with more digits if they would look equal."""
    scale = scale_for(metric, unit, max(abs(a), abs(b)), delta=signed)
    for extra in range(4):
        s = replace(scale, decimals=scale.decimals + extra)
        fa, fb = s.number(a, signed=signed) + s.suffix, s.number(b, signed=signed) + s.suffix
        if fa != fb or a == b:
            break
    return fa, fb


def _describe_value(rule: Rule, evidence: _Evidence) -> str:
    unit = evidence.unit
    if not RULE_KINDS.get(rule.kind).paired:
        assert evidence.candidate_samples is not None
        low, high = percentile_interval(evidence.candidate_samples)
        value = format_measurement_value(evidence.candidate_value, low, high, rule.metric, unit)
        return f"{rule.metric} {value} (95% CI)"
    assert evidence.result is not None
    c = evidence.result.comparison
    delta = format_delta(c.delta, c.delta_ci_low, c.delta_ci_high, rule.metric, unit)
    return f"delta {rule.metric} {delta} (95% CI)"


def _decision_text(
    rule: Rule, evidence: _Evidence, test: _Test, bound: float | None, level: float, n_boot: int
) -> str:
    """'one-sided 98.3% lower bound (level 0.0167) -0.31 pts > -0.50 pts (margin)'; McNemar has no bound,
    its p-value (named after the verdict) decides at the level."""
    kind = RULE_KINDS.get(rule.kind)
    name, signed = kind.label, kind.paired
    if test.test == "exact McNemar":
        return f"decided by its p-value at level {level:.3g}"
    if bound is None:
        return f"a {test.side} bound at level {level:.3g} needs more than n_bootstrap = {n_boot} resamples"
    b, null = _fmt_versus(rule.metric, bound, test.null, signed, evidence.unit)
    holds = bound > test.null if test.side == "lower" else bound < test.null
    op = {("lower", True): ">", ("lower", False): "<=", ("upper", True): "<", ("upper", False): ">="}[
        (test.side, holds)
    ]
    return f"one-sided {1 - level:.1%} {test.side} bound (level {level:.3g}) {b} {op} {null} ({name})"


def judge(
    policy: Policy,
    paired: Mapping[str, PairedResult | str],
    candidate_efficiency: Sequence[Measurement] = (),
) -> list[RuleResult]:
    """Apply ``policy``'s rules to comparisons already made: one-sided tests, then Holm.

    ``paired`` maps a metric name to its :class:`~assay.compare.PairedResult` (or to the error message
    of a comparison that failed); ``candidate_efficiency`` serves ``at_most``/``at_least`` rules on
    efficiency measurements the baseline lacks. :func:`evaluate_policy` is pairing plus this.
    """
    cand_eff = _efficiency_index(candidate_efficiency)
    evidences = [_evidence(rule, paired, cand_eff, policy) for rule in policy.rules]
    rules = policy.rules
    tests = [
        _one_sided_test(rule, ev) if isinstance(ev, _Evidence) else None
        for rule, ev in zip(rules, evidences, strict=True)
    ]
    gated_p = {i: t.p_value for i, (rule, t) in enumerate(zip(rules, tests, strict=True)) if rule.gated and t}
    indices = list(gated_p)
    adjusted = holm([gated_p[i] for i in indices]) if indices else np.array([])
    p_adjusted = {i: float(p) for i, p in zip(indices, adjusted, strict=True)}
    # Holm's step j (0-based, ascending p) tests at alpha / (m - j): m - j is the rule's own multiplier.
    order = np.argsort([gated_p[i] for i in indices], kind="stable")
    multiplier = {indices[j]: len(indices) - step for step, j in enumerate(order)}
    results = []
    for i, (rule, ev, test) in enumerate(zip(rules, evidences, tests, strict=True)):
        if isinstance(ev, _Evidence) and test is not None:
            results.append(_judged(rule, ev, test, multiplier.get(i, 1), p_adjusted.get(i), policy))
        else:
            results.append(_unjudged(rule, str(ev)))
    return results


def _judged(
    rule: Rule, ev: _Evidence, test: _Test, multiplier: int, p_adjusted: float | None, policy: Policy
) -> RuleResult:
    alpha = policy.alpha
    bound = one_sided_bound(test.samples, alpha, side=test.side, multiplier=multiplier)
    own_step = multiplier * test.p_value < alpha
    passed = (p_adjusted < alpha) if p_adjusted is not None else own_step
    level = alpha / multiplier
    decision = _decision_text(rule, ev, test, bound, level, policy.n_bootstrap)
    p_text = f"{describe_test(test.test, test.alternative)} p = {test.p_value:.3g}"
    if p_adjusted is not None:
        p_text += f", Holm-adjusted {p_adjusted:.3g}"
    if rule.gated and own_step and not passed:
        verdict = "but Holm's step-down stopped at a rule with a smaller p-value → fail"
    else:
        verdict = "→ pass" if passed else "→ fail"
    tail = "" if rule.gated else " (informational, not gated)"
    value = _describe_value(rule, ev)
    message = f"{rule.metric} ({rule.kind}): {value}; {decision} {verdict} ({p_text}){tail}"
    if ev.flags:
        flagged = "; ".join(f"{side}: {'; '.join(flags)}" for side, flags in ev.flags.items())
        message += f"; judged on flagged timings ({flagged})"
    c = ev.result.comparison if ev.result is not None else None
    cand_low, cand_high = (
        percentile_interval(ev.candidate_samples) if ev.candidate_samples is not None else (None, None)
    )
    return RuleResult.of(
        rule,
        passed=bool(passed),
        status="ok",
        message=message,
        baseline=c.baseline if c else None,
        candidate=ev.candidate_value,
        delta=c.delta if c else None,
        delta_ci_low=c.delta_ci_low if c else None,
        delta_ci_high=c.delta_ci_high if c else None,
        candidate_ci_low=cand_low,
        candidate_ci_high=cand_high,
        p_value=test.p_value,
        p_adjusted=p_adjusted,
        bound=bound,
        bound_level=level,
        test=test.test,
        alternative=test.alternative,
        flags=ev.flags,
    )


def _unjudged(rule: Rule, reason: str) -> RuleResult:
    status: Literal["skipped", "error"] = "skipped" if reason.startswith("skipped") else "error"
    blocks = rule.gated and (status == "error" or rule.required)
    if not rule.gated:
        effect = "informational"
    elif blocks:
        effect = "fails the gate"
        if status == "skipped":
            effect += " (required rule; set required = false to make it optional)"
    else:
        effect = "does not block (required = false)"
    return RuleResult.of(
        rule, passed=not blocks, status=status, message=f"{rule.metric} ({rule.kind}): {reason} → {effect}"
    )


def _mde(paired: Mapping[str, PairedResult | str], n: int, alpha: float) -> dict[str, Any]:
    """``{"accuracy": <paired MDE>, "n", "discordance", "alpha", "power", "estimator"}`` (metric -> MDE)."""
    accuracy = paired.get("accuracy")
    if not isinstance(accuracy, PairedResult):
        return {}
    details = accuracy.comparison.details
    discordance = (int(details["baseline_only_correct"]) + int(details["candidate_only_correct"])) / n
    return {
        "accuracy": mde_paired_accuracy(n, discordance, alpha, _POWER),
        "n": n,
        "discordance": discordance,
        "alpha": alpha,
        "power": _POWER,
        "estimator": (
            "smallest accuracy difference an exact McNemar test detects at this discordance: Connor (1987) "
            "normal approximation, two-sided; NaN (null) without discordant pairs"
        ),
    }


def _compare_per_example(
    policy: Policy, baseline: Mapping[str, PerExample], candidate: Mapping[str, PerExample], every: bool
) -> dict[str, PairedResult | str]:
    """Paired comparisons of the per-example evidence both models have, for the metrics rules name, or
    for all of it (``every``: where it is all there is, as for lm-eval's generation logs)."""
    named = set(baseline) if every else {rule.metric for rule in policy.rules}
    out: dict[str, PairedResult | str] = {}
    for name in sorted(named & baseline.keys() & candidate.keys()):
        try:
            out[name] = compare_per_example(
                baseline[name], candidate[name], n_boot=policy.n_bootstrap, seed=policy.seed
            )
        except AssayError as e:  # examples that do not pair: the rule says so, the other rules still run
            out[name] = f"{type(e).__name__}: {e}"
    return out


def evaluate_policy(
    policy: Policy,
    baseline: Outputs,
    candidate: Outputs,
    *,
    baseline_efficiency: Sequence[Measurement] = (),
    candidate_efficiency: Sequence[Measurement] = (),
    baseline_per_example: Mapping[str, PerExample] | None = None,
    candidate_per_example: Mapping[str, PerExample] | None = None,
    output_metrics: bool = True,
) -> Verdict:
    """Judge ``candidate`` against ``baseline`` under ``policy``.

    ``*_per_example``: evidence for measurements beyond the outputs, by name (the trust suite's robust
    and corruption accuracies and OOD metrics, :attr:`assay.trust.TrustResult.per_example`); a rule on
    such a metric is judged on the paired comparison of the two models' evidence. ``output_metrics``:
    False where the outputs carry no probabilities (an lm-eval generation log's hits), so that no metric
    of the outputs is compared (the outputs then only pair the examples and give the churn), and every
    per-example metric both sides have is, whether or not a rule names it.

    Raises :class:`~assay.errors.DataError` only when the two outputs are not on the same examples;
    every statistical outcome, and every metric that cannot be computed, is part of the verdict.
    """
    baseline, candidate = align(baseline, candidate)
    n_boot, seed = policy.n_bootstrap, policy.seed
    base_eff, cand_eff = _efficiency_index(baseline_efficiency), _efficiency_index(candidate_efficiency)
    paired = _compare_registered(baseline, candidate, n_boot, seed) if output_metrics else {}
    paired |= _compare_efficiency(base_eff, cand_eff, n_boot, seed)
    paired |= _compare_per_example(
        policy, baseline_per_example or {}, candidate_per_example or {}, every=not output_metrics
    )
    families = {name: e.measurement.family for name, e in (baseline_per_example or {}).items()}
    rules = judge(policy, paired, candidate_efficiency)
    comparisons = [
        r.comparison if isinstance(r, PairedResult) else _error_comparison(name, r, families.get(name))
        for name, r in paired.items()
    ]
    passed = all(r.passed for r in rules if r.gated)
    return Verdict(
        passed=passed,
        policy=policy.to_dict(),
        rules=rules,
        comparisons=comparisons,
        churn=churn(baseline, candidate),
        mde=_mde(paired, baseline.n, policy.alpha),
    )

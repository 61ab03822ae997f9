"""From a report document to what the template shows: every number formatted, every figure drawn.

The template only lays out what this module hands it, so all decisions (which rows, which unit, which
reason a section is empty) live here in typed Python. Each section either has content or a ``missing``
reason; a missing section stays in the report with that reason rather than disappearing.

The words that keep a number from being misread come from the document too: each p-value's test and
sidedness (a rule's ``test`` and ``alternative``, a comparison's ``test`` and ``details["alternative"]``),
the policy's family-wise level and its rules' sidedness, a badge of its own for informational rules, a
note beside any estimate outside its interval, the timing flags of efficiency measurements, and which
calibration estimator the summary leads with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from assay.format import (
    DASH,
    delta_parts,
    describe_test,
    forced_inputs,
    format_bounds,
    format_count,
    format_duration,
    format_margin,
    format_p,
    format_timestamp,
    format_value,
    headline_calibration,
    is_rate,
    label,
    outside_interval_note,
    rule_badge,
    scale_for,
    sidedness,
    trim,
)
from assay.report import plots

Doc = Mapping[str, Any]

FAMILY_ORDER = (
    "quality",
    "calibration",
    "robustness",
    "adversarial",
    "ood",
    "fairness",
    "privacy",
    "security",
    "data",
)
FAMILY_TITLES = {"ood": "Out-of-distribution"}
# Shown in their own sections, not among the metrics.
_OWN_SECTION_FAMILIES = frozenset({"efficiency", "churn"})
# The summary's key figures; "calibration" is the headline calibration error (format.headline_calibration).
KEY_METRICS = ("accuracy", "macro_f1", "calibration", "nll", "latency_p50_b1", "throughput")
_MDE_CONTEXT_KEYS = frozenset({"n", "discordance", "alpha", "power"})


@dataclass(frozen=True)
class Cell:
    """A formatted number: value, interval and sample size are separate so the template can style them."""

    value: str = DASH
    unit: str = ""  # the suffix ("%", " ms"), separate so the template can set it smaller
    ci: str = ""
    n: str = ""
    tone: str = ""  # "better" / "worse": a delta whose interval excludes zero
    status: str = "ok"  # "skipped" / "error": ``note`` then says why, in place of the number
    note: str = ""
    outside: str = ""  # why the value lies outside its own interval; empty when it lies inside


@dataclass(frozen=True)
class MetricRow:
    name: str
    label: str
    estimator: str
    status: str
    candidate: Cell
    note: str = ""  # why a value is missing (skipped reason, error message), once per row
    baseline: Cell | None = None
    delta: Cell | None = None
    p: str = ""
    test: str = ""  # the p-value's test with its sidedness
    context: str = ""  # n (when the cells do not show it) and timing conditions, beside the estimator
    flags: list[str] = field(default_factory=list)  # why a timing cannot be trusted, by side


@dataclass(frozen=True)
class MetricGroup:
    id: str
    title: str
    rows: list[MetricRow]


@dataclass(frozen=True)
class Figure:
    title: str
    svg: Markup


@dataclass(frozen=True)
class RuleRow:
    label: str
    rule: str
    baseline: str
    candidate: str
    delta: Cell
    p: str
    p_adjusted: str
    test: str  # the rule's test with its sidedness, beside its p-value
    badge: str  # format.rule_badge: what the rule did, in words
    result: str  # the badge's kind: "pass", "fail", "skipped" or "info"
    gated: bool
    message: str
    flagged: bool = False  # judged on timings that were flagged


@dataclass(frozen=True)
class Text:
    text: str
    title: str = ""
    code: bool = False
    muted: bool = False


@dataclass(frozen=True)
class Field:
    label: str
    values: list[Text]


@dataclass(frozen=True)
class Node:
    """One entry of a nested key-value listing (the environment)."""

    label: str
    text: str = ""
    children: list[Node] = field(default_factory=list)


@dataclass(frozen=True)
class Tile:
    """A key figure under the verdict: the candidate's value, and its delta in a comparison."""

    label: str
    cell: Cell
    delta: Cell | None
    estimator: str
    note: str = ""  # shown under the figure: which estimator the calibration headline is


@dataclass(frozen=True)
class Summary:
    status: str  # "passed", "failed" or "info"
    badge: str
    headline: str
    lines: list[str]
    tiles: list[Tile]
    warnings: list[str] = field(default_factory=list)  # what was forced: shown above every number


@dataclass(frozen=True)
class GateContent:
    policy: str
    source: str
    level: str  # the family-wise level, how many rules it covers, and the rules' sidedness
    rules: list[RuleRow]
    mde: list[str]
    churn: list[MetricRow]
    rules_missing: str | None = None
    mde_missing: str | None = None
    churn_missing: str | None = None


@dataclass(frozen=True)
class ModelsContent:
    columns: list[str]
    fields: list[Field]
    dataset: list[Field]
    card_missing: str | None = None
    dataset_missing: str | None = None


@dataclass(frozen=True)
class MetricsContent:
    groups: list[MetricGroup]
    forest: Figure | None = None
    per_class: Figure | None = None


@dataclass(frozen=True)
class CalibrationContent:
    figures: list[Figure]
    headline: str = ""  # which estimator the summary leads with
    tests: list[str] = field(default_factory=list)  # calibration tests against perfect calibration
    temperature_missing: str | None = None


@dataclass(frozen=True)
class FiguresContent:
    figures: list[Figure]


@dataclass(frozen=True)
class EfficiencyContent:
    rows: list[MetricRow]
    context: str


@dataclass(frozen=True)
class EnvironmentContent:
    nodes: list[Node]


@dataclass(frozen=True)
class EvidenceItem:
    name: str
    value: str
    href: str


@dataclass(frozen=True)
class Subcategory:
    id: str
    title: str
    evidence: list[tuple[str, list[str], list[EvidenceItem]]]  # (what, ISO controls, its figures)
    can_supply: list[str]  # for one without evidence: what of assay's would bear on it


@dataclass(frozen=True)
class GovernanceContent:
    covered: list[Subcategory]
    uncovered: list[Subcategory]
    controls: list[tuple[str, str]]
    sources: list[tuple[str, str]]  # (source, url)
    note: str


@dataclass(frozen=True)
class Section:
    """One numbered section: its content, and ``missing``, the reason it (or its core) was not measured."""

    id: str
    title: str
    content: Any = None
    missing: str | None = None


def _reason(m: Mapping[str, Any]) -> str:
    details = m.get("details") or {}
    return str(details.get("reason") or details.get("message") or m.get("status", ""))


def _cell(m: Mapping[str, Any] | None, *, with_n: bool = True) -> Cell:
    if not m:
        return Cell()
    if m.get("status", "ok") != "ok":
        return Cell(status=str(m["status"]), note=_reason(m))
    if m.get("value") is None:
        return Cell()
    scale = scale_for(m.get("name", ""), m.get("unit"), float(m["value"]), family=m.get("family"))
    n = f"(n={format_count(m['n'])})" if with_n and m.get("n") is not None else ""
    return Cell(
        scale.number(float(m["value"])),
        scale.suffix,
        format_bounds(m.get("ci_low"), m.get("ci_high"), scale),
        n,
        outside=outside_interval_note(m["value"], m.get("ci_low"), m.get("ci_high"), m.get("details")),
    )


def _tone(lo: Any, hi: Any, higher_is_better: bool | None) -> str:
    if higher_is_better is None or lo is None or hi is None:
        return ""
    if lo > 0:
        return "better" if higher_is_better else "worse"
    if hi < 0:
        return "worse" if higher_is_better else "better"
    return ""


def _delta_cell(c: Mapping[str, Any] | None) -> Cell | None:
    if c is None:
        return None
    if c.get("status", "ok") != "ok":
        return Cell(status=str(c["status"]), note=_reason(c))
    value, unit, bounds = delta_parts(
        c.get("delta"),
        c.get("delta_ci_low"),
        c.get("delta_ci_high"),
        c["name"],
        c.get("unit"),
        family=c.get("family"),
    )
    return Cell(
        value,
        unit,
        bounds,
        tone=_tone(c.get("delta_ci_low"), c.get("delta_ci_high"), c.get("higher_is_better")),
        outside=outside_interval_note(
            c.get("delta"), c.get("delta_ci_low"), c.get("delta_ci_high"), c.get("details")
        ),
    )


def _test(c: Mapping[str, Any]) -> str:
    """A comparison's test with its sidedness, as the document records them."""
    return describe_test(c.get("test"), (c.get("details") or {}).get("alternative"))


def _flags(sides: Sequence[tuple[str, Mapping[str, Any] | None]]) -> list[str]:
    """The timing flags of each side's measurement; prefixed by the side when there are two."""
    return [
        f"{side}: {flag}" if len(sides) > 1 else str(flag)
        for side, m in sides
        if m
        for flag in (m.get("details") or {}).get("flags") or []
    ]


def _context(m: Mapping[str, Any], *, with_n: bool) -> str:
    details = m.get("details") or {}
    parts = [f"n={format_count(m['n'])}"] if with_n and m.get("n") is not None else []
    if "batch_size" in details:
        parts.append(f"batch {details['batch_size']}")
    if "threads" in details:
        parts.append(f"{details['threads']} thread{'s' if details['threads'] != 1 else ''}")
    if "backend" in details:
        parts.append(str(details["backend"]))
    return " · ".join(parts)


def _by_name(items: Sequence[Mapping[str, Any]] | None) -> dict[str, Mapping[str, Any]]:
    return {m["name"]: m for m in items or [] if isinstance(m, Mapping) and "name" in m}


class _Context:
    """The document's pieces, indexed once: candidate and baseline measurements and comparisons by name."""

    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self.comparison = doc.get("kind") == "comparison"
        self.candidate = list(doc.get("measurements") or [])
        self.baseline = list(doc.get("baseline_measurements") or [])
        self.verdict: Mapping[str, Any] = doc.get("verdict") or {}
        self.candidate_by_name = _by_name(self.candidate)
        self.baseline_by_name = _by_name(self.baseline)
        self.comparisons = _by_name(self.verdict.get("comparisons"))
        models = doc.get("models") or {}
        self.candidate_info: Mapping[str, Any] = models.get("candidate") or {}
        self.baseline_info: Mapping[str, Any] = models.get("baseline") or {}
        self.plots: Mapping[str, Any] = doc.get("plots") or {}
        dataset = doc.get("dataset") or {}
        self.class_names: list[str] = [str(c) for c in dataset.get("class_names") or []]

    def ref(self, role: str) -> str:
        info = self.candidate_info if role == "candidate" else self.baseline_info
        return str(info.get("ref") or role)

    def unit(self, name: str) -> str | None:
        """A rule names only its metric; the unit comes from that metric's comparison or measurement."""
        source = self.comparisons.get(name) or self.candidate_by_name.get(name) or {}
        return source.get("unit")

    def rows(self, family_names: Sequence[str]) -> list[MetricRow]:
        rows = []
        for name in family_names:
            m = self.candidate_by_name.get(name) or {}
            b = self.baseline_by_name.get(name)
            reference = m or b or {}
            # Baseline and candidate usually skip for the same reason: say it once.
            notes = [_reason(x) for x in (m, b) if x and x.get("status", "ok") != "ok"]
            compared = self.comparisons.get(name, {})
            sides = [("candidate", m), ("baseline", b)] if self.comparison else [("candidate", m)]
            rows.append(
                MetricRow(
                    name=name,
                    label=label(name),
                    estimator=str(reference.get("estimator") or ""),
                    status=str(reference.get("status", "ok")),
                    note=" / ".join(dict.fromkeys(notes)),
                    # Side by side, n would repeat in every cell: it moves beside the estimator instead.
                    candidate=_cell(m, with_n=not self.comparison),
                    baseline=_cell(b, with_n=False) if self.comparison else None,
                    delta=_delta_cell(self.comparisons.get(name)) if self.comparison else None,
                    p=format_p(compared.get("p_value")) if self.comparison else "",
                    test=_test(compared) if self.comparison else "",
                    context=_context(reference, with_n=self.comparison),
                    flags=_flags(sides),
                )
            )
        return rows

    def names_in(self, family: str) -> list[str]:
        """Candidate order first; a metric only the baseline has is listed after, not dropped."""
        names = [m["name"] for m in self.candidate if m.get("family") == family]
        names += [m["name"] for m in self.baseline if m.get("family") == family and m["name"] not in names]
        return names

    def families(self) -> list[str]:
        present = (
            {m.get("family") for m in [*self.candidate, *self.baseline]} - {None} - _OWN_SECTION_FAMILIES
        )
        ordered = [f for f in FAMILY_ORDER if f in present]
        return ordered + sorted(str(f) for f in present - set(FAMILY_ORDER))


def _summary(ctx: _Context) -> Summary:
    summary = ctx.doc.get("summary") or {}
    status = summary.get("status")
    if status not in ("passed", "failed", "info"):
        # No stated status: a verdict still decides; without one the report only informs.
        passed = ctx.verdict.get("passed")
        status = "info" if passed is None else "passed" if passed else "failed"
    calibration = headline_calibration(ctx.candidate)
    tiles = []
    for key in KEY_METRICS:
        m = calibration if key == "calibration" else ctx.candidate_by_name.get(key)
        if m is None or m.get("status") != "ok" or m.get("value") is None:
            continue
        name, estimator = str(m["name"]), str(m.get("estimator") or "")
        tiles.append(
            Tile(
                label(name),
                _cell(m),
                _delta_cell(ctx.comparisons.get(name)) if ctx.comparison else None,
                estimator,
                note=_headline_note(m) if key == "calibration" else "",
            )
        )
    return Summary(
        status=status,
        badge={"passed": "Passed", "failed": "Failed"}.get(status, "Info"),
        headline=str(summary.get("headline") or ctx.doc.get("title") or ""),
        lines=[str(line) for line in summary.get("lines") or []],
        tiles=tiles,
        warnings=_forced_inputs(ctx.doc),
    )


def _forced_inputs(doc: Doc) -> list[str]:
    """One warning per model run on data that does not fit its input contract (``--force-data``)."""
    return [
        f"Forced: {ref} ran on data that does not fit its input contract ({'; '.join(differences)}). "
        "Its numbers describe the model on inputs it was not made for."
        for ref, differences in forced_inputs(doc)
    ]


def _headline_note(m: Mapping[str, Any]) -> str:
    """Which estimator the calibration headline is, said where the figure is (in full: Calibration)."""
    return f"calibration headline: {m['name']}, see Calibration"


def _rule_text(rule: Mapping[str, Any], unit: str | None) -> str:
    metric = str(rule.get("metric", ""))
    text = str(rule.get("kind", "")).replace("_", "-")
    if rule.get("margin") is not None:
        text += f", margin {format_margin(rule['margin'], metric)}"
    if rule.get("threshold") is not None:
        # A ratio rule's threshold is a factor of the baseline, not a value in the metric's unit.
        threshold = float(rule["threshold"])
        shown = (
            f"{trim(threshold, 3)}\u00d7 baseline"
            if "ratio" in text
            else format_value(threshold, metric, unit)
        )
        text += f", threshold {shown}"
    return text


def _rule_row(rule: Mapping[str, Any], unit: str | None) -> RuleRow:
    metric = str(rule.get("metric", ""))
    delta, delta_unit, bounds = delta_parts(
        rule.get("delta"), rule.get("delta_ci_low"), rule.get("delta_ci_high"), metric, unit
    )
    badge, kind = rule_badge(rule)
    outside = outside_interval_note(
        rule.get("delta"), rule.get("delta_ci_low"), rule.get("delta_ci_high"), {}
    )
    return RuleRow(
        label=label(metric),
        rule=_rule_text(rule, unit),
        baseline=format_value(rule.get("baseline"), metric, unit),
        candidate=format_value(rule.get("candidate"), metric, unit),
        delta=Cell(delta, delta_unit, bounds, outside=outside),
        p=format_p(rule.get("p_value")),
        p_adjusted=format_p(rule.get("p_adjusted")),
        test=describe_test(rule.get("test"), rule.get("alternative"))
        if rule.get("p_value") is not None
        else "",
        badge=badge,
        result=kind,
        gated=bool(rule.get("gated", True)),
        message=str(rule.get("message") or ""),
        flagged=bool(rule.get("flags")),
    )


def _level(policy: Mapping[str, Any], rules: Sequence[Mapping[str, Any]]) -> str:
    """'family-wise error rate α = 0.05 across the 3 gated rules (Holm's step-down); every rule is a
    one-sided test ...': the level and the sidedness the verdict records, never assumed."""
    alpha = trim(float(policy["alpha"]), 3) if policy.get("alpha") is not None else DASH
    gated = sum(1 for r in rules if r.get("gated", True))
    informational = len(rules) - gated
    text = f"family-wise error rate \u03b1 = {alpha} across the {gated} gated rule{'s' if gated != 1 else ''}"
    text += " (Holm's step-down)"
    judged = [r for r in rules if r.get("p_value") is not None]
    sides = Counter(sidedness(r.get("alternative")) or "of unstated sidedness" for r in judged)
    if set(sides) == {"one-sided"}:
        text += "; every rule is a one-sided test of its own margin, minimum effect or threshold"
    elif sides:
        text += "; the rules' tests: " + ", ".join(f"{n} {side}" for side, n in sorted(sides.items()))
    if informational == 1:
        text += "; 1 informational rule is judged alone at \u03b1 and never decides"
    elif informational:
        text += f"; {informational} informational rules are judged alone at \u03b1 and never decide"
    return text


def mde_sentences(mde: Mapping[str, Any]) -> list[str]:
    """``{"accuracy": 0.006, "n": 10000, "discordance": 0.04, ...}`` as one plain sentence per metric."""
    n = mde.get("n")
    power = mde.get("power")
    context = f"With n={format_count(n)}" if n is not None else "With this test set"
    if mde.get("discordance") is not None:
        context += f" and {trim(100 * float(mde['discordance']), 1)}% discordant pairs"
    tail = f" at {trim(100 * float(power), 0)}% power" if power is not None else ""
    if mde.get("alpha") is not None:
        tail += f" (two-sided McNemar test, \u03b1 = {trim(float(mde['alpha']), 3)})"
    sentences = []
    for metric, value in mde.items():
        if metric in _MDE_CONTEXT_KEYS or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        size = f"{trim(100 * value, 2)} points" if is_rate(metric) else format_margin(value, metric)
        sentences.append(
            f"{context}, this test set detects {metric.replace('_', ' ')} changes of {size}{tail}."
        )
    return sentences


def _forest(ctx: _Context) -> Figure | None:
    """Deltas of the rate metrics (points), so one axis fits them all; efficiency lives in its own table."""
    margins = {
        r.get("metric"): float(r["margin"]) * 100
        for r in ctx.verdict.get("rules") or []
        if r.get("margin") is not None and "inferiority" in str(r.get("kind", ""))
    }
    rows = []
    for name, c in ctx.comparisons.items():
        values = (c.get("delta"), c.get("delta_ci_low"), c.get("delta_ci_high"))
        if (
            c.get("status", "ok") != "ok"
            or any(v is None for v in values)
            or c.get("family") in _OWN_SECTION_FAMILIES
        ):
            continue
        if not is_rate(name, c.get("unit"), c.get("family")):
            continue
        delta, lo, hi = (100 * float(v) for v in values)  # type: ignore[arg-type]
        rows.append(plots.ForestRow(label(name), delta, lo, hi, c.get("higher_is_better"), margins.get(name)))
    if not rows:
        return None
    title = "Paired differences, candidate \u2212 baseline, with 95% intervals"
    svg = plots.forest_svg(rows, key="forest", title=title, xlabel="difference (percentage points)")
    return Figure(title, Markup(svg))


def _gate(ctx: _Context) -> Section:
    title = "Gate rules"
    if not ctx.verdict:
        return Section("gate", title, missing="the document has no verdict (no policy was evaluated).")
    policy = ctx.verdict.get("policy") or {}
    rules = [_rule_row(r, ctx.unit(str(r.get("metric", "")))) for r in ctx.verdict.get("rules") or []]
    churn = [
        MetricRow(
            m["name"],
            label(m["name"]),
            str(m.get("estimator") or ""),
            str(m.get("status", "ok")),
            _cell(m),
            note=_reason(m) if m.get("status", "ok") != "ok" else "",
        )
        for m in ctx.verdict.get("churn") or []
    ]
    mde = mde_sentences(ctx.verdict.get("mde") or {})
    content = GateContent(
        policy=str(policy.get("name") or "unnamed"),
        source=str(policy.get("source") or ""),
        level=_level(policy, ctx.verdict.get("rules") or []),
        rules=rules,
        mde=mde,
        churn=churn,
        rules_missing=None if rules else "the policy has no rules.",
        mde_missing=None if mde else "the verdict has no minimum detectable effect.",
        churn_missing=None if churn else "the verdict has no prediction churn.",
    )
    return Section("gate", title, content)


def _text(value: Any, *, code: bool = False, title: str = "") -> Text:
    if value is None or value == "":
        return Text("not declared", muted=True)
    return Text(str(value), title=title, code=code)


def _digest(value: Any) -> Text:
    if not value:
        return _text(None)
    text = str(value)
    return Text(text[:19] + "\u2026" if len(text) > 20 else text, title=text, code=True)


_CARD_FIELDS = (
    ("Architecture", "architecture"),
    ("Parameters", "parameters"),
    ("Runtime", "backend"),
    ("Recipe", "recipe"),
    ("Intended use", "intended_use"),
    ("Training data", "training_data"),
    ("Limitations", "limitations"),
    ("Licence", "licence"),
)
_TRAINING_FIELDS = {
    "epochs": "Epochs",
    "seconds": "Training time",
    "precision": "Precision",
    "energy_j": "Energy",
    "co2_g": "Carbon",
    "seed": "Seed",
}


def _card_value(key: str, card: Mapping[str, Any]) -> Text:
    value = card.get(key)
    if key == "parameters" and value is not None:
        return Text(f"{format_value(value, 'parameters', 'count')} ({format_count(value)})")
    return _text(value, code=key == "architecture")


def _training_value(key: str, training: Mapping[str, Any]) -> Text:
    value = training.get(key)
    if value is None:
        return _text(None)
    if key == "seconds":
        return Text(format_duration(value))
    if key == "energy_j":
        method = training.get("energy_method")
        return Text(format_value(value, "energy", "J") + (f" ({method})" if method else ""))
    if key == "co2_g":  # from the energy and ASSAY_GRID_G_PER_KWH (assay.train.energy)
        return Text(format_value(value, "co2", "g CO2e"))
    return Text(str(value))


def _models(ctx: _Context) -> Section:
    infos = [ctx.baseline_info, ctx.candidate_info] if ctx.comparison else [ctx.candidate_info]
    cards = [info.get("card") or {} for info in infos]
    trainings = [card.get("training") or {} for card in cards]
    fields = [
        Field("Reference", [_text(i.get("ref"), code=True) for i in infos]),
        Field("Version", [_text(i.get("version")) for i in infos]),
        Field("Parent", [_text(i.get("parent"), code=True) for i in infos]),
        Field("Artifact digest", [_digest(i.get("artifact_digest")) for i in infos]),
    ]
    fields += [Field(title, [_card_value(key, c) for c in cards]) for title, key in _CARD_FIELDS]
    fields += [
        Field(title, [_training_value(key, t) for t in trainings])
        for key, title in _TRAINING_FIELDS.items()
        if any(t.get(key) is not None for t in trainings)
    ]
    contracts = (ctx.doc.get("input_contract") or {}).get("models") or {}
    if contracts:
        described = [(contracts.get(i.get("ref")) or {}).get("contract") for i in infos]
        fields.append(Field("Input contract", [_text(d) for d in described]))
    known = {key for _, key in _CARD_FIELDS} | {"training"}
    extra = sorted({k for c in cards for k in c if k not in known})
    fields += [Field(k.replace("_", " ").capitalize(), [_text(c.get(k)) for c in cards]) for k in extra]
    columns = (
        [f"Baseline {ctx.ref('baseline')}", f"Candidate {ctx.ref('candidate')}"]
        if ctx.comparison
        else [ctx.ref("candidate")]
    )
    dataset = ctx.doc.get("dataset") or {}
    dataset_fields = [
        Field("Name", [_text(dataset.get("name"))]),
        Field("Split", [_text(dataset.get("split"))]),
        Field("Examples", [_text(format_count(dataset["n"]) if dataset.get("n") is not None else None)]),
        Field("Fingerprint", [_digest(dataset.get("fingerprint"))]),
        Field("Classes", [_text(", ".join(ctx.class_names) if ctx.class_names else None)]),
        Field("Source", [_text(dataset.get("source"), code=True)]),
        Field("Licence", [_text(dataset.get("licence"))]),
    ]
    examples = (ctx.doc.get("input_contract") or {}).get("examples")
    if examples:  # which examples every model ran on, each through its own input contract
        dataset_fields.insert(0, Field("Evaluated on", [_text(examples)]))
    content = ModelsContent(
        columns=columns,
        fields=fields if ctx.candidate_info else [],
        dataset=dataset_fields if dataset else [],
        card_missing=None if ctx.candidate_info else "the document does not describe the model.",
        dataset_missing=None if dataset else "the document does not describe the dataset.",
    )
    return Section("models", "Models and data", content)


def _metrics(ctx: _Context) -> Section:
    title = "Metrics"
    groups = [
        MetricGroup(
            f"metrics-{family}",
            FAMILY_TITLES.get(family, family.replace("_", " ").capitalize()),
            ctx.rows(ctx.names_in(family)),
        )
        for family in ctx.families()
    ]
    if not groups:
        return Section("metrics", title, missing="the document has no quality or calibration measurements.")
    per_class = {role: v for role, v in (ctx.plots.get("per_class_recall") or {}).items() if v}
    per_class_figure = None
    if per_class:
        caption = "Recall per class"
        per_class_figure = Figure(
            caption, Markup(plots.per_class_svg(per_class, key="per-class", title=caption))
        )
    content = MetricsContent(
        groups, forest=_forest(ctx) if ctx.comparison else None, per_class=per_class_figure
    )
    return Section("metrics", title, content)


def _calibration(ctx: _Context) -> Section:
    title = "Calibration"
    reliability = ctx.plots.get("reliability") or {}
    if not reliability.get("candidate"):
        return Section(
            "calibration",
            title,
            missing="the document has no reliability-diagram data.",
        )
    temperature = ctx.candidate_by_name.get("temperature")
    t_text = (
        f" (T = {format_value(temperature['value'], 'temperature')})"
        if temperature and temperature.get("value")
        else ""
    )
    candidate = "Candidate" if ctx.comparison else ctx.ref("candidate")
    panels = [
        ("baseline", "Baseline", f"Baseline {ctx.ref('baseline')}", plots.BASELINE),
        ("candidate", candidate, f"Candidate {ctx.ref('candidate')}", plots.CANDIDATE),
        (
            "candidate_after_temperature",
            f"After temperature scaling{t_text}",
            f"Candidate {ctx.ref('candidate')} after temperature scaling{t_text}",
            plots.PASS,
        ),
    ]
    figures = [
        Figure(
            caption,
            Markup(
                plots.reliability_svg(
                    reliability[key], key=f"reliability-{key}", heading=heading, title=caption, color=colour
                )
            ),
        )
        for key, heading, caption, colour in panels
        if reliability.get(key)
    ]
    missing = (
        None
        if reliability.get("candidate_after_temperature")
        else "temperature scaling was not applied (it is fitted on a validation split, never on test)."
    )
    sides = (
        [("Candidate", ctx.candidate), ("Baseline", ctx.baseline)]
        if ctx.comparison
        else [("", ctx.candidate)]
    )
    tests = [text for side, measurements in sides for text in _calibration_tests(side, measurements)]
    return Section("calibration", title, CalibrationContent(figures, _headline(ctx), tests, missing))


def _headline(ctx: _Context) -> str:
    """Which calibration estimator the summary leads with, and why when it is the plug-in ECE."""
    m = headline_calibration(ctx.candidate)
    if m is None:
        return ""
    text = f"Calibration headline: {label(str(m['name']))} \u2014 {m['name']}"
    text += f", {m['estimator']}." if m.get("estimator") else "."
    if m["name"] != "ece_debiased":
        text += (
            " No debiased calibration error was measured; the binned plug-in ECE is biased upwards at"
            " finite n."
        )
    return text


def _p_equals(p: Any) -> str:
    """``"p = 0.380"``, ``"p < 0.001"``."""
    text = format_p(p)
    return f"p < {text[1:]}" if text.startswith("<") else f"p = {text}"


def _calibration_tests(side: str, measurements: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per measurement with a calibration test (``details["calibration_test"]``)."""
    sentences = []
    for m in measurements:
        test = (m.get("details") or {}).get("calibration_test")
        if not isinstance(test, Mapping) or m.get("status", "ok") != "ok":
            continue
        name = describe_test(test.get("test"), test.get("alternative")) or "calibration test"
        null = f" against H0: {test['null']}" if test.get("null") else ""
        statistic = format_value(test.get("statistic"), str(m["name"]), m.get("unit"))
        resamples = f" ({format_count(test['n_resamples'])} resamples)" if test.get("n_resamples") else ""
        subject = f"{side} {label(str(m['name']))}" if side else label(str(m["name"]))
        sentences.append(
            f"{subject}: {name}{null}, statistic {statistic}, {_p_equals(test.get('p_value'))}{resamples}."
        )
    return sentences


def _confusion(ctx: _Context) -> Section:
    title = "Confusion matrix"
    matrices = ctx.plots.get("confusion_matrix") or {}
    if not matrices.get("candidate"):
        return Section("confusion-matrix", title, missing="the document has no confusion matrix.")
    candidate = "Candidate" if ctx.comparison else ctx.ref("candidate")
    order = [
        ("baseline", "Baseline", f"Baseline {ctx.ref('baseline')}"),
        ("candidate", candidate, f"Candidate {ctx.ref('candidate')}"),
    ]
    figures = [
        Figure(
            caption,
            Markup(
                plots.confusion_svg(
                    matrices[role], ctx.class_names, key=f"confusion-{role}", heading=heading, title=caption
                )
            ),
        )
        for role, heading, caption in order
        if matrices.get(role)
    ]
    return Section("confusion-matrix", title, FiguresContent(figures))


def _efficiency(ctx: _Context) -> Section:
    title = "Efficiency"
    names = ctx.names_in("efficiency")
    if not names:
        return Section(
            "efficiency",
            title,
            missing="the document has no efficiency measurements (a predictions file has no model to time).",
        )
    context = ctx.doc.get("efficiency") or {}
    text = f"on {context['device']}" if context.get("device") else ""
    if context.get("threads") is not None:
        text += f" with {context['threads']} threads"
    sizes = ", ".join(f"{role} {size}" for role, size in (context.get("batch_sizes") or {}).items())
    if sizes:
        text += f"; batch sizes: {sizes}"
    return Section("efficiency", title, EfficiencyContent(ctx.rows(names), text.strip()))


def _training(ctx: _Context) -> Section:
    title = "Training curve"
    curve = ctx.plots.get("training_curve")
    if not curve or not any(curve.get(k) for k in ("train_loss", "val_loss", "val_accuracy")):
        return Section(
            "training",
            title,
            missing="the document has no training history (a model evaluated from its predictions has none).",
        )
    caption = f"Training of {ctx.ref('candidate')}"
    return Section(
        "training",
        title,
        FiguresContent(
            [Figure(caption, Markup(plots.training_curve_svg(curve, key="training", title=caption)))]
        ),
    )


def _robustness_curves(ctx: _Context) -> Section:
    title = "Robustness curves"
    trust = ctx.plots.get("trust") or {}
    figures = []
    if trust.get("adversarial_curves"):
        caption = "Robust accuracy against eps (FGSM and PGD; threat model in each measurement's details)"
        svg = plots.robust_accuracy_svg(trust["adversarial_curves"], key="adversarial", title=caption)
        figures.append(Figure(caption, Markup(svg)))
    if trust.get("corruption_accuracy"):
        caption = "Accuracy against corruption severity"
        svg = plots.corruption_svg(trust["corruption_accuracy"], key="corruptions", title=caption)
        figures.append(Figure(caption, Markup(svg)))
    if not figures:
        return Section("robustness-curves", title, missing="no trust suite was run (`assay trust MODEL`).")
    return Section("robustness-curves", title, FiguresContent(figures))


def _node(key: str, value: Any) -> Node:
    name = str(key).replace("_", " ")
    if isinstance(value, Mapping):
        return Node(name, children=[_node(k, v) for k, v in value.items()]) if value else Node(name, DASH)
    if isinstance(value, list | tuple):
        if all(not isinstance(v, Mapping | list | tuple) for v in value):
            return Node(name, ", ".join(str(v) for v in value) or DASH)
        return Node(name, children=[_node(f"{i + 1}", v) for i, v in enumerate(value)])
    return Node(name, DASH if value is None else str(value))


def _evidence(e: Mapping[str, Any]) -> tuple[str, list[str], list[EvidenceItem]]:
    return str(e["title"]), list(e["iso"]), [EvidenceItem(**i) for i in e["items"]]


def _governance(ctx: _Context) -> Section:
    title = "Governance"
    g = ctx.doc.get("governance") or {}
    if not g:
        return Section("governance", title, missing="the document carries no governance map.")
    covered = [
        Subcategory(s["id"], s["title"], [_evidence(e) for e in s["evidence"]], []) for s in g["covered"]
    ]
    uncovered = [Subcategory(s["id"], s["title"], [], list(s["assay_can_supply"])) for s in g["uncovered"]]
    frameworks = g.get("frameworks") or {}
    sources = [(str(f.get("source", "")), str(f.get("url", ""))) for f in frameworks.values()]
    controls = [(c["id"], c["title"]) for c in g.get("iso_controls") or []]
    return Section(
        "governance", title, GovernanceContent(covered, uncovered, controls, sources, str(g["note"]))
    )


def _environment(ctx: _Context) -> Section:
    environment = ctx.doc.get("environment") or {}
    report = {
        k: ctx.doc.get(k) for k in ("schema", "created_at", "assay_version") if ctx.doc.get(k) is not None
    }
    nodes = [_node(k, v) for k, v in environment.items()]
    if ctx.doc.get("efficiency"):
        nodes.append(_node("efficiency context", ctx.doc["efficiency"]))
    nodes.append(_node("report", report))
    # The report's own provenance is listed even when the run's environment was not recorded.
    missing = None if environment else "the document does not record the environment it was produced in."
    return Section("environment", "Environment", EnvironmentContent(nodes), missing)


def build(doc: Doc) -> dict[str, Any]:
    """Everything the template needs, in section order (which is also the table of contents)."""
    ctx = _Context(doc)
    sections = [
        _models(ctx),
        _metrics(ctx),
        _calibration(ctx),
        _confusion(ctx),
        _efficiency(ctx),
        _robustness_curves(ctx),
        _training(ctx),
        _governance(ctx),
        _environment(ctx),
    ]
    if ctx.comparison:
        sections.insert(0, _gate(ctx))
    toc = [("summary", "Summary")] + [(s.id, s.title) for s in sections]
    dataset = doc.get("dataset") or {}
    return {
        "title": str(doc.get("title") or "assay report"),
        "kind": "comparison" if ctx.comparison else "evaluation",
        "created_at": format_timestamp(doc["created_at"]) if doc.get("created_at") else DASH,
        "assay_version": str(doc.get("assay_version") or ""),
        "dataset": f"{dataset.get('name', DASH)} / {dataset.get('split', DASH)}" if dataset else "",
        "dataset_n": format_count(dataset["n"]) if dataset.get("n") is not None else "",
        "candidate": ctx.ref("candidate"),
        "baseline": ctx.ref("baseline") if ctx.comparison else "",
        "summary": _summary(ctx),
        "sections": {s.id: s for s in sections},
        "toc": toc,
        "numbers": {section_id: i for i, (section_id, _) in enumerate(toc, 1)},
        "comparison": ctx.comparison,
    }

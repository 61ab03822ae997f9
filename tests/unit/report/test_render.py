"""The HTML page: every section, numbers with intervals, valid inline SVG, nothing external, deterministic."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import matplotlib
import pytest

from assay.errors import UsageError
from assay.report import render_html
from tests.unit.report.conftest import report_document

MakeDocument = Callable[..., dict[str, Any]]
Rendered = Callable[[str], str]
SECTIONS = [
    "summary",
    "gate",
    "models",
    "metrics",
    "calibration",
    "confusion-matrix",
    "efficiency",
    "robustness-curves",
    "training",
    "governance",
    "environment",
]


class _Text(HTMLParser):
    """Visible text (what a reader sees), whitespace collapsed; the stylesheet and SVG titles left out."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.skip += tag in ("style", "title")

    def handle_endtag(self, tag: str) -> None:
        self.skip -= tag in ("style", "title")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def text_of(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return re.sub(r"\s+", " ", "".join(parser.parts))


def section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}".*?</section>', html, re.S)
    assert match, f"no section {section_id}"
    return match.group(0)


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", html, re.S)


def test_comparison_has_every_section_in_order_and_in_the_table_of_contents(rendered: Rendered) -> None:
    html = rendered("comparison")
    positions = [html.index(f'<section id="{s}"') for s in SECTIONS]
    assert positions == sorted(positions)
    toc = re.search(r'<nav class="toc".*?</nav>', html, re.S)
    assert toc is not None
    assert re.findall(r'href="#([^"]+)"', toc.group(0)) == SECTIONS
    assert html.startswith("<!DOCTYPE html>")


def test_evaluation_has_no_gate_section_and_an_info_badge(rendered: Rendered) -> None:
    html = rendered("evaluation")
    assert '<section id="gate"' not in html
    for s in SECTIONS[2:]:
        assert f'<section id="{s}"' in html
    assert 'class="badge status-info">Info<' in html


def test_numbers_read_with_units_intervals_and_n(rendered: Rendered) -> None:
    evaluation = text_of(rendered("evaluation"))
    assert "91.2% [90.7, 91.8] (n=10,000)" in evaluation
    assert "3.1% [2.6, 3.7] (n=10,000)" in evaluation
    assert "0.2561 [0.2480, 0.2650] (n=10,000)" in evaluation
    assert "3.21 ms [3.12, 3.34] (n=100)" in evaluation
    assert "23,457 examples/s [22,900, 23,800] (n=20)" in evaluation
    assert (
        "4.6 MiB" in evaluation and "1.2 M (1,199,882)" in evaluation and "8.42 kJ (estimated)" in evaluation
    )

    comparison = text_of(rendered("comparison"))
    assert "\u22120.30 pp [\u22120.60, +0.05]" in comparison
    assert "non-inferiority, margin 0.50 pp" in comparison
    assert "0.010 0.020" in comparison  # p and Holm-adjusted p of the accuracy rule
    mde = (
        "With n=10,000 and 4% discordant pairs, this test set detects accuracy changes of 0.6 points "
        "at 80% power (two-sided McNemar test, \u03b1 = 0.05)."
    )
    assert mde in comparison
    assert "4.1% [3.7, 4.5] (n=10,000)" in comparison  # flip rate
    assert "exact McNemar" in comparison


def test_gate_rules_show_pass_fail_skip_and_messages(make_document: MakeDocument) -> None:
    doc = make_document("comparison")
    doc["plots"] = {}  # not needed here, and the slow part of rendering
    doc["summary"]["status"] = "failed"
    doc["verdict"]["rules"][0].update(passed=False, message="accuracy: lower bound below the margin")
    html = render_html(doc)
    gate = section(html, "gate")
    assert gate.count('class="pill pill-fail">FAIL<') == 1
    assert gate.count('class="pill pill-pass">pass<') == 1
    assert gate.count('class="pill pill-skipped">skipped<') == 1  # optional: does not block
    # The informational latency rule has a badge of its own, never a gated rule's pass or FAIL.
    assert gate.count('class="pill pill-info">info: would pass<') == 1
    assert gate.count('class="pill ') == 4
    assert "accuracy: lower bound below the margin" in gate
    assert "informational, not gated" in gate
    assert 'class="badge status-failed">Failed<' in html
    doc["verdict"]["rules"][2].update(passed=False)
    doc["verdict"]["rules"][3].update(required=True, passed=False)
    gate = section(render_html(doc), "gate")
    assert 'class="pill pill-info">info: would fail<' in gate  # blue, not the red of a gated failure
    assert 'class="pill pill-fail">SKIPPED: blocks the gate<' in gate


def test_no_external_resources_and_no_scripts(rendered: Rendered) -> None:
    for kind in ("comparison", "evaluation"):
        html = rendered(kind)
        assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//""", html, re.I)
        assert not re.search(r"<(?:script|link|img|iframe|object|embed)\b", html, re.I)
        assert "@import" not in html and "url(http" not in html
        assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_inline_svgs_are_valid_xml_with_unique_ids(rendered: Rendered) -> None:
    html = rendered("comparison")
    figures = svgs(html)
    # forest, per-class recall, 3 reliability diagrams, 2 confusion matrices, training curve
    assert len(figures) == 8
    for svg in figures:
        root = ET.fromstring(svg)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert root.find("{http://www.w3.org/2000/svg}title") is not None
        assert "<text" in svg  # text stays text (svg.fonttype = "none")
    ids = Counter(re.findall(r'\bid="([^"]+)"', html))
    assert [i for i, count in ids.items() if count > 1] == []
    # Every internal reference points at an id on the page.
    assert set(re.findall(r'(?:href="#|url\(#)([^")]+)', html)) <= set(ids)


def test_rendering_is_deterministic_and_closes_its_figures(
    make_document: MakeDocument, rendered: Rendered
) -> None:
    import matplotlib.pyplot as plt

    assert render_html(make_document("comparison")) == rendered("comparison")
    assert plt.get_fignums() == []
    assert matplotlib.rcParams["svg.hashsalt"] is None  # the report's style does not leak into the caller's


def test_missing_optional_sections_say_not_measured_and_why(make_document: MakeDocument) -> None:
    doc = make_document("comparison")
    doc["plots"] = {}
    doc["measurements"] = [m for m in doc["measurements"] if m["family"] != "efficiency"]
    doc["baseline_measurements"] = [m for m in doc["baseline_measurements"] if m["family"] != "efficiency"]
    del doc["environment"]
    del doc["verdict"]["mde"]
    doc["verdict"]["churn"] = []
    html = render_html(doc)
    reasons = {
        "calibration": "the document has no reliability-diagram data",
        "confusion-matrix": "the document has no confusion matrix",
        "efficiency": "the document has no efficiency measurements",
        "training": "the document has no training history",
        "environment": "does not record the environment",
    }
    for section_id, reason in reasons.items():
        body = section(html, section_id)
        assert "Not measured" in body and reason in body, section_id
        assert "<svg" not in body
    gate = text_of(section(html, "gate"))
    assert "Not measured Minimum detectable effect: the verdict has no minimum detectable effect" in gate
    assert "Not measured Churn: the verdict has no prediction churn" in gate


def test_temperature_scaling_absent_is_said(make_document: MakeDocument) -> None:
    doc = make_document("evaluation")
    doc["plots"]["reliability"]["candidate_after_temperature"] = None
    body = text_of(section(render_html(doc), "calibration"))
    assert "Not measured Temperature scaling: temperature scaling was not applied" in body


def test_a_bare_document_renders_every_section_as_not_measured() -> None:
    html = render_html({"schema": "assay.report/1", "kind": "comparison", "title": "bare"})
    for section_id in SECTIONS[1:]:
        assert "Not measured" in section(html, section_id), section_id
    assert 'class="badge status-info">Info<' in html  # no verdict, no stated status: nothing passed or failed
    failed = render_html({"kind": "comparison", "title": "bare", "verdict": {"passed": False, "rules": []}})
    assert 'class="badge status-failed">Failed<' in failed


def test_skipped_and_error_measurements_show_their_reason(rendered: Rendered) -> None:
    for kind in ("evaluation", "comparison"):
        html = rendered(kind)
        metrics = section(html, "metrics")
        assert re.search(
            r'<tr class="row-skipped"[^>]*>.*?needs at least 6 classes in the predictions file', metrics, re.S
        )
        assert re.search(r'<tr class="row-error"[^>]*>.*?ValueError: bins must be increasing', metrics, re.S)
        assert "RAPL counters are not readable on this machine" in section(html, "efficiency")


def test_untrusted_names_are_escaped(make_document: MakeDocument) -> None:
    doc = make_document("comparison")
    evil = "<script>alert(1)</script>"
    doc["title"] = evil
    doc["models"]["candidate"]["ref"] = evil
    doc["models"]["candidate"]["card"]["intended_use"] = evil
    doc["dataset"]["class_names"][0] = evil
    doc["summary"]["lines"].append(evil)
    html = render_html(doc)
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for svg in svgs(html):  # class names and the ref inside the figures are escaped too
        ET.fromstring(svg)


def test_rejects_what_it_cannot_render(make_document: MakeDocument) -> None:
    with pytest.raises(UsageError, match=r"schema 'assay\.report/9'"):
        render_html({**make_document(), "schema": "assay.report/9"})
    with pytest.raises(UsageError, match="'kind' must be"):
        render_html({**make_document(), "kind": "audit"})
    with pytest.raises(UsageError, match="must be a dict"):
        render_html([])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"object at 'document.environment.handle'"):
        render_html({**make_document(), "environment": {"handle": object()}})


def test_robustness_curves_are_drawn_when_the_trust_suite_ran() -> None:
    document = report_document("evaluation")
    plain = render_html(document)
    section = plain[plain.index('<section id="robustness-curves"') :].split("</section>")[0]
    assert "Not measured" in section and "assay trust" in section
    linf = {"eps": [0, 0.05, 0.1], "fgsm": [0.9, 0.4, 0.1], "pgd": [0.9, 0.3, 0.0]}
    noise = {"gaussian_noise": [0.8, 0.7, 0.6, 0.5, 0.4]}
    trust = {
        "adversarial_curves": {"linf": linf},
        "corruption_accuracy": {"clean": 0.9, "severities": [1, 2, 3, 4, 5], "accuracy": noise},
    }
    drawn = render_html({**document, "plots": {**document["plots"], "trust": trust}})
    section = drawn[drawn.index('<section id="robustness-curves"') :].split("</section>")[0]
    assert section.count('<svg class="plot"') == 2 and "Not measured" not in section


def _row(html: str, name: str) -> str:
    """The table row of the metric ``name`` (its <code> label), as HTML."""
    match = re.search(
        rf"<tr class=\"row-[a-z]+\"[^>]*>(?:(?!</tr>).)*?<code>{re.escape(name)}</code>.*?</tr>", html, re.S
    )
    assert match, f"no row {name}"
    return match.group(0)


def test_p_values_name_their_test_and_sidedness_beside_them(rendered: Rendered) -> None:
    html = rendered("comparison")
    # The accuracy rule's one-sided non-inferiority test, in the cell after its p and Holm-adjusted p...
    assert re.search(
        r'<td class="num">0\.010</td>\s*<td class="num">0\.020</td>\s*<td class="test">one-sided paired '
        r"bootstrap</td>",
        section(html, "gate"),
    )
    # ... and the metrics table's two-sided test of no difference for the same metric, in its row.
    accuracy = _row(section(html, "metrics"), "accuracy")
    assert re.search(r'<td class="num">0\.010</td>\s*<td class="test">two-sided exact McNemar</td>', accuracy)
    assert "Test (H0: no difference)" in section(html, "metrics")


def test_the_policy_header_states_the_family_wise_level_and_one_sided_rules(
    rendered: Rendered, make_document: MakeDocument
) -> None:
    lead = re.search(r'<p class="lead policy-level">.*?</p>', section(rendered("comparison"), "gate"), re.S)
    assert lead is not None
    text = text_of(lead.group(0))
    assert "family-wise error rate \u03b1 = 0.05 across the 3 gated rules (Holm's step-down)" in text
    assert "every rule is a one-sided test of its own margin, minimum effect or threshold" in text
    assert "1 informational rule is judged alone at \u03b1 and never decides" in text
    assert "two-sided" not in text
    # A verdict that does not record its rules' sidedness gets no claim about it.
    doc = make_document("comparison")
    doc["plots"] = {}
    for rule in doc["verdict"]["rules"]:
        rule.pop("alternative", None)
    lead = re.search(r'<p class="lead policy-level">.*?</p>', section(render_html(doc), "gate"), re.S)
    assert lead is not None
    text = text_of(lead.group(0))
    assert "the rules' tests: 3 of unstated sidedness" in text and "one-sided" not in text


def test_an_estimate_outside_its_interval_has_a_visible_note(
    rendered: Rendered, make_document: MakeDocument
) -> None:
    from tests.unit.report.conftest import MCE_NOTE

    metrics = section(rendered("evaluation"), "metrics")
    mce = text_of(_row(metrics, "mce"))
    assert f"22.5% [23.8, 66.0] (n=10,000) \u26a0 estimate outside its 95% interval \u2014 {MCE_NOTE}" in mce
    assert 'class="outside-note" role="note"' in _row(metrics, "mce")
    # The plug-in ECE carries a note too, but its estimate lies inside its interval: nothing to point at.
    assert "outside" not in text_of(_row(metrics, "ece"))
    assert metrics.count('class="outside-note"') == 1
    # Without a reason of its own the note is generic; a delta outside its interval gets one as well.
    doc = make_document("comparison")
    doc["plots"] = {}
    next(m for m in doc["measurements"] if m["name"] == "mce")["details"] = {}
    accuracy = next(c for c in doc["verdict"]["comparisons"] if c["name"] == "accuracy")
    accuracy["delta_ci_high"] = -0.004  # the delta, -0.003, now lies above its interval
    metrics = section(render_html(doc), "metrics")
    assert "\u26a0 estimate outside its 95% interval" in text_of(_row(metrics, "mce"))
    assert text_of(_row(metrics, "accuracy")).count("\u26a0 estimate outside its 95% interval") == 1


def tile_labels(html: str) -> list[str]:
    return re.findall(r'<div class="tile-label">([^<]*)</div>', section(html, "summary"))


def test_the_calibration_headline_leads_with_the_debiased_ece_and_says_which(
    rendered: Rendered, make_document: MakeDocument
) -> None:
    html = rendered("evaluation")
    assert tile_labels(html) == [
        "Accuracy",
        "Macro F1",
        "ECE (debiased)",
        "NLL",
        "Latency p50, batch 1",
        "Throughput",
    ]
    summary = text_of(section(html, "summary"))
    assert (
        "ECE (debiased) 1.2% [0.4, 2.1] (n=10,000) calibration headline: ece_debiased, see Calibration"
        in summary
    )
    calibration = text_of(section(html, "calibration"))
    assert (
        "Calibration headline: ECE (debiased) \u2014 ece_debiased, top-label, 15 equal-width bins, L2"
        in calibration
    )
    test = (
        "ECE (debiased): one-sided consistency resampling (Bröcker & Smith 2007) against H0: perfect "
        "calibration, statistic 1.2%, p = 0.380 (1,000 resamples)."
    )
    assert test in calibration
    compared = text_of(section(rendered("comparison"), "calibration"))
    assert f"Candidate {test}" in compared and "Baseline ECE (debiased): one-sided" in compared
    assert "p < 0.001 (1,000 resamples)" in compared  # the baseline's

    # Without a debiased ECE the plug-in leads, and the report says which it is and what that means.
    doc = make_document("evaluation")
    doc["measurements"] = [m for m in doc["measurements"] if m["name"] != "ece_debiased"]
    html = render_html(doc)
    assert tile_labels(html)[2] == "ECE"
    assert "calibration headline: ece, see Calibration" in text_of(section(html, "summary"))
    calibration = text_of(section(html, "calibration"))
    assert (
        "Calibration headline: ECE \u2014 ece" in calibration
        and "No debiased calibration error" in calibration
    )
    assert "consistency resampling" not in calibration


def test_a_calibration_test_without_a_stated_alternative_is_named_without_a_side(
    make_document: MakeDocument,
) -> None:
    doc = make_document("evaluation")
    debiased = next(m for m in doc["measurements"] if m["name"] == "ece_debiased")
    del debiased["details"]["calibration_test"]["alternative"]
    calibration = text_of(section(render_html(doc), "calibration"))
    assert "ECE (debiased): consistency resampling (Bröcker & Smith 2007) against H0: perfect" in calibration
    assert "sided" not in calibration


def test_flagged_timings_show_beside_their_measurement_and_their_rule(rendered: Rendered) -> None:
    from tests.unit.report.conftest import BUSY

    html = rendered("comparison")
    efficiency = section(html, "efficiency")
    assert efficiency.count('<div class="flag" role="note">') == 1
    assert f"flagged baseline: {BUSY}" in text_of(_row(efficiency, "latency_p50_b1"))
    latency = re.search(
        r'<tr class="rule rule-info">.*?</tr>\s*<tr class="rule-message.*?</tr>', section(html, "gate"), re.S
    )
    assert latency is not None
    assert "flagged timings" in text_of(
        latency.group(0)
    ) and f"judged on flagged timings (baseline: {BUSY})" in latency.group(0)
    assert '<div class="flag"' not in section(rendered("evaluation"), "efficiency")  # nothing flagged there


@pytest.fixture(scope="module")
def gate_report() -> dict[str, Any]:
    from tests.unit.report.conftest import gate_document

    return gate_document()


def test_a_gate_report_from_assay_itself_reads_unambiguously(gate_report: dict[str, Any]) -> None:
    """The same checks on a document assay made: its gate, its metrics, its timing flags."""
    from tests.unit.report.conftest import PLANTED_NOTE

    doc = {**gate_report, "plots": {}}
    rules = {r["metric"]: r for r in doc["verdict"]["rules"]}
    assert (rules["accuracy"]["test"], rules["accuracy"]["alternative"]) == ("paired bootstrap", "greater")
    flags = dict(rules["latency_p50_b1"]["flags"])
    (busy,) = flags.pop("baseline")
    assert busy.startswith("busy machine: other processes used 1.30 of its 2 cores")
    assert flags == {}  # the candidate's quiet timings carry none
    assert "timings flagged, see Efficiency: baseline latency_p50_b1" in doc["summary"]["lines"]
    html = render_html(doc)
    gate = section(html, "gate")
    assert gate.count('class="pill pill-info">info: would') == 2  # macro_f1 and latency: not gated
    assert gate.count('<td class="test">one-sided paired bootstrap</td>') == 4
    assert '<td class="test">one-sided bootstrap (unpaired)</td>' in gate
    assert "every rule is a one-sided test" in text_of(gate) and "2 informational rules" in text_of(gate)
    metrics = section(html, "metrics")
    assert re.search(r'<td class="test">two-sided exact McNemar</td>', _row(metrics, "accuracy"))
    note = f"\u26a0 estimate outside its 95% interval \u2014 {PLANTED_NOTE}"
    assert note in text_of(_row(metrics, "classwise_mce"))


def test_an_evaluation_summary_names_its_calibration_headline_and_flagged_timings() -> None:
    from assay.evaluate import evaluation_document
    from tests.unit.report.conftest import planted_assessments

    baseline, _ = planted_assessments()
    lines = evaluation_document(baseline, dataset={"name": "planted", "split": "test"}, environment={})[
        "summary"
    ]["lines"]
    debiased = next(m for m in baseline.measurements if m.name == "ece_debiased")
    assert any(
        line.startswith(f"calibration (headline: ece_debiased, {debiased.estimator}): ") for line in lines
    )
    assert "timings flagged, see Efficiency: candidate latency_p50_b1" in lines


def test_inputs_say_which_examples_each_contract_and_what_was_forced(make_document: MakeDocument) -> None:
    doc = make_document("comparison")
    base, cand = doc["models"]["baseline"]["ref"], doc["models"]["candidate"]["ref"]
    doc["input_contract"] = {
        "examples": "the test split of fashion-mnist (/usr/share/datasets/fashion-mnist): 10,000 examples",
        "models": {
            base: {"contract": "1x28x28 images in [0, 1], 10 classes, from fashion-mnist", "differences": []},
            cand: {
                "contract": "table of 784 features",
                "differences": ["kind: the model takes table inputs"],
            },
        },
        "forced": True,
    }
    html = render_html(doc)
    summary, models = text_of(section(html, "summary")), text_of(section(html, "models"))
    assert f"Forced: {cand} ran on data that does not fit its input contract (kind: the model" in summary
    assert f"Forced: {base}" not in summary and 'role="alert"' in section(html, "summary")
    assert "Evaluated on the test split of fashion-mnist" in models
    assert "Input contract 1x28x28 images in [0, 1], 10 classes, from fashion-mnist table of 784" in models

    doc["input_contract"]["models"][cand]["differences"] = []
    assert "Forced" not in text_of(render_html(doc))

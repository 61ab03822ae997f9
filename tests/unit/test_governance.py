"""The governance map: every tag names a real subcategory or control, a bad map is refused by entry, and
a report's section lists this run's own figures under the subcategories they bear on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from assay import catalogue
from assay.errors import ConfigError
from assay.format import format_interval
from assay.governance import ISO_ID, LISTED, NIST_ID, default_map_path, governance, load_map, parse_map
from assay.measurement import Measurement
from assay.report import render_html
from assay.trust import TRUST_FAMILIES
from tests.unit.report.conftest import (
    CLASS_NAMES,
    RECALL,
    gate_document,
    measurement,
    report_document,
)
from tests.unit.report.test_render import section, text_of

# The subcategories the issue names: MEASURE 2 (validity, reliability, safety, security, privacy,
# fairness, environmental impact, ...) and MANAGE 4 (post-deployment monitoring, incident response).
EXPECTED = {f"MEASURE 2.{i}" for i in range(1, 14)} | {f"MANAGE 4.{i}" for i in range(1, 4)}


def test_every_tag_names_a_subcategory_or_control_of_the_catalogue() -> None:
    gmap = load_map()
    assert set(gmap.subcategories) >= EXPECTED
    assert all(NIST_ID.fullmatch(s) for s in gmap.subcategories)
    assert all(ISO_ID.fullmatch(c) for c in gmap.controls)
    families = {e.family for e in catalogue.entries().values()} | set(TRUST_FAMILIES.names()) | {"data"}
    for e in gmap.evidence:
        assert set(e.nist) <= set(gmap.subcategories) and set(e.iso) <= set(gmap.controls), e.key
        assert set(e.families) <= families, e.key  # a family that no measurement carries never matches
    # Every control is some evidence's; of the subcategories, assay has nothing for human-subject
    # evaluations (2.2) or explanations (2.9): listed so a report names them as open.
    assert {t for e in gmap.evidence for t in e.iso} == set(gmap.controls)
    assert set(gmap.subcategories) - {t for e in gmap.evidence for t in e.nist} == {
        "MEASURE 2.2",
        "MEASURE 2.9",
    }
    assert gmap.subcategories["MEASURE 2.11"].startswith("Fairness and bias are evaluated")
    assert gmap.controls["A.6.2.4"] == "AI system verification and validation"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["evidence"][0]["nist"].append("MEASURE 2.99"), "names ['MEASURE 2.99'], which the file"),
        (lambda r: r["evidence"][0]["iso"].append("A.99.1"), "names ['A.99.1']"),
        (lambda r: r["nist"]["subcategories"].update({"Measure 2.1": "x"}), "'Measure 2.1' is not a NIST"),
        (lambda r: r["iso"]["controls"].update({"6.2.4": "x"}), "'6.2.4' is not an ISO/IEC 42001"),
        (lambda r: r["evidence"][0].update({"section": "models"}), "needs either families or a section"),
        (lambda r: r["evidence"][-1].update({"section": "nowhere"}), "section 'nowhere' is not one of"),
        (lambda r: r.pop("iso"), "needs [nist.subcategories], [iso.controls] and [[evidence]]"),
    ],
)
def test_a_bad_map_is_refused_naming_the_entry(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    raw = tomllib.loads(default_map_path().read_text())
    edit(raw)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_map(raw, Path("governance.toml"))


def test_a_gate_report_lists_its_own_figures_and_the_subcategories_it_leaves_open() -> None:
    doc = gate_document()  # a gate assay ran itself: quality, calibration, efficiency, a verdict
    section = governance(doc)
    covered = {s["id"]: s for s in section["covered"]}
    uncovered = {s["id"]: s for s in section["uncovered"]}
    assert set(covered) | set(uncovered) == set(load_map().subcategories) and not set(covered) & set(
        uncovered
    )
    # MEASURE 2.3: the candidate's accuracy, as the report formats it, linked to its row.
    accuracy = next(m for m in doc["measurements"] if m["name"] == "accuracy")
    items = [i for e in covered["MEASURE 2.3"]["evidence"] for i in e["items"]]
    assert {"name": "accuracy", "value": format_interval(accuracy), "href": "#metric-accuracy"} in items
    gate = [i for e in covered["MEASURE 2.13"]["evidence"] for i in e["items"]]
    passed = "passed" if doc["verdict"]["passed"] else "failed"
    assert gate == [
        {"name": "gate", "value": f"{passed}, {len(doc['verdict']['rules'])} rule(s)", "href": "#gate"}
    ]
    # No privacy or fairness family ran, and serving evidence is never part of a gate report.
    for open_id in ("MEASURE 2.10", "MEASURE 2.11", "MEASURE 2.4", "MANAGE 4.1", "MANAGE 4.3"):
        assert open_id in uncovered, open_id
    assert any("assay serve" in s for s in uncovered["MANAGE 4.1"]["assay_can_supply"])
    assert uncovered["MEASURE 2.2"]["assay_can_supply"] == []  # human subjects: nothing of assay's
    assert "not conformance" in section["note"]
    assert {c["id"] for c in section["iso_controls"]} >= {"A.6.2.4", "A.6.2.5"}


def _items(section: dict[str, Any], sid: str) -> list[dict[str, str]]:
    (sub,) = [s for s in section["covered"] if s["id"] == sid]
    return [i for e in sub["evidence"] for i in e["items"]]


def test_an_evaluation_report_lists_its_own_figures_and_leaves_privacy_open() -> None:
    from assay.evaluate import evaluation_document
    from tests.unit.report.conftest import planted_assessments

    _, candidate = planted_assessments()  # assessed by assay: quality, calibration, a latency
    doc = evaluation_document(candidate, dataset={"name": "planted", "split": "test"}, environment={})
    section = governance(doc)
    # The accuracy as the report shows it, formatted here by hand: a rate in percent, one decimal.
    acc = next(m for m in doc["measurements"] if m["name"] == "accuracy")
    expected = f"{100 * acc['value']:.1f}% [{100 * acc['ci_low']:.1f}, {100 * acc['ci_high']:.1f}]"
    for sid in ("MEASURE 2.3", "MEASURE 2.5"):
        assert {"name": "accuracy", "value": expected, "href": "#metric-accuracy"} in _items(section, sid)
    uncovered = {s["id"]: s for s in section["uncovered"]}
    # No trust family ran, an evaluation has no gate, and no model assay trained has a training record.
    for open_id in (
        "MEASURE 2.6",
        "MEASURE 2.7",
        "MEASURE 2.10",
        "MEASURE 2.11",
        "MEASURE 2.12",
        "MEASURE 2.13",
    ):
        assert open_id in uncovered, open_id
    # What is open says what would supply it.
    assert uncovered["MEASURE 2.10"]["assay_can_supply"] == [
        "Membership-inference risk of the training data (assay trust MODEL --families privacy)"
    ]
    # The privacy family ran: 2.10 has its figure, and A.5.4 joins the controls.
    mia = Measurement("mia_auc[loss]", "privacy", 0.512, 0.49, 0.534, n=400, higher_is_better=False)
    section = governance({**doc, "measurements": [*doc["measurements"], mia.to_dict()]})
    assert _items(section, "MEASURE 2.10") == [
        {"name": "mia_auc[loss]", "value": format_interval(mia.to_dict()), "href": "#metric-mia_auc[loss]"}
    ]
    assert "A.5.4" in {c["id"] for c in section["iso_controls"]}


def test_many_figures_of_one_kind_are_summarised_and_training_energy_reads_as_on_the_model_card() -> None:
    doc = report_document("evaluation")  # recall of three classes among its quality measurements
    shown = {m["name"] for m in doc["measurements"]}
    doc["measurements"] += [  # and of the other seven, as a run that measures every class has them
        measurement(f"recall[{c}]", "quality", r, r - 0.02, r + 0.02)
        for c, r in zip(CLASS_NAMES, RECALL, strict=True)
        if f"recall[{c}]" not in shown
    ]
    recalls = [m for m in doc["measurements"] if m["name"].startswith("recall[")]
    assert len(recalls) == 10 > LISTED
    items = _items(governance(doc), "MEASURE 2.3")
    low, high = min(m["value"] for m in recalls), max(m["value"] for m in recalls)
    summary = f"10 figures, {100 * low:.1f}% to {100 * high:.1f}%"
    href = f"#metric-{recalls[0]['name']}"
    assert {"name": "recall[\u2026]", "value": summary, "href": href} in items
    assert [i["name"] for i in items if i["name"].startswith("recall[")] == ["recall[\u2026]"]
    # Up to LISTED of a kind stay one by one, each with its interval.
    doc["measurements"] = [m for m in doc["measurements"] if m not in recalls[LISTED:]]
    listed = [i for i in _items(governance(doc), "MEASURE 2.3") if i["name"].startswith("recall[")]
    assert listed == [
        {"name": m["name"], "value": format_interval(m), "href": f"#metric-{m['name']}"}
        for m in recalls[:LISTED]
    ]
    # MEASURE 2.12: the training record of the card, in the words the Models section uses.
    (energy,) = _items(governance(doc), "MEASURE 2.12")
    assert energy["value"] == "8.42 kJ (estimated), 0.94 g CO2e"
    models = text_of(section(render_html(doc), "models"))
    assert "8.42 kJ (estimated)" in models and "0.94 g CO2e" in models


@pytest.mark.parametrize("kind", ["evaluation", "comparison", "gate"])
def test_every_link_of_the_governance_section_lands_on_one_element_of_the_report(kind: str) -> None:
    doc = gate_document() if kind == "gate" else report_document(kind)
    page = render_html(doc)
    links = re.findall(r'href="#([^"]+)"', section(page, "governance"))
    assert "metric-accuracy" in links and ("gate" in links) == (kind != "evaluation")
    for target in set(links):
        assert page.count(f'id="{target}"') == 1, target

"""The governance map: which of a report's measurements and checks bear on which NIST AI RMF 1.0
subcategories and ISO/IEC 42001 Annex A controls, with their numbers, and which subcategories this run
leaves without evidence.

The map is one data file, ``assay/governance.toml`` (its header gives the sources); :func:`load_map`
validates it (every tag must name an entry of its own catalogue). :func:`governance` reads a report
document (an evaluation or a gate) and returns the section the JSON and the HTML report carry. Evidence
toward a subcategory is not conformance with it, and the section says so.

Example:
    >>> doc = {"kind": "evaluation", "measurements": [
    ...     {"name": "accuracy", "family": "quality", "value": 0.9, "ci_low": 0.88, "ci_high": 0.92}]}
    >>> section = governance(doc)
    >>> [(s["id"], [e["key"] for e in s["evidence"]]) for s in section["covered"]]
    [('MEASURE 2.3', ['quality']), ('MEASURE 2.5', ['quality'])]
    >>> "MEASURE 2.11" in [s["id"] for s in section["uncovered"]]
    True
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from assay.errors import ConfigError
from assay.format import format_count, format_interval, format_value

NIST_ID = re.compile(r"(GOVERN|MAP|MEASURE|MANAGE) \d+\.\d+")
ISO_ID = re.compile(r"A\.\d+(\.\d+){1,2}")
SECTIONS = ("training_energy", "verdict", "dataset", "models", "serving")  # evidence found outside families
# A trust run has dozens of qualified figures of one kind (65 corruption_accuracy[c@s], 84 OOD detection
# figures); past this many, the section gives their count and range, and the metrics table keeps each one.
LISTED = 6
NOT_CONFORMANCE = (
    "Evidence toward a subcategory is not conformance with it: the frameworks also ask for policies, roles "
    "and processes that no measurement replaces. Subcategories without evidence here are what a reviewer "
    "still has to supply, from this tool's other runs (serving, the data audit) or from elsewhere."
)


@dataclass(frozen=True)
class Evidence:
    """One kind of evidence: found in a report by measurement ``families`` or in a document ``section``,
    bearing on ``nist`` subcategories and ``iso`` controls; ``run`` says what produces it."""

    key: str
    title: str
    families: tuple[str, ...]
    section: str | None
    nist: tuple[str, ...]
    iso: tuple[str, ...]
    run: str = ""


@dataclass(frozen=True)
class GovernanceMap:
    """The parsed governance.toml: both frameworks' catalogues (id -> title) and the evidence map."""

    nist_source: str
    nist_url: str
    subcategories: dict[str, str]  # id -> title
    iso_source: str
    iso_url: str
    controls: dict[str, str]
    evidence: tuple[Evidence, ...]


def default_map_path() -> Path:
    """The map assay ships (package data, so it is in the wheel)."""
    return Path(str(resources.files("assay") / "governance.toml"))


def _fail(path: Path, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def parse_map(raw: Mapping[str, Any], path: Path) -> GovernanceMap:
    """The map of ``raw`` (a parsed governance.toml), or ConfigError naming the bad entry."""
    try:
        nist, iso = raw["nist"], raw["iso"]
        subcategories = {str(k): str(v) for k, v in nist["subcategories"].items()}
        controls = {str(k): str(v) for k, v in iso["controls"].items()}
        entries = list(raw["evidence"])
    except (KeyError, TypeError, AttributeError) as e:
        raise _fail(
            path, f"needs [nist.subcategories], [iso.controls] and [[evidence]] ({e!r} missing)"
        ) from None
    for sid in subcategories:
        if not NIST_ID.fullmatch(sid):
            raise _fail(path, f"{sid!r} is not a NIST AI RMF subcategory id (e.g. 'MEASURE 2.3')")
    for cid in controls:
        if not ISO_ID.fullmatch(cid):
            raise _fail(path, f"{cid!r} is not an ISO/IEC 42001 Annex A control id (e.g. 'A.6.2.4')")
    evidence = []
    for i, entry in enumerate(entries):
        key = str(entry.get("key", f"#{i}"))
        unknown = [t for t in entry.get("nist", []) if t not in subcategories]
        unknown += [t for t in entry.get("iso", []) if t not in controls]
        if unknown:
            raise _fail(path, f"evidence {key!r} names {unknown}, which the file's catalogue does not list")
        families, section = tuple(entry.get("families", ())), entry.get("section")
        if bool(families) == (section is not None):
            raise _fail(path, f"evidence {key!r} needs either families or a section, not both")
        if section is not None and section not in SECTIONS:
            raise _fail(path, f"evidence {key!r}: section {section!r} is not one of {', '.join(SECTIONS)}")
        if not entry.get("nist") and not entry.get("iso"):
            raise _fail(path, f"evidence {key!r} bears on nothing (no nist or iso tags)")
        evidence.append(
            Evidence(
                key,
                str(entry.get("title", key)),
                families,
                section,
                tuple(entry.get("nist", ())),
                tuple(entry.get("iso", ())),
                str(entry.get("run", "")),
            )
        )
    return GovernanceMap(
        str(nist.get("source", "")), str(nist.get("url", "")), subcategories,
        str(iso.get("source", "")), str(iso.get("url", "")), controls, tuple(evidence),
    )  # fmt: skip


@functools.cache
def load_map(path: Path | None = None) -> GovernanceMap:
    """The governance map at ``path`` (default: the one assay ships), validated."""
    path = path or default_map_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise _fail(path, f"not a readable TOML file ({e})") from None
    return parse_map(raw, path)


def _figures(measured: list[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Each measurement as the report writes it (value and interval), linked to its row of the metrics
    table; more than :data:`LISTED` qualified figures of one kind (``recall[...]``) as count and range."""
    kinds: dict[str, list[Mapping[str, Any]]] = {}
    for m in measured:
        name = str(m["name"])
        kinds.setdefault(f"{name.partition('[')[0]}[\u2026]" if "[" in name else name, []).append(m)
    items = []
    for kind, ms in kinds.items():
        if len(ms) > LISTED:
            low, high = min(ms, key=lambda m: m["value"]), max(ms, key=lambda m: m["value"])
            span = [
                format_value(m["value"], str(m["name"]), m.get("unit"), family=m.get("family"))
                for m in (low, high)
            ]
            items.append(
                {
                    "name": kind,
                    "value": f"{len(ms)} figures, {span[0]} to {span[1]}",
                    "href": f"#metric-{ms[0]['name']}",
                }
            )
        else:
            items += [
                {"name": str(m["name"]), "value": format_interval(m), "href": f"#metric-{m['name']}"}
                for m in ms
            ]
    return items


def _items(evidence: Evidence, doc: Mapping[str, Any]) -> list[dict[str, str]]:
    """What ``doc`` holds of ``evidence``: each figure in words, with the anchor it has in the report."""
    if evidence.families:
        measured = [
            m
            for m in doc.get("measurements") or []
            if m.get("family") in evidence.families
            and m.get("status", "ok") == "ok"
            and m.get("value") is not None
        ]
        return _figures(measured)
    if evidence.section == "verdict":
        verdict = doc.get("verdict") or {}
        if verdict.get("passed") is None:
            return []
        rules = verdict.get("rules") or []
        words = f"{'passed' if verdict['passed'] else 'failed'}, {len(rules)} rule(s)"
        return [{"name": "gate", "value": words, "href": "#gate"}]
    if evidence.section == "dataset":
        dataset = doc.get("dataset") or {}
        if not dataset.get("fingerprint"):
            return []
        value = f"{dataset.get('name')} / {dataset.get('split')}, n={format_count(dataset.get('n'))}"
        return [{"name": "dataset", "value": value, "href": "#models"}]
    models = doc.get("models") or {}
    if evidence.section == "models":
        refs = [str(info["ref"]) for info in models.values() if isinstance(info, Mapping) and info.get("ref")]
        return [{"name": "model card", "value": ", ".join(refs), "href": "#models"}] if refs else []
    if evidence.section == "training_energy":
        out = []
        for info in models.values():
            training = ((info or {}).get("card") or {}).get("training") or {}
            if training.get("energy_j") is not None:
                # As the model card writes it (report.sections), with the carbon where it was recorded.
                value = format_value(training["energy_j"], "energy", "J")
                if training.get("energy_method"):
                    value += f" ({training['energy_method']})"
                if training.get("co2_g") is not None:
                    value += f", {format_value(training['co2_g'], 'co2', 'g CO2e')}"
                out.append(
                    {"name": f"training energy of {info.get('ref')}", "value": value, "href": "#models"}
                )
        return out
    return []  # "serving": evidence of another run


def governance(doc: Mapping[str, Any], gmap: GovernanceMap | None = None) -> dict[str, Any]:
    """The governance section of a report document: each NIST subcategory with the evidence this run
    holds for it (and the ISO controls that evidence supports), then those with none."""
    gmap = gmap or load_map()
    found = {e.key: items for e in gmap.evidence if (items := _items(e, doc))}
    covered, uncovered = [], []
    for sid, title in gmap.subcategories.items():
        bearing = [e for e in gmap.evidence if sid in e.nist]
        present = [
            {"key": e.key, "title": e.title, "iso": list(e.iso), "items": found[e.key]}
            for e in bearing
            if e.key in found
        ]
        entry = {"id": sid, "title": title}
        if present:
            covered.append({**entry, "evidence": present})
        else:
            sources = [f"{e.title} ({e.run})" if e.run else e.title for e in bearing]
            uncovered.append({**entry, "assay_can_supply": sources})
    controls = sorted({c for e in gmap.evidence if e.key in found for c in e.iso})
    return {
        "frameworks": {
            "nist": {"source": gmap.nist_source, "url": gmap.nist_url},
            "iso": {"source": gmap.iso_source, "url": gmap.iso_url},
        },
        "covered": covered,
        "uncovered": uncovered,
        "iso_controls": [{"id": c, "title": gmap.controls[c]} for c in controls],
        "note": NOT_CONFORMANCE,
    }

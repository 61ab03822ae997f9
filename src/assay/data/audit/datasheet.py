"""The datasheet: a Croissant 1.0 JSON-LD file whose Responsible-AI fields are filled from the audit's
measurements and from what the user declares, and the same facts as a human-readable section.

Measured (never typed in by hand): duplicates, train/test leakage, label-issue rate, class imbalance,
PII counts, outliers. Declared (``--declare FILE.toml``, keys below): where the data comes from, its
licence, how it was collected and annotated, what it is meant for.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from assay.config import validation_message
from assay.data.audit.findings import format_finding, unreliable
from assay.data.audit.inputs import AuditData
from assay.data.audit.run import AuditResult
from assay.errors import ConfigError

CROISSANT_1_0 = "http://mlcommons.org/croissant/1.0"
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
REQUIRED = ("@context", "@type", "conformsTo", "name", "description", "license", "url", "distribution")


class Declared(BaseModel):
    """What the user states about the data (everything optional; absent facts read 'not declared')."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    url: str | None = None
    licence: str | None = None
    citation: str | None = None
    version: str | None = None
    date_published: str | None = None
    source: str | None = None
    collection: str | None = None
    annotation: str | None = None
    preprocessing: str | None = None
    intended_use: str | None = None
    limitations: str | None = None
    social_impact: str | None = None
    maintenance: str | None = None

    @classmethod
    def from_file(cls, path: Path) -> Declared:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except OSError as e:
            raise ConfigError(f"Cannot read the declarations file {path}: {e.strerror}.") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e}).") from None
        try:
            return cls.model_validate(raw.get("dataset", raw))
        except ValidationError as e:
            raise ConfigError(validation_message(f"declarations file {path}", e)) from None


def _files(source: str) -> list[Path]:
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and "ubyte" in p.name)
    return []


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _get(result: AuditResult, name: str) -> Mapping[str, Any] | None:
    try:
        m = result.get(name)
    except KeyError:
        return None
    return m.to_dict() if m.status == "ok" else None


def _said(result: AuditResult, name: str, what: str) -> str | None:
    m = _get(result, name)
    if m is None:
        return None
    said = f"{what}: {m['details'].get('count', '')} of {m['n']:,}, {format_finding(m)}"
    reason = unreliable(m)
    return f"{said}: {reason}" if reason else said


def measured_facts(result: AuditResult) -> dict[str, list[str]]:
    """Sentences per datasheet topic, each quoting a measurement with its interval."""
    data = result.context.data
    facts: dict[str, list[str]] = {
        "duplicates": [],
        "leakage": [],
        "labels": [],
        "balance": [],
        "pii": [],
        "outliers": [],
    }
    for split in data.splits:
        for prefix, topic, what in (
            ("exact_duplicates", "duplicates", f"exact duplicates within {split}"),
            ("near_duplicates", "duplicates", f"near duplicates within {split}"),
            ("label_issues", "labels", f"likely label errors in {split} (confident learning)"),
            ("label_model_accuracy", "labels", f"out-of-fold accuracy of the label-issue model on {split}"),
            ("outliers", "outliers", f"outliers in {split}"),
            ("minority_class_share", "balance", f"smallest class share in {split}"),
        ):
            line = _said(result, f"{prefix}[{split}]", what)
            if line:
                facts[topic].append(line)
        ratio = _get(result, f"imbalance_ratio[{split}]")
        if ratio:
            facts["balance"].append(
                f"class imbalance ratio in {split} (largest / smallest class): {ratio['value']:.3g}"
            )
    for m in result.by_check("leakage"):
        if m.status == "ok":
            line = _said(
                result, m.name, f"{m.details['split']} examples with a copy in {m.details['against']}"
            )
            if line:
                facts["leakage"].append(line)
    counts = result.context.extra.get("pii_counts")
    if counts is not None:
        found = {k: v for k, v in counts.items() if v}
        facts["pii"].append(
            "rows holding personal data: "
            + (", ".join(f"{k} {v}" for k, v in found.items()) if found else "none found")
            + " (e-mail, phone, payment card with Luhn check, IBAN with mod-97 check, IP address, "
            "national-id patterns)"
        )
    elif data.kind == "image":
        facts["pii"].append("images: not scanned for personal data (the PII check reads text)")
    return facts


def croissant(
    result: AuditResult, declared: Declared | None = None, report: str | None = None
) -> dict[str, Any]:
    """The Croissant 1.0 JSON-LD document of the audited dataset; ``report``: the audit page beside it,
    linked (schema.org ``subjectOf``) with its governance section."""
    declared = declared or Declared()
    data: AuditData = result.context.data
    facts = measured_facts(result)

    def join(*parts: str | None) -> str:
        return " ".join(p for p in parts if p) or "not declared"

    distribution = [
        {
            "@type": "cr:FileObject",
            "@id": path.name,
            "name": path.name,
            "contentUrl": path.name,
            "encodingFormat": _encoding(path),
            "sha256": _sha256(path),
        }
        for path in _files(data.source)
    ]
    classes = {
        "@type": "cr:RecordSet",
        "@id": "classes",
        "name": "classes",
        "description": "The label classes, by index.",
        "key": {"@id": "classes/index"},
        "field": [
            {"@type": "cr:Field", "@id": "classes/index", "name": "index", "dataType": "sc:Integer"},
            {"@type": "cr:Field", "@id": "classes/name", "name": "name", "dataType": "sc:Text"},
        ],
        "data": [{"classes/index": k, "classes/name": name} for k, name in enumerate(data.class_names)],
    }
    sizes = ", ".join(f"{name} {split.n:,}" for name, split in data.splits.items())
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CROISSANT_1_0,
        "name": declared.name or data.name,
        "description": declared.description
        or f"{data.kind} dataset with {len(data.class_names)} classes ({sizes}).",
        "license": declared.licence or data.licence,
        "url": _url(declared, data),
        **({"citeAs": declared.citation} if declared.citation else {}),
        **({"version": declared.version} if declared.version else {}),
        **({"datePublished": declared.date_published} if declared.date_published else {}),
        "distribution": distribution,
        "recordSet": [classes],
        "rai:dataCollection": join(declared.source, declared.collection),
        "rai:dataAnnotationProtocol": join(declared.annotation),
        "rai:dataAnnotationAnalysis": join(*facts["labels"])
        if facts["labels"]
        else "label issues not measured",
        "rai:dataPreprocessingProtocol": join(declared.preprocessing),
        "rai:dataUseCases": join(declared.intended_use),
        "rai:dataBiases": join(*facts["balance"]),
        "rai:dataLimitations": join(
            declared.limitations, *facts["duplicates"], *facts["leakage"], *facts["outliers"]
        ),
        "rai:personalSensitiveInformation": join(*facts["pii"]),
        "rai:dataSocialImpact": join(declared.social_impact),
        "rai:dataReleaseMaintenancePlan": join(declared.maintenance),
        **(
            {
                "subjectOf": {
                    "@type": "sc:CreativeWork",
                    "name": "assay data audit, with what its findings bear on in the NIST AI RMF 1.0 and "
                    "ISO/IEC 42001 Annex A",
                    "url": f"{report}#governance",
                }
            }
            if report
            else {}
        ),
    }


_ENCODINGS = {
    ".csv": "text/csv",
    ".parquet": "application/x-parquet",
    ".npz": "application/x-npz",
    ".gz": "application/gzip",
}


def _encoding(path: Path) -> str:
    return _ENCODINGS.get(path.suffix.lower(), "application/octet-stream")


def _url(declared: Declared, data: AuditData) -> str:
    if declared.url:
        return declared.url
    path = Path(data.source)
    return path.resolve().as_uri() if path.exists() else f"urn:assay:dataset:{data.name}"


def check_croissant(document: Mapping[str, Any]) -> list[str]:
    """Problems with the fields Croissant 1.0 requires (empty when none); mlcroissant validates the rest."""
    problems = [f"missing '{key}'" for key in REQUIRED if key not in document]
    if document.get("conformsTo") != CROISSANT_1_0:
        problems.append(f"'conformsTo' must be {CROISSANT_1_0}")
    if document.get("@type") != "sc:Dataset":
        problems.append("'@type' must be sc:Dataset")
    for obj in document.get("distribution", []):
        for key in ("@id", "name", "contentUrl", "encodingFormat", "sha256"):
            if key not in obj:
                problems.append(f"distribution '{obj.get('name', '?')}' lacks '{key}'")
    return problems


def datasheet_section(result: AuditResult, declared: Declared | None = None) -> list[dict[str, str]]:
    """The human-readable datasheet: (topic, text) rows, measured facts marked as such."""
    declared = declared or Declared()
    facts = measured_facts(result)
    data = result.context.data
    rows = [
        ("Source", declared.source or data.source),
        ("Licence", declared.licence or data.licence),
        ("Collection process", declared.collection or "not declared"),
        ("Annotation", declared.annotation or "not declared"),
        ("Intended use", declared.intended_use or "not declared"),
        ("Duplicates (measured)", "; ".join(facts["duplicates"]) or "not measured"),
        ("Train/test leakage (measured)", "; ".join(facts["leakage"]) or "not measured"),
        ("Label quality (measured)", "; ".join(facts["labels"]) or "not measured"),
        ("Balance (measured)", "; ".join(facts["balance"]) or "not measured"),
        ("Outliers (measured)", "; ".join(facts["outliers"]) or "not measured"),
        ("Personal data (measured)", "; ".join(facts["pii"]) or "not measured"),
        ("Limitations", declared.limitations or "not declared"),
    ]
    return [{"topic": t, "text": x} for t, x in rows]

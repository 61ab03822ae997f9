"""The audit's outputs: a JSON document (schema ``assay.data-audit/1``), a self-contained HTML report with
thumbnails of flagged images (inline PNG), and the Croissant datasheet.

All three are rendered in memory, written to temporary files in the output folder and renamed into place
only once every one of them is complete, the JSON document last: a document whose ``status`` reads
``complete`` always sits beside the report and datasheet of the same audit, and an audit interrupted
before that point leaves none of its files and no temporary file behind (one stopped between two renames
removes those already in place). Each audit gets file names of its own (:func:`audit_stem`: the dataset's
name and a random suffix, as evaluation reports do), so a second audit never replaces the first one's.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from assay.data.audit.datasheet import Declared, croissant, datasheet_section
from assay.data.audit.findings import format_finding, unreliable
from assay.data.audit.inputs import describe
from assay.data.audit.registry import CHECKS
from assay.data.audit.run import AuditResult, summary
from assay.env import environment
from assay.errors import UsageError
from assay.governance import governance
from assay.measurement import Measurement
from assay.report.render import template_environment, to_json_safe, write_temp

SCHEMA = "assay.data-audit/1"
TEMPLATES = Path(__file__).parent / "templates"


class AuditPaths(NamedTuple):
    json: Path
    html: Path
    croissant: Path


def audit_stem(dataset: str) -> str:
    """``audit-<dataset>-<8 hex digits>``: the dataset's name (reduced to characters safe in any file
    system) and a random suffix, so two audits never share a file."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("._-") or "data"
    return f"audit-{safe}-{secrets.token_hex(4)}"


def png(image: np.ndarray, scale: int = 2) -> str:
    """A (C, H, W) or (H, W) image in [0, 1] as a data: URI of a grey or RGB PNG (scaled up, nearest)."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3:
        x = x[0] if x.shape[0] == 1 else np.moveaxis(x[:3], 0, -1)
    pixels = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def build_document(
    result: AuditResult,
    declared: Declared | None = None,
    scores: Sequence[Measurement] = (),
) -> dict[str, Any]:
    ctx = result.context
    document = {
        "schema": SCHEMA,
        "status": "complete",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": describe(ctx.data),
        "config": ctx.config.model_dump(),
        "checks": {
            name: {"description": CHECKS.get(name).description, "seconds": round(s, 3)}
            for name, s in result.seconds.items()
        },
        "summary": summary(result),
        "measurements": [m.to_dict() for m in result.measurements],
        "scores": [m.to_dict() for m in scores],
        "datasheet": datasheet_section(result, declared),
        "environment": environment({"audit": ctx.config.seed}),
    }
    clean: dict[str, Any] = to_json_safe(document)
    clean["governance"] = governance(clean)  # what the findings bear on (NIST AI RMF, ISO/IEC 42001)
    return clean


def _thumbnails(result: AuditResult, document: Mapping[str, Any]) -> dict[str, str]:
    """PNG data URIs for every image id a finding quotes."""
    ctx = result.context
    if ctx.data.kind != "image":
        return {}
    wanted: set[str] = set()
    for m in document["measurements"]:
        for example in m["details"].get("examples", []):
            if isinstance(example, dict):
                wanted.update(str(example[k]) for k in ("id", "match") if k in example)
            else:
                wanted.add(str(example))
    position = {str(i): k for k, i in enumerate(ctx.ids.tolist())}
    return {i: png(ctx.images[position[i]]) for i in sorted(wanted) if i in position}


def _rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for m in document["measurements"]:
        details = m["details"]
        value = format_finding(m, mark=False)  # the template marks an unreliable finding with a badge
        rows.append(
            {
                "name": m["name"],
                "check": details.get("check", m["name"]),
                "status": m["status"],
                "value": value,
                "count": details.get("count"),
                "n": m["n"],
                "estimator": m["estimator"],
                "examples": details.get("examples", []),
                "unreliable": unreliable(m),
                # Red means something was found; an unreliable finding is shown as such instead.
                "flag": bool(
                    m["status"] == "ok"
                    and details.get("count")
                    and not m["higher_is_better"]
                    and not unreliable(m)
                ),
            }
        )
    return rows


def render_html(result: AuditResult, document: Mapping[str, Any]) -> str:
    return (
        template_environment(TEMPLATES)
        .get_template("audit.html.j2")
        .render(doc=document, rows=_rows(document), thumbs=_thumbnails(result, document))
    )


def write_audit(
    result: AuditResult,
    out_dir: Path,
    stem: str | None = None,
    *,
    declared: Declared | None = None,
    scores: Sequence[Measurement] = (),
) -> tuple[AuditPaths, dict[str, Any]]:
    """Write ``<stem>.json``, ``<stem>.html`` and ``<stem>.croissant.json`` (``stem`` by default
    :func:`audit_stem` of the dataset's name); see the module docstring."""
    if stem is None:
        stem = audit_stem(result.context.data.name)
    if not stem or Path(stem).name != stem or stem.startswith("."):
        raise UsageError(f"The audit file stem must be a plain file name. Got {stem!r}.")
    document = build_document(result, declared, scores)
    texts = {
        "croissant": json.dumps(to_json_safe(croissant(result, declared, report=f"{stem}.html")), indent=2)
        + "\n",
        "html": render_html(result, document),
        "json": json.dumps(document, indent=2, allow_nan=False) + "\n",
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = AuditPaths(out_dir / f"{stem}.json", out_dir / f"{stem}.html", out_dir / f"{stem}.croissant.json")
    temps: dict[str, Path] = {}
    placed: list[Path] = []
    try:
        for key in ("croissant", "html", "json"):
            temps[key] = write_temp(out_dir, stem, texts[key])
        # The document that says "complete" goes last.
        for key in ("croissant", "html", "json"):
            os.replace(temps[key], getattr(paths, key))
            placed.append(getattr(paths, key))
    except BaseException:
        for path in placed:  # an audit stopped halfway through the renames leaves none of its files
            path.unlink(missing_ok=True)
        raise
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
    return paths, document

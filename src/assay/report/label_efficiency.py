"""The label-efficiency study's page and JSON (see :mod:`assay.label_efficiency` for the document)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from assay.report.plots import label_curve_svg
from assay.report.render import ReportPaths, _json, template_environment, to_json_safe, write_pair


def render_label_efficiency_html(document: Mapping[str, Any]) -> str:
    """The page: the statements, the curve with its intervals, every point and every paired verdict."""
    doc = to_json_safe(document)
    title = f"Labels needed on {doc['dataset']['name']}"
    figure = label_curve_svg(doc["points"], key="label-curve", title="Test accuracy against labels")
    page: str = (
        template_environment()
        .get_template("label_efficiency.html.j2")
        .render(doc=doc, title=title, figure=figure)
    )
    return page


def write_label_efficiency_report(document: Mapping[str, Any], out_dir: Path, stem: str) -> ReportPaths:
    """``<stem>.html`` and ``<stem>.json`` in ``out_dir``, both or neither."""
    return write_pair(
        Path(out_dir),
        stem,
        html_text=render_label_efficiency_html(document),
        json_text=_json(to_json_safe(document)),
    )

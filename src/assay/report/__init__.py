"""Reports: one self-contained HTML page and the same content as JSON, per evaluation or comparison.

    document (dict, schema "assay.report/1")
        -> render_html   one page: inline CSS and SVG, no scripts, nothing loaded from elsewhere
        -> write_report  <stem>.html + <stem>.json, written atomically

The sections, in order: summary verdict, gate rules (comparisons), model cards, metrics with intervals,
calibration, confusion matrix, efficiency, training curve, environment. A section the document has no data
for says "not measured" and why.
"""

from assay.report.render import ReportPaths, render_html, render_json, write_report

__all__ = ["ReportPaths", "render_html", "render_json", "write_report"]

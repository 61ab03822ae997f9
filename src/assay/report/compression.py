"""The compression search's report: Pareto plots, every trial with its verdict, the hardware.

The search document (schema ``assay.compression/1``, built by :mod:`assay.compress.search`) is written as
JSON verbatim and as one self-contained HTML page, both atomically, after every trial. Each point on the
plots and each row of the table is a trial; a row links to that variant's gate report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup

from assay.format import (
    DASH,
    format_delta,
    format_duration,
    format_interval,
    format_usd,
    format_value,
    format_wh,
)
from assay.report import plots
from assay.report.render import ReportPaths, _json, template_environment, to_json_safe, write_pair

# How a ratio to the parent reads: whether a higher figure is better, the word when the variant is
# better, the word when it is worse. The ratio printed is always at least 1 ("1.11x larger", never
# "0.90x smaller").
RATIO_WORDS: dict[str, tuple[bool, str, str]] = {
    "latency_p50_b1": (False, "faster", "slower"),
    "latency_p50_batch": (False, "faster", "slower"),
    "throughput": (True, "faster", "slower"),
    "size_on_disk": (False, "smaller", "larger"),
    "peak_memory": (False, "less memory", "more memory"),
}
SAME = {"faster": "as fast", "smaller": "the same size", "less memory": "the same memory"}

# The summary's headline when no variant is best, by the search's verdict (assay.compress.search.Outcome).
HEADLINES = {
    "no_improvement": "No variant improves on the parent for {objective}",
    "none_plausible": "No passing variant has plausible timings",
    "none_passed": "No variant passed the gate",
}

AXIS_TITLES = {
    "latency_p50_b1": "latency p50 at batch 1 (ms)",
    "latency_p50_batch": "latency p50 at the throughput batch (ms)",
    "size_on_disk": "size on disk (bytes)",
    "peak_memory": "peak memory of a batch (MiB)",
}


@dataclass(frozen=True)
class Row:
    key: str
    method: str
    status: str
    version: str
    accuracy: str
    delta: str
    latency: str
    speedup: str
    latency_batch: str
    throughput: str
    size: str
    size_ratio: str
    memory: str
    front: str
    link: str  # relative href of the gate report, "" if none
    notes: list[str]
    seconds: str


def _metric(point: Mapping[str, Any], name: str) -> str:
    m = point.get("metrics", {}).get(name)
    return format_interval({"name": name, **m}) if m else DASH


def _value(point: Mapping[str, Any] | None, name: str) -> float | None:
    if not point:
        return None
    value = point.get("metrics", {}).get(name, {}).get("value")
    return None if value is None else float(value)


def ratio_words(metric: str, parent: float | None, variant: float | None) -> str:
    """The variant's ``metric`` against the parent's in words, by its direction: ``"2.50x faster"``,
    ``"1.11x larger"``, ``"the same size"``; a dash when either figure is missing or zero."""
    if not parent or not variant:
        return DASH
    higher_is_better, better, worse = RATIO_WORDS[metric]
    if parent == variant:
        return SAME[better]
    gain = variant / parent if higher_is_better else parent / variant
    return f"{gain:.2f}x {better}" if gain > 1 else f"{1 / gain:.2f}x {worse}"


def _ratio(metric: str, root: Mapping[str, Any] | None, point: Mapping[str, Any], *, flags: list[str]) -> str:
    """A row's ratio to the parent; the parent's own row has none, a flagged timing is not printed."""
    if point.get("key") == "root":
        return DASH
    if flags:
        return "implausible"
    return ratio_words(metric, _value(root, metric), _value(point, metric))


def _row(
    t: Mapping[str, Any], root: Mapping[str, Any] | None, fronts: Mapping[str, list[str]], here: Path
) -> Row:
    flags = list(t.get("flags") or [])
    delta = t.get("accuracy_delta") or {}
    link = _link(t, here)
    params = ", ".join(f"{k}={v}" for k, v in (t.get("params") or {}).items())
    on = [
        axis.replace("latency_p50_", "latency ").replace("_", " ")
        for axis, keys in fronts.items()
        if t["key"] in keys
    ]
    notes = [*flags, *(t.get("notes") or [])]
    if t["status"] in ("skipped", "error") or (t["status"] == "failed" and t.get("reason")):
        notes.insert(0, str(t.get("reason", "")))
    return Row(
        key=t["key"],
        method=f"{t['method']}({params})" if params else t["method"],
        status=t["status"],
        version=t.get("version") or "",
        accuracy=_metric(t, "accuracy"),
        delta=format_delta(delta.get("delta"), delta.get("ci_low"), delta.get("ci_high"), "accuracy")
        if delta
        else DASH,
        latency=_metric(t, "latency_p50_b1"),
        speedup=_ratio("latency_p50_b1", root, t, flags=flags),
        latency_batch=_metric(t, "latency_p50_batch"),
        throughput=_metric(t, "throughput"),
        size=format_value(_value(t, "size_on_disk"), "size_on_disk", "bytes"),
        size_ratio=_ratio("size_on_disk", root, t, flags=[]),
        memory=_metric(t, "peak_memory"),
        front=", ".join(on),
        link=link,
        notes=[n for n in notes if n],
        seconds=format_duration(t.get("seconds")),
    )


def _link(point: Mapping[str, Any], here: Path) -> str:
    report = point.get("report")
    return os.path.relpath(report, here) if report else ""


def _pareto_point(point: Mapping[str, Any], cost: float, on_front: bool, here: Path) -> plots.ParetoPoint:
    """A search point on an accuracy-against-cost plot, linked to its gate report."""
    accuracy = point["metrics"]["accuracy"]
    return plots.ParetoPoint(
        label="parent" if point["key"] == "root" else point["key"],
        cost=cost,
        accuracy=float(accuracy["value"]),
        ci_low=float(accuracy["ci_low"]),
        ci_high=float(accuracy["ci_high"]),
        status="root" if point["key"] == "root" else point["status"],
        on_front=on_front,
        url=_link(point, here) or None,
    )


def _figures(doc: Mapping[str, Any], here: Path) -> list[tuple[str, Markup]]:
    root = doc.get("root")
    points = ([root] if root else []) + [t for t in doc["trials"] if t["status"] in ("passed", "failed")]
    out = []
    for axis, title in AXIS_TITLES.items():
        usable = [p for p in points if _value(p, axis) and _value(p, "accuracy") is not None]
        if not usable:
            continue
        front = set(doc["frontier"].get(axis, []))
        series = [_pareto_point(p, float(_value(p, axis) or 0), p["key"] in front, here) for p in usable]
        svg = plots.pareto_svg(series, key=f"pareto-{axis}", title=f"Accuracy against {title}", xlabel=title)
        out.append((f"Accuracy against {title}", Markup(svg)))
    return out


def _cost_figure(cost: Mapping[str, Any], doc: Mapping[str, Any], here: Path) -> tuple[str, Markup] | None:
    """Accuracy against the cost per 1,000 inferences on this machine at batch 1 (the cost axis)."""
    points = {p["key"]: p for p in [doc.get("root") or {}, *doc["trials"]] if p}
    local = next(t["name"] for t in cost["targets"] if t["kind"] == "local")
    front = set(cost["frontier"][local]["b1"])
    series = [
        _pareto_point(points[r["key"]], float(r["costs"][local]["b1"]["usd"]), r["key"] in front, here)
        for r in cost["rows"]
        if r["accuracy"] is not None and "b1" in r["costs"][local]
    ]
    if not series:
        return None
    title = f"cost per {cost['per']:,} inferences on this machine at batch 1 (USD)"
    svg = plots.pareto_svg(series, key="pareto-cost", title=f"Accuracy against {title}", xlabel=title)
    return f"Accuracy against {title}", Markup(svg)


def _cost(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cost section: the cheapest passing model per target, then every model on every target."""
    cost = doc.get("cost")
    if not cost:
        return None
    rows = {r["key"]: r for r in cost["rows"]}

    def cell(key: str | None, target: str, mode: str) -> dict[str, str]:
        c = rows[key]["costs"][target].get(mode) if key else None
        if not c:
            return {"key": DASH, "usd": DASH, "wh": DASH, "ms": DASH, "method": ""}
        return {
            "key": key or DASH,
            "usd": format_usd(c["usd"]),
            "wh": format_wh(c["wh"]),
            "ms": format_value(c["ms_per_call"], "latency_p50_b1", "ms"),
            "method": c["method"] + (f", {c['bound']}-bound" if c.get("bound") else ""),
        }

    targets = cost["targets"]
    return {
        "per": f"{cost['per']:,}",
        "modes": cost["modes"],
        "targets": [
            {**t, "usd_per_hour": format_usd(t["usd_per_hour"]), "watts": f"{t['watts']:g} W"}
            for t in targets
        ],
        "cheapest": [
            {
                "target": t["name"],
                **{m: cell(cost["cheapest"][t["name"]][m], t["name"], m) for m in cost["modes"]},
            }
            for t in targets
        ],
        "grid": {
            mode: [
                {"key": key, "status": r["status"], "cells": [cell(key, t["name"], mode) for t in targets]}
                for key, r in rows.items()
            ]
            for mode in cost["modes"]
        },
        "assumptions": cost["assumptions"],
    }


def _summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    trials = doc["trials"]
    counts = {s: sum(t["status"] == s for t in trials) for s in ("passed", "failed", "skipped", "error")}
    objective = doc["objective"]["name"]
    outcome = doc.get("outcome") or {}
    best = next((t for t in trials if t["key"] == doc.get("best")), None)
    lines = [", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no candidate tried yet"]
    if doc.get("stop_reason"):
        lines.append(f"stopped: {doc['stop_reason']}")
    if outcome.get("message"):
        lines.append(outcome["message"])
    if best:
        headline = f"Best passing variant for {objective}: {best['key']} ({best.get('version')})"
        size = _ratio("size_on_disk", doc.get("root"), best, flags=[])
        lines.append(f"size {size}; accuracy {_metric(best, 'accuracy')}")
        return {"headline": headline, "lines": lines, "status": "passed"}
    if doc["status"] == "running":
        return {"headline": "Search running", "lines": lines, "status": "info"}
    headline = HEADLINES[outcome.get("verdict", "none_passed")].format(objective=objective)
    return {"headline": headline, "lines": lines, "status": "failed"}


def _hardware(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    env = doc.get("environment") or {}
    cpu = env.get("cpu") or {}
    packages = env.get("packages") or {}
    return [
        ("CPU", str(cpu.get("model", DASH))),
        ("CPU flags", ", ".join(cpu.get("flags") or []) or "none of the tracked ones"),
        ("threads", str(cpu.get("torch_threads", DASH))),
        (
            "runtimes",
            ", ".join(
                f"{k} {v}" for k, v in packages.items() if k in ("torch", "onnxruntime", "torchao", "onnx")
            ),
        ),
        ("python", str(env.get("python", DASH))),
        ("git commit", str(env.get("git_commit") or DASH)),
    ]


def render_compression_html(document: Mapping[str, Any], here: Path) -> str:
    doc = to_json_safe(document)
    root = doc.get("root")
    rows = [_row(t, root, doc["frontier"], here) for t in doc["trials"]]
    # The search rewrites its report after every trial; drawing the figures each time cost it seconds a
    # trial, growing with the trials, so they are drawn once it has ended (or was interrupted).
    final = doc["status"] != "running"
    figures = _figures(doc, here) if final else []
    cost_figure = _cost_figure(doc["cost"], doc, here) if final and doc.get("cost") else None
    return (
        template_environment()
        .get_template("compression.html.j2")
        .render(
            title=f"Compression search: {doc['model']}",
            doc=doc,
            summary=_summary(doc),
            root=_row(
                {**root, "method": "parent (torch fp32)", "status": "root"}, root, doc["frontier"], here
            )
            if root
            else None,
            rows=rows,
            figures=figures + ([cost_figure] if cost_figure else []),
            cost=_cost(doc),
            hardware=_hardware(doc),
            policy=doc["policy"],
        )
    )


def write_compression_report(document: Mapping[str, Any], out_dir: Path, stem: str) -> ReportPaths:
    out_dir = Path(out_dir)
    html_text = render_compression_html(document, out_dir)
    return write_pair(out_dir, stem, html_text=html_text, json_text=_json(to_json_safe(document)))

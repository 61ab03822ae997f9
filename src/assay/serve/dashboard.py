"""The dashboard: server-rendered pages over the registry and the live monitor (no scripts, no CDN).

    /                    the served alias: version, readiness, traffic, live detector charts, open incidents
    /models              every model with its aliases
    /models/{name}       versions with gate status and reports, aliases and their history
    /incidents           every incident of the served model; /incidents/{id} one, with its detections
    /runs/{id}/report    a stored run's HTML report

Pages refresh themselves every few seconds (a meta refresh: the page's CSP forbids scripts). The handlers
are plain functions, which FastAPI runs in its thread pool, so the store queries behind a page never hold
up the event loop that answers predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response
from markupsafe import Markup

from assay.errors import NotFoundError
from assay.report.render import template_environment
from assay.serve.guard import incident_json

if TYPE_CHECKING:
    from assay.serve.monitor import WindowResult
    from assay.serve.service import Service

TEMPLATES = Path(__file__).with_name("templates")
CHART_W, CHART_H, PAD = 420, 120, 6


def chart(statistics: list[float], thresholds: list[float]) -> Markup:
    """One detector over the recent windows: its statistic (line) against its threshold (dashed)."""
    if not statistics:
        return Markup('<p class="muted">no window closed yet</p>')
    top = max(max(statistics), max(thresholds), 1e-12) * 1.1
    step = (CHART_W - 2 * PAD) / max(len(statistics) - 1, 1)

    def points(values: list[float]) -> str:
        return " ".join(
            f"{PAD + i * step:.1f},{CHART_H - PAD - (v / top) * (CHART_H - 2 * PAD):.1f}"
            for i, v in enumerate(values)
        )

    alarms = "".join(
        f'<circle cx="{PAD + i * step:.1f}" cy="{CHART_H - PAD - (s / top) * (CHART_H - 2 * PAD):.1f}" r="3" '
        'class="alarm"/>'
        for i, (s, t) in enumerate(zip(statistics, thresholds, strict=True))
        if s > t
    )
    return Markup(
        f'<svg viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}" role="img" '
        'class="chart">'
        f'<polyline points="{points(thresholds)}" class="threshold"/>'
        f'<polyline points="{points(statistics)}" class="statistic"/>{alarms}</svg>'
    )


def detector_series(windows: list[WindowResult]) -> dict[str, dict[str, Any]]:
    """One chart per detector and stream: feedback windows close at their own pace, on other rows."""
    series: dict[str, dict[str, Any]] = {}
    for window in windows:
        for r in window.results:
            name = r.name if window.stream == "traffic" else f"{r.name} ({window.stream})"
            s = series.setdefault(name, {"statistics": [], "thresholds": [], "alarms": 0})
            s["statistics"].append(float(r.statistic))
            s["thresholds"].append(float(r.threshold))
            s["alarms"] += int(r.alarm)
    for s in series.values():
        s["chart"] = chart(s["statistics"], s["thresholds"])
        s["last"] = s["statistics"][-1]
        s["threshold"] = s["thresholds"][-1]
    return series


def window_row(window: WindowResult) -> dict[str, str]:
    """One line of the latest-windows table, formatted (rates in percent)."""
    s = window.summary
    accuracy = s.get("accuracy")
    return {
        "window": str(window.index),
        "examples": str(window.n),
        "alarmed detectors": ", ".join(window.alarms) or "none",
        "mean confidence": f"{100 * s['mean_confidence']:.1f}%",
        "OOD rate": f"{100 * s['ood_rate']:.1f}%",
        "accuracy (labelled)": "n/a" if accuracy is None else f"{100 * accuracy:.1f}% of {s['n_labelled']}",
    }


def dashboard_router(service: Service) -> APIRouter:
    router = APIRouter()
    env = template_environment(TEMPLATES)
    env.globals["style"] = Markup(
        (Path(__file__).parents[1] / "report" / "templates" / "style.css").read_text()
    )
    store = service.ws.store

    def page(name: str, title: str, refresh: int | None = None, **context: Any) -> HTMLResponse:
        html = env.get_template("dashboard.html.j2").render(
            page=name, title=title, refresh=refresh, status=service.status(), **context
        )
        return HTMLResponse(html)

    @router.get("/", response_class=HTMLResponse)
    def overview() -> HTMLResponse:
        served = service.current
        monitor = served.monitor if served is not None else None
        windows = monitor.recent(100) if monitor is not None else []
        feedback = monitor.recent(100, "feedback") if monitor is not None else []
        incidents = [incident_json(i) for i in store.list_incidents(service.model, service.alias)]
        return page(
            "overview",
            f"{service.model}@{service.alias}",
            refresh=5,
            series=detector_series(windows + feedback),
            n_windows=len(windows),
            windows=[window_row(w) for w in windows[-10:]][::-1],
            incidents=incidents[::-1][:10],
            history=store.alias_history(service.model, service.alias)[::-1][:10],
        )

    @router.get("/models", response_class=HTMLResponse)
    def models() -> HTMLResponse:
        return page("models", "Models", models=store.list_models())

    @router.get("/models/{name}", response_class=HTMLResponse)
    def model(name: str) -> Response:
        try:
            versions = store.list_versions(name)
        except NotFoundError as e:
            return HTMLResponse(f"<p>{Markup.escape(str(e))}</p>", status_code=404)
        runs = {v.version: store.runs_for(v.ref) for v in versions}
        return page(
            "model", name, versions=versions[::-1], runs=runs, history=store.alias_history(name)[::-1]
        )

    @router.get("/incidents", response_class=HTMLResponse)
    def incidents() -> HTMLResponse:
        found = [incident_json(i) for i in store.list_incidents(service.model)]
        return page("incidents", "Incidents", refresh=5, incidents=found[::-1])

    @router.get("/incidents/{incident_id}", response_class=HTMLResponse)
    def incident(incident_id: int) -> Response:
        try:
            found = incident_json(store.get_incident(incident_id))
        except NotFoundError as e:
            return HTMLResponse(f"<p>{Markup.escape(str(e))}</p>", status_code=404)
        return page("incident", f"Incident {incident_id}", incident=found)

    @router.get("/runs/{run_id}/report")
    def report(run_id: int) -> Response:
        try:
            run = store.get_run(run_id)
        except NotFoundError as e:
            return HTMLResponse(f"<p>{Markup.escape(str(e))}</p>", status_code=404)
        if run.report_path is None or not Path(run.report_path).is_file():
            return HTMLResponse(f"<p>Run {run_id} has no report file on this machine.</p>", status_code=404)
        return FileResponse(run.report_path, media_type="text/html")

    return router

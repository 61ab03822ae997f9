"""``assay serve MODEL[@alias]`` and ``assay incidents list|show|ack`` (see :mod:`assay.serve`).

Exit codes as everywhere: 0 done, 2 bad arguments (one line), 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from assay.cli.common import HomeOpt, JsonOpt, emit_json, err, friendly, out, workspace
from assay.errors import MissingExtraError, UsageError

incidents_app = typer.Typer(no_args_is_help=True, help="Incidents raised by the serving monitor.")


def _target(ref: str) -> tuple[str, str]:
    """``name`` serves ``name@production``; a version number is refused, as rollback needs an alias."""
    from assay.store.refs import parse_ref

    parsed = parse_ref(ref)
    if parsed.version is not None:
        raise UsageError(
            f"Serve an alias, not a version ({ref!r}): promotion and rollback move aliases. Promote the "
            f"version to one first, e.g. assay models promote {ref} --alias staging, then "
            f"assay serve {parsed.model}@staging."
        )
    return parsed.model, parsed.alias or "production"


@friendly
def serve_cmd(
    model: Annotated[str, typer.Argument(help="name (serves name@production) or name@alias.")],
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    max_batch: Annotated[
        int, typer.Option(min=1, help="Most examples per forward pass (language models: sequences, 16).")
    ] = 64,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="Longest wait for a batch to fill, ms.")] = 2.0,
    max_queue: Annotated[int, typer.Option(min=1, help="Examples queued before requests get 503.")] = 1024,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body, MiB.")] = 32.0,
    monitor: Annotated[bool, typer.Option(help="Monitor drift against the release reference.")] = True,
    window: Annotated[
        int | None,
        typer.Option(
            min=10,
            help="Examples per monitoring window (default: 500, or a sixth of a reference under 3,000 rows).",
        ),
    ] = None,
    max_windows_per_minute: Annotated[
        float,
        typer.Option(
            min=0,
            help="Most monitoring windows a minute; batches past it go unmonitored (0: every one).",
        ),
    ] = 60.0,
    false_alarm_windows: Annotated[
        float, typer.Option(min=2, help="Expected windows between false alarms (all detectors).")
    ] = 1000.0,
    rollback_after: Annotated[
        int, typer.Option(min=0, help="Consecutive alarmed windows that roll the alias back (0: never).")
    ] = 3,
    max_rollbacks: Annotated[int, typer.Option(min=0, help="Automatic rollbacks per server process.")] = 1,
    webhook: Annotated[
        str | None, typer.Option(help="URL that gets a JSON POST per incident and rollback.")
    ] = None,
    shadow_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of requests the parent also runs on (shadow mode).")
    ] = 0.0,
    feedback_examples: Annotated[
        int, typer.Option(min=0, help="Latest answered examples kept for labels sent later (feedback).")
    ] = 100_000,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Intra-op threads of the model (default: one per core).")
    ] = None,
    max_batch_tokens: Annotated[
        int, typer.Option(min=2, help="Language models: prompt + max_tokens over the running sequences.")
    ] = 16384,
    home: HomeOpt = None,
) -> None:
    """Serve a model alias over HTTP with micro-batching, drift monitoring and guarded rollback; a language
    model with an OpenAI-compatible API and continuous batching."""
    try:
        import uvicorn

        from assay.serve.app import create_app
        from assay.serve.service import ServeConfig, Service
    except ImportError as e:
        raise MissingExtraError(e.name or "fastapi", "serve") from None
    import torch

    name, alias = _target(model)
    ws = workspace(home)
    if ws.store.resolve(f"{name}@{alias}").spec.get("task") == "causal-lm":
        batch = 16 if max_batch == 64 else max_batch  # 64 is the classifiers' default
        from assay.serve.openai_api import LanguageServeConfig
        from assay.serve.served import MonitorSettings

        settings = MonitorSettings(window=window, false_alarm_windows=false_alarm_windows)
        llm_config = LanguageServeConfig(
            max_sequences=batch, max_batch_tokens=max_batch_tokens, max_waiting=max_queue,
            monitor=settings if monitor else None, rollback_after=rollback_after or None,
            max_rollbacks=max_rollbacks, webhook=webhook,
        )  # fmt: skip
        _serve_language_model(ws, name, alias, host, port, llm_config, threads)
        return
    # One thread per core, as torch sets by default: measured on 2 cores, batches run 1.5x faster than with
    # one core left to the event loop (docs/benchmarks.md); only batch-1 serving prefers a single thread.
    if threads is not None:
        torch.set_num_threads(threads)
    # The model thread takes the GIL back after each torch op; an event loop busy with requests keeps it
    # for up to the switch interval (5 ms by default) first. At 0.5 ms a batch waits less for it: +17%
    # batched throughput on 2 cores (docs/benchmarks.md).
    sys.setswitchinterval(0.0005)
    config = ServeConfig(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max(max_queue, max_batch),
        max_body_bytes=int(max_body_mb * 2**20),
        monitor=monitor,
        window=window,
        max_windows_per_minute=max_windows_per_minute or None,
        false_alarm_windows=false_alarm_windows,
        rollback_after=rollback_after or None,
        max_rollbacks=max_rollbacks,
        webhook=webhook,
        shadow_rate=shadow_rate,
        feedback_examples=feedback_examples,
    )
    service = Service(ws, name, alias, config)
    err.print(f"loading {name}@{alias}: model, release reference, monitor calibration, warm-up")
    service.load()  # here, so a missing alias, bad reference or window is one line and exit 2
    err.print(f"monitoring: {escape(service.served.monitoring)}")
    err.print(f"serving {name}@{alias} on http://{host}:{port} (dashboard at /, metrics at /metrics)")
    # No access log: one line per request would cost more than the model's share of a batch, and the
    # Prometheus metrics count every request by status anyway.
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", access_log=False)


def _serve_language_model(
    ws: Any, name: str, alias: str, host: str, port: int, config: Any, threads: int | None
) -> None:
    """``assay serve`` for a language model: the OpenAI-compatible server (:mod:`assay.serve.openai_api`)."""
    import torch
    import uvicorn

    from assay.serve.openai_api import LanguageModelServer, create_llm_app

    if threads is not None:
        torch.set_num_threads(threads)
    server = LanguageModelServer(ws, name, alias, config)
    err.print(f"loading {name}@{alias}" + (", scoring its gating corpus's prompts" if config.monitor else ""))
    server.load(
        progress=True
    )  # here, so a broken version or a corpus too small to monitor is one line, exit 2
    ref = server.version.ref if server.version else alias
    err.print(f"monitoring: {escape(server.monitoring)}")
    err.print(
        f"serving {name}@{alias} ({ref}) with an OpenAI-compatible API on http://{host}:{port}/v1 (metrics "
        f"at /metrics, monitoring at /monitor); up to {config.max_sequences} sequences decoded together"
    )
    uvicorn.run(create_llm_app(server), host=host, port=port, log_level="warning", access_log=False)


def _incident_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="incidents")
    for column in (
        "id",
        "model",
        "version",
        "status",
        "detector",
        "statistic / threshold",
        "windows",
        "action",
    ):
        table.add_column(column)
    for i in rows:
        action = i["action"]
        if i["rollback"]:
            action += f" v{i['rollback']['from_version']} -> v{i['rollback']['to_version']}"
        table.add_row(
            str(i["id"]), f"{i['model']}@{i['alias']}", f"v{i['version']}", i["status"],
            escape(i["detector"]),
            f"{i['statistic']:.4g} / {i['threshold']:.4g}", str(i["detections"]), action,
        )  # fmt: skip
    return table


def _alarm_line(name: str, detector: dict[str, Any]) -> str:
    """``name statistic > threshold (what moved)``; records written before ``why`` existed lack it."""
    why = detector.get("why")
    line = f"{name} {detector['statistic']:.4g} > {detector['threshold']:.4g}"
    return f"{line} ({why})" if why else line


@incidents_app.command("list")
@friendly
def incidents_list(
    model: Annotated[str | None, typer.Argument(help="Only this model's incidents.")] = None,
    alias: Annotated[str | None, typer.Option(help="Only this alias.")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only incidents nobody acknowledged.")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Incidents, oldest first."""
    from assay.serve.guard import incident_json

    found = [incident_json(i) for i in workspace(home).store.list_incidents(model, alias)]
    if open_only:
        found = [i for i in found if i["acked_at"] is None]
    if json_out:
        emit_json(found)
        return
    out.print(_incident_table(found) if found else "No incidents.")


@incidents_app.command("show")
@friendly
def incidents_show(
    incident_id: Annotated[int, typer.Argument(help="The incident's id.")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One incident with every alarmed window."""
    from assay.serve.guard import incident_json

    found = incident_json(workspace(home).store.get_incident(incident_id))
    if json_out:
        emit_json(found)
        return
    out.print(_incident_table([found]))
    table = Table(title="alarmed windows")
    for column in ("window", "stream", "n", "end", "alarms"):
        table.add_column(column)
    for d in found["details"].get("detections", []):
        alarms = "; ".join(_alarm_line(name, d["detectors"][name]) for name in d["alarms"])
        table.add_row(str(d["window"]), d.get("stream", "traffic"), str(d["n"]), d["end"], escape(alarms))
    out.print(table)


@incidents_app.command("ack")
@friendly
def incidents_ack(
    incident_id: Annotated[int, typer.Argument(help="The incident's id.")],
    note: Annotated[str | None, typer.Option(help="What was found or done.")] = None,
    by: Annotated[str | None, typer.Option(help="Who acknowledges (default: your login name).")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Acknowledge an incident (it stays on record; acknowledging twice keeps the first)."""
    from assay.serve.guard import incident_json

    found = incident_json(workspace(home).store.acknowledge_incident(incident_id, by=by, note=note))
    if json_out:
        emit_json(found)
        return
    out.print(
        f"Incident {incident_id} acknowledged by {escape(found['acked_by'] or 'unknown')} "
        f"at {found['acked_at']}."
    )

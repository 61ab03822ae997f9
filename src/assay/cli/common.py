"""What every ``assay`` command shares: the consoles, the option types, error handling, JSON output,
the workspace and data options, and the result tables. The commands are in the other modules of
:mod:`assay.cli`; none imports another, or the package's ``__init__``.

Exit codes: 0 success or gate passed, 1 gate failed or release refused (promoting a version whose gate
failed, rolling back with nothing to go back to), 2 bad usage, configuration or data, 130 interrupted.
User errors print one line, never a traceback. ``--json`` prints the result document on stdout alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from contextvars import ContextVar
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from assay.errors import AssayError, RefusedError, UsageError


def _console(stderr: bool = False) -> Console:
    """Rich's 80-column fallback squeezes the result tables in CI logs and pipes: use 120 there."""
    stream = sys.stderr if stderr else sys.stdout
    wide = None if stream.isatty() or "COLUMNS" in os.environ else 120
    return Console(stderr=stderr, width=wide)


out = _console()  # results
err = _console(stderr=True)  # progress, notes, errors

F = TypeVar("F", bound=Callable[..., Any])

# What a command opened (workspaces, executors), closed when it ends: a store left to the garbage
# collector keeps its SQLite write-ahead log open for as long as the process lives (a test's CliRunner, a
# notebook), and closes it whenever the collector runs, under whoever is copying or reading the folder.
_opened: ContextVar[list[Callable[[], None]] | None] = ContextVar("assay_cli_opened", default=None)

HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="Store folder (default $ASSAY_HOME or ./.assay).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
LabelColumnOpt = Annotated[
    str | None,
    typer.Option("--target", help="Label column of a --data table (default: the model's own)."),
]
TextColumnOpt = Annotated[
    str | None, typer.Option("--text", help="The text column of a CSV, Parquet or JSONL file (text models).")
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Run the independent units as Ray tasks on this cluster: a head node (host:6379, "
        "ray://host:10001), or auto (this machine's cluster, else a new local one). Needs assay[ray].",
    ),
]
RayCpusOpt = Annotated[
    float, typer.Option("--ray-cpus", min=0.01, help="CPUs each Ray task declares; its torch threads.")
]
RayMemoryOpt = Annotated[
    float, typer.Option("--ray-memory", min=0.01, help="GiB of memory each Ray task declares.")
]
ForceDataOpt = Annotated[
    bool,
    typer.Option(
        "--force-data",
        help="Run even on data that does not fit a model's input contract (recorded in the report).",
    ),
]


def friendly(fn: F) -> F:
    """Turn assay's own errors into one line and exit 2; Ctrl-C into exit 130."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        opened = _opened.set([])
        try:
            return fn(*args, **kwargs)
        except RefusedError as e:  # the rules said no (a failed gate): the same answer as a failed gate
            err.print(f"[bold red]refused:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except AssayError as e:
            # Messages quote user input and lists ("['n_classes']"): escaped, never read as markup.
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted: nothing was half-written (artifacts and runs are written atomically).")
            raise typer.Exit(130) from None
        finally:
            for close in _opened.get() or []:
                close()
            _opened.reset(opened)

    return wrapper  # type: ignore[return-value]


def print_paths(**paths: Any) -> None:
    """``Report: PATH`` lines, unwrapped whatever the width, so a path is copied whole."""
    for label, path in paths.items():
        out.print(f"{label.capitalize()}: [bold]{escape(str(path))}[/]", soft_wrap=True, highlight=False)


def emit_json(obj: Any) -> None:
    """Results (dicts, lists, or the store's frozen records) as JSON on stdout."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    elif isinstance(obj, list):
        obj = [
            dataclasses.asdict(o) if dataclasses.is_dataclass(o) and not isinstance(o, type) else o
            for o in obj
        ]
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def workspace(home: Path | None) -> Any:
    """The workspace at ``home``; a command wrapped in :func:`friendly` closes it when it ends."""
    from assay.workspace import Workspace

    ws = Workspace.open(home)
    opened = _opened.get()
    if opened is not None:
        opened.append(ws.store.close)
    return ws


def executor(ray: str | None, cpus: float, memory_gb: float, json_out: bool) -> Any:
    """The executor ``--ray`` names (none: this process), its task bar shown unless ``--json``; a
    command wrapped in :func:`friendly` closes it when it ends."""
    from assay.executor import executor_for

    made = executor_for(ray, cpus=cpus, memory_gb=memory_gb, progress=not json_out)
    opened = _opened.get()
    if opened is not None:
        opened.append(made.close)
    return made


def data_spec(data: str | None, limit: int | None, target: str | None, text: str | None = None) -> Any:
    from assay.data import parse_data_arg

    if data is None:
        for flag, column in (("--target", target), ("--text", text)):
            if column is not None:
                raise UsageError(f"{flag} {column} names a column of --data, which is not given.")
        return None
    return parse_data_arg(data, limit=limit, target=target, **({"text": text} if text else {}))


def measurement_table(measurements: list[dict[str, Any]], title: str) -> Table:
    from assay.format import format_interval, outside_interval_note

    table = Table(title=title, show_lines=False)
    for column in ("metric", "value [95% CI]", "n", "estimator"):
        table.add_column(column)
    for m in measurements:
        if m["status"] != "ok":
            reason = m["details"].get("reason") or m["details"].get("message")
            table.add_row(m["name"], f"[dim]{m['status']}: {escape(str(reason))}[/]", "", "")
            continue
        # As in the report: an estimate outside its own interval, and flagged timings, say so beside it.
        notes = [outside_interval_note(m["value"], m["ci_low"], m["ci_high"], m["details"])]
        notes += [f"flagged: {flag}" for flag in m["details"].get("flags", [])]
        value = format_interval(m) + "".join(f"\n[yellow]{escape(n)}[/]" for n in notes if n)
        table.add_row(m["name"], value, str(m["n"] or ""), escape(m["estimator"]))
    return table


def verdict_table(verdict: dict[str, Any]) -> Table:
    table = Table(title=f"gate: policy '{verdict['policy'].get('name', '')}'")
    for column in ("rule", "result", "detail"):
        table.add_column(column)
    for r in verdict["rules"]:
        table.add_row(f"{r['metric']} {r['kind']}", rule_mark(r), escape(r["message"]))
    return table


_BADGE_STYLE = {"pass": "green", "fail": "bold red", "skipped": "yellow", "info": "cyan"}


def rule_mark(rule: dict[str, Any]) -> str:
    """The rule's badge (:func:`assay.format.rule_badge`, the report's wording) in the badge's colour:
    informational rules in their own, never a gated rule's red FAIL."""
    from assay.format import rule_badge

    text, kind = rule_badge(rule)
    flagged = " [yellow](flagged timings)[/]" if rule.get("flags") else ""
    return f"[{_BADGE_STYLE[kind]}]{escape(text)}[/]{flagged}"


def show_evaluation(evaluated: Any, json_out: bool, predictions: Path | None = None) -> None:
    """An evaluation run (``assay eval``, ``assay llm eval``): its document as JSON, or its measurements
    table and the paths it wrote."""
    if json_out:
        emit_json({**evaluated.document, "report": str(evaluated.html), "run_id": evaluated.run_id})
        return
    out.print(measurement_table(evaluated.document["measurements"], evaluated.document["title"]))
    if predictions is not None:
        print_paths(predictions=predictions)
    print_paths(report=evaluated.html)


def show_verdict(evaluated: Any, json_out: bool) -> None:
    """A gate run (``assay gate``, ``assay llm gate``): its document as JSON, or the rules and the
    headline; exit code 1 when it failed."""
    assert evaluated.verdict is not None
    if json_out:
        emit_json({**evaluated.document, "report": str(evaluated.html), "run_id": evaluated.run_id})
    else:
        out.print(verdict_table(evaluated.document["verdict"]))
        style = "bold green" if evaluated.verdict.passed else "bold red"
        out.print(f"[{style}]{escape(evaluated.document['summary']['headline'])}[/]")
        print_paths(report=evaluated.html)
    if not evaluated.verdict.passed:
        raise typer.Exit(1)


def print_cost(table: dict[str, Any]) -> None:
    """A cost table (:func:`assay.cost.cost_table`): USD per 1,000 per model and target for each batch
    mode timed, the cheapest passing model per target, and the projection's assumptions."""
    from assay.format import format_usd, format_wh

    per = f"{table['per']:,} {table['unit']}"
    modes = {m: w for m, w in table["modes"].items() if any(m in r["costs"][t["name"]] for r in table["rows"]
                                                             for t in table["targets"])}  # fmt: skip
    for mode, words in modes.items():
        grid = Table(title=f"USD per {per} at {words}")
        grid.add_column("model", overflow="fold")
        grid.add_column("gate")
        for t in table["targets"]:
            grid.add_column(f"{t['name']}\n({t['method']})", justify="right")
        for row in table["rows"]:
            cells = [format_usd(row["costs"][t["name"]].get(mode, {}).get("usd")) for t in table["targets"]]
            grid.add_row(escape(row["key"]), row["status"], *cells)
        out.print(grid)
    rows = {r["key"]: r for r in table["rows"]}
    cheapest = Table(title=f"cheapest passing model per target, per {per}")
    cheapest.add_column("target")
    for words in modes.values():
        cheapest.add_column(f"at {words}", overflow="fold")
        cheapest.add_column("USD", justify="right")
        cheapest.add_column("Wh", justify="right")
    for t in table["targets"]:
        cells = [t["name"]]
        for mode in modes:
            key = table["cheapest"][t["name"]][mode]
            c = rows[key]["costs"][t["name"]][mode] if key else {}
            cells += [escape(key or "-"), format_usd(c.get("usd")), format_wh(c.get("wh"))]
        cheapest.add_row(*cells)
    out.print(cheapest)
    out.print("projected: carried from this machine's timings by a roofline model, never measured there:")
    for line in table["assumptions"]:
        out.print(escape(f"  - {line}"), highlight=False, soft_wrap=True)

"""``assay compress MODEL``, ``assay variants list MODEL`` and ``assay cost MODEL``: the compression search
(see :mod:`assay.compress`), the variants it registered, and what they cost per 1,000 inferences.

Exit codes as everywhere: 0 a variant passed and improves on the parent for the objective, 1 none did
(the search says which came closest), 2 bad arguments or data (one line), 130 interrupted (the search
document is rewritten after every candidate). The decision is the library's
(:func:`assay.compress.search.choose_best`); this module prints it. Everything a search derives (candidate
keys such as ``...-fp32[/conv1/Conv]``, reasons such as ``pip install 'assay[compress]'``) is escaped:
rich would read the brackets as markup and drop them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from assay.cli.common import (
    HomeOpt,
    JsonOpt,
    RayCpusOpt,
    RayMemoryOpt,
    RayOpt,
    emit_json,
    err,
    executor,
    friendly,
    out,
    print_cost,
    print_paths,
    workspace,
)
from assay.errors import UsageError

variants_app = typer.Typer(no_args_is_help=True, help="Compressed variants of a model and their verdicts.")


@friendly
def compress_cmd(
    model: Annotated[str, typer.Argument(help="The model to compress: a ref such as fmnist-cnn@production.")],
    policy_file: Annotated[
        Path | None, typer.Option("--policy", help="Policy TOML every variant is gated under.")
    ] = None,
    objective: Annotated[
        str,
        typer.Option(
            help="What the best variant must improve on the parent: latency_b1, throughput (max), size."
        ),
    ] = "latency_b1",
    only: Annotated[
        str | None, typer.Option(help="Comma-separated candidate keys to try (default: the whole plan).")
    ] = None,
    max_trials: Annotated[int | None, typer.Option(min=1, help="Stop after this many candidates.")] = None,
    max_minutes: Annotated[
        float | None, typer.Option(min=0, help="Stop starting candidates after this.")
    ] = None,
    finetune_epochs: Annotated[int, typer.Option(min=1, help="Fine-tune epochs after pruning.")] = 3,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the reports.")] = None,
    ray: RayOpt = None,
    ray_cpus: RayCpusOpt = 1,
    ray_memory: RayMemoryOpt = 2,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Search cheaper variants (quantized, pruned, distilled, ONNX Runtime), gate each against MODEL,
    register them, and report the Pareto frontier. Exit 0 when a passing variant improves on MODEL for
    the objective (beyond the timing noise), 1 when none does."""
    from assay.compress import Budget, default_plan
    from assay.compress import compress as run_search
    from assay.gate import Policy

    ws = workspace(home)
    policy = Policy.from_toml(policy_file) if policy_file else Policy.default()
    plan = default_plan(ws.store.resolve(model).spec)
    if only:
        wanted = [k.strip() for k in only.split(",") if k.strip()]
        unknown = sorted(set(wanted) - {c.key for c in plan})
        if unknown:
            raise UsageError(
                f"--only names unknown candidates {unknown}; the plan has {[c.key for c in plan]}."
            )
        plan = [c for c in plan if c.key in wanted]
    budget = Budget(max_trials=max_trials, max_seconds=max_minutes * 60 if max_minutes is not None else None)

    def note(trial: Any) -> None:
        if not json_out:
            line = f"  {trial.key}: {trial.status}{' - ' + trial.reason if trial.reason else ''}"
            err.print(escape(line), highlight=False, soft_wrap=True)

    result = run_search(
        ws, model, policy, objective=objective, plan=plan, budget=budget, finetune_epochs=finetune_epochs,
        progress=not json_out, out_dir=out_dir, on_trial=note,
        executor=executor(ray, ray_cpus, ray_memory, json_out),
    )  # fmt: skip
    doc = result.document
    if json_out:
        emit_json({**doc, "report": str(result.html), "json": str(result.json)})
    else:
        out.print(_variants_table(doc["trials"], doc.get("root"), doc["objective"]["metric"]))
        for line in _skipped_lines(doc["trials"]):
            out.print(escape(line), highlight=False, soft_wrap=True)
        colour = "green" if result.exit_code == 0 else "red"
        out.print(f"[bold {colour}]{escape(result.message)}[/]", soft_wrap=True)
        print_paths(report=result.html)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _skipped_lines(trials: list[dict[str, Any]]) -> list[str]:
    """The skipped candidates, one line per reason: without an extra most of the plan is skipped for
    one reason, and its install hint reads once and whole rather than cut short in a table column."""
    by_reason: dict[str, list[str]] = {}
    for t in trials:
        if t["status"] == "skipped":
            by_reason.setdefault(t["reason"], []).append(t["key"])
    return [f"skipped {', '.join(keys)}: {reason}" for reason, keys in by_reason.items()]


def _variants_table(trials: list[dict[str, Any]], root: dict[str, Any] | None, objective: str) -> Table:
    """The parent and every candidate that was not skipped (see :func:`_skipped_lines`), the objective's
    ratio to the parent worded by its direction; keys and notes fold rather than being cut."""
    from assay.format import format_interval, format_value

    def metric(t: dict[str, Any], name: str) -> str:
        m = t.get("metrics", {}).get(name)
        return format_interval({"name": name, **m}) if m else ""

    def ratio(t: dict[str, Any]) -> str:
        vs = (t.get("versus_parent") or {}).get(objective)
        if vs is None:
            return ""
        timed = objective != "size_on_disk"  # a flag marks a broken timing; a size is exact
        return "implausible" if t.get("flags") and timed else str(vs["ratio"])

    table = Table(title="compression search")
    for column in ("candidate", "gate", "version", "accuracy", "latency p50 b1", "size", "vs parent", "note"):
        table.add_column(column, overflow="fold" if column in ("candidate", "note") else "ellipsis")
    shown = [t for t in trials if t["status"] != "skipped"]
    for t in ([{**root, "status": "parent"}] if root else []) + shown:
        size = t.get("metrics", {}).get("size_on_disk", {}).get("value")
        note = "; ".join([*(t.get("flags") or []), *([t["reason"]] if t["status"] == "error" else [])])
        cells = [
            t["key"], t["status"], t.get("version") or "", metric(t, "accuracy"), metric(t, "latency_p50_b1"),
            format_value(size, "size_on_disk", "bytes") if size else "", ratio(t), note,
        ]  # fmt: skip
        table.add_row(*(escape(cell) for cell in cells))
    return table


@friendly
def cost_cmd(
    model: Annotated[
        str, typer.Argument(help="A model name (its newest search) or ref (that version's newest search).")
    ],
    targets: Annotated[
        Path | None,
        typer.Option(help="Target catalogue TOML (default: the one assay ships, whose path `--json` shows)."),
    ] = None,
    search: Annotated[
        Path | None, typer.Option(help="A compression search's JSON document, instead of the newest.")
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Cost and energy per 1,000 inferences of MODEL's compression search variants: measured on this
    machine, projected on every catalogue target; and the cheapest passing variant per target."""
    from assay.api import cost

    table = cost(model, targets=targets, search=search, home=home)
    if json_out:
        emit_json(table)
        return
    out.print(escape(f"search: {table['search']}"), highlight=False, soft_wrap=True)
    print_cost(table)


@variants_app.command("list")
@friendly
def variants_list(
    model: Annotated[str, typer.Argument(help="Model name.")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every compressed variant of MODEL: recipe, parent, gate outcome, accuracy, latency, size."""
    from assay.compress import list_variants
    from assay.format import format_value

    rows = list_variants(workspace(home), model)
    if json_out:
        emit_json(rows)
        return
    table = Table(title=f"variants of {model}")
    for column in ("version", "recipe", "parent", "gate", "accuracy", "latency p50 b1", "size"):
        table.add_column(column)
    for r in rows:
        m = r["metrics"]
        cells = [
            r["version"], r["recipe"] or "", r["parent"] or "", r["gate"],
            format_value(m.get("accuracy"), "accuracy"),
            format_value(m.get("latency_p50_b1"), "latency_p50_b1", "ms"),
            format_value(m.get("size_on_disk"), "size_on_disk", "bytes"),
        ]  # fmt: skip
        table.add_row(*(escape(cell) for cell in cells))
    out.print(
        table if rows else escape(f"{model} has no compressed variants yet: run `assay compress {model}`.")
    )

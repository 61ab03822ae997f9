"""``assay data``: audit a dataset (duplicates, leakage, contamination, label issues, balance, PII,
datasheet), write a cleaned copy without the duplicated or leaked examples, and list the splits assay makes
of a source (sizes, fingerprints, class counts; with ``--ids`` every example's id, label and source row).

Exit codes as everywhere: 0 done, 1 the leakage policy refused the data (``--fail-on-leakage``), 2 bad
arguments or data (one line), 130 interrupted (no report is left marked complete).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from assay.cli.common import (
    JsonOpt,
    RayCpusOpt,
    RayMemoryOpt,
    RayOpt,
    emit_json,
    err,
    executor,
    friendly,
    out,
    print_paths,
)
from assay.errors import DataError, UsageError

data_app = typer.Typer(
    no_args_is_help=True, help="Audit a dataset, write a cleaned copy, list a source's splits and their ids."
)

DataOpt = Annotated[
    str,
    typer.Option(
        "--data", help="Data source: fashion-mnist, idx:DIR, npz:FILE, csv:FILE, parquet:FILE, sklearn:NAME."
    ),
]
TargetOpt = Annotated[str | None, typer.Option(help="Label column of a table.")]
GroupsOpt = Annotated[str | None, typer.Option(help="Group columns of a table, comma-separated.")]
TextOpt = Annotated[
    str | None,
    typer.Option("--text", help="Text columns of a table, comma-separated (default: every text column)."),
]
LimitOpt = Annotated[int | None, typer.Option(help="Stratified subset of each split (quick look).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML or JSON file of audit thresholds.")]


def _split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _context(
    data: str,
    target: str | None,
    groups: str | None,
    text: str | None,
    limit: int | None,
    config: Path | None,
    **extra: Any,
) -> Any:
    from assay.data import parse_data_arg
    from assay.data.audit import AuditConfig, AuditContext, load_audit_data

    spec = parse_data_arg(data, limit=limit, target=target, groups=_split_list(groups))
    cfg = AuditConfig.from_file(config) if config else AuditConfig()
    overrides = {k: v for k, v in extra.items() if v is not None}
    if overrides:  # validated like the file's values (model_copy would not check them)
        from pydantic import ValidationError

        from assay.config import validation_message

        try:
            cfg = AuditConfig.model_validate({**cfg.model_dump(), **overrides})
        except ValidationError as e:
            raise UsageError(validation_message("audit option", e)) from None
    texts = _split_list(text) or None
    return AuditContext(load_audit_data(spec, texts), cfg)


def _reference(ctx: Any, reference: str | None) -> None:
    """``text:FILE`` (one document per line) or any data source, as the contamination corpus."""
    if reference is None:
        return
    if reference.startswith("text:"):
        path = Path(reference[5:])
        try:
            ctx.reference_texts = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise DataError(f"Cannot read the reference corpus {path}: {e.strerror}.") from None
        except UnicodeDecodeError:
            raise DataError(
                f"{path}: the reference corpus must be UTF-8 text, one document per line."
            ) from None
        return
    from assay.data import parse_data_arg
    from assay.data.audit import load_audit_data

    ctx.reference = load_audit_data(parse_data_arg(reference))


def _label_probs(ctx: Any, path: Path | None) -> None:
    """A predictions file whose ids name training examples: its probabilities replace the quick model's."""
    if path is None:
        return
    import numpy as np

    from assay.outputs import load_predictions

    outputs = load_predictions(path)
    probs = {}
    position = {i: k for k, i in enumerate(outputs.ids.tolist())}
    for name, split in ctx.data.splits.items():
        rows = [position.get(i) for i in split.ids.tolist()]
        if all(r is None for r in rows):
            continue
        if any(r is None for r in rows):
            missing = sum(r is None for r in rows)
            raise DataError(
                f"{path}: {missing} {name} example(s) have no probabilities; give all of the split or none."
            )
        if outputs.n_classes != len(ctx.data.class_names):
            raise DataError(
                f"{path}: probabilities for {outputs.n_classes} classes; "
                f"the data has {len(ctx.data.class_names)}."
            )
        index = np.array(rows, dtype=np.int64)
        if not np.array_equal(outputs.labels[index], split.labels):
            raise DataError(
                f"{path}: its labels differ from the {name} split's; were they made for this data?"
            )
        probs[name] = outputs.probs[index]
    if not probs:
        raise DataError(f"{path}: none of its ids names an example of the data (ids look like 'train-0').")
    ctx.probs = probs


@data_app.command("audit")
@friendly
def audit_cmd(
    data: DataOpt = "fashion-mnist",
    target: TargetOpt = None,
    groups: GroupsOpt = None,
    text: TextOpt = None,
    limit: LimitOpt = None,
    checks: Annotated[str | None, typer.Option(help="Run only these checks, comma-separated.")] = None,
    skip: Annotated[
        str | None, typer.Option(help="Skip these checks, comma-separated (e.g. label_issues).")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="Reference corpus for contamination: a data source, or text:FILE (one document per line)."
        ),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="Test-split predictions file: adds accuracy on the subset free of leakage and contamination."
        ),
    ] = None,
    label_probs: Annotated[
        Path | None,
        typer.Option(
            help="Out-of-fold probabilities (a predictions file with ids) for the label-issue check."
        ),
    ] = None,
    config: ConfigOpt = None,
    declare: Annotated[
        Path | None, typer.Option(help="TOML of declared facts for the datasheet (source, licence, ...).")
    ] = None,
    max_leakage: Annotated[
        float | None,
        typer.Option(help="Leakage policy: the largest share of test examples with a copy in train."),
    ] = None,
    fail_on_leakage: Annotated[
        bool, typer.Option(help="Exit 1 when test leaks into train above --max-leakage.")
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder of the audit's files: audit-<dataset>-<suffix>.json, .html, .croissant.json.",
        ),
    ] = None,
    ray: RayOpt = None,
    ray_cpus: RayCpusOpt = 1,
    ray_memory: RayMemoryOpt = 2,
    json_out: JsonOpt = False,
) -> None:
    """Audit a dataset: duplicates, leakage, contamination, label issues, balance, PII; write a datasheet."""
    from assay.data.audit import CHECKS, clean_scores, run_audit
    from assay.data.audit.datasheet import Declared
    from assay.data.audit.report import write_audit
    from assay.data.audit.run import flagged_ids, select_checks

    if max_leakage is not None and not 0 <= max_leakage <= 1:
        raise UsageError(f"--max-leakage is a share between 0 and 1. Got {max_leakage}.")
    names = select_checks(_split_list(checks) or None, _split_list(skip))
    declared = Declared.from_file(declare) if declare else None
    ctx = _context(data, target, groups, text, limit, config, max_leakage=max_leakage)
    _reference(ctx, reference)
    _label_probs(ctx, label_probs)
    outputs = None
    if predictions is not None:
        from assay.outputs import load_predictions

        outputs = load_predictions(predictions)
    done = [0]

    def on_check(name: str) -> None:
        done[0] += 1
        if not json_out:
            err.print(
                f"[dim]check {done[0]}/{len(names)}: {name} ({CHECKS.get(name).description})[/]",
                highlight=False,
            )

    result = run_audit(ctx, names, on_check=on_check, executor=executor(ray, ray_cpus, ray_memory, json_out))
    scores = []
    if outputs is not None:
        for tag in ("leakage", "contamination"):
            if tag in names:
                scores += clean_scores(outputs, flagged_ids(result, tag), tag)
    folder = out_dir or Path(os.environ.get("ASSAY_HOME") or ".assay") / "audits"
    paths, document = write_audit(result, folder, declared=declared, scores=scores)
    leak = document["summary"]["leakage_test_train"]
    refused = fail_on_leakage and leak is not None and leak > ctx.config.max_leakage
    if json_out:
        emit_json({**document, "files": paths._asdict(), "refused": refused})
    else:
        out.print(_findings_table(document))
        for name, reason in document["summary"]["unreliable"].items():
            out.print(f"[bold yellow]unreliable:[/] {escape(name)}: {escape(reason)}", highlight=False)
        print_paths(report=paths.html, datasheet=paths.croissant, document=paths.json)
    if refused:
        err.print(
            f"[bold red]refused:[/] {leak:.2%} of test examples have a copy in train, above the policy's "
            f"{ctx.config.max_leakage:.2%}; `assay data dedupe` writes a copy without them.",
            highlight=False,
        )
        raise typer.Exit(1)


def _findings_table(document: dict[str, Any]) -> Table:
    from assay.data.audit.findings import format_finding, unreliable

    table = Table(title=f"data audit: {document['dataset']['name']}")
    for column in ("finding", "rate [95% CI] / value", "count", "examples"):
        table.add_column(column)
    for m in document["measurements"]:
        details = m["details"]
        value = escape(format_finding(m))
        if m["status"] != "ok":
            table.add_row(escape(m["name"]), f"[dim]{value}[/]", "", "")
            continue
        shown = ", ".join(
            (f"{e['id']}~{e['match']}" if "match" in e else str(e.get("id", e.get("column", ""))))
            if isinstance(e, dict)
            else str(e)
            for e in details.get("examples", [])[:3]
        )
        count = details.get("count")
        flag = bool(count) and not m["higher_is_better"]
        style = "bold yellow" if unreliable(m) else "red" if flag else None  # the reason follows the table
        table.add_row(
            escape(m["name"]),
            f"[{style}]{value}[/]" if style else value,
            "" if count is None else f"{count:,}",
            escape(shown),
        )
    return table


@data_app.command("dedupe")
@friendly
def dedupe_cmd(
    data: DataOpt = "fashion-mnist",
    out_file: Annotated[
        Path, typer.Option("--out", help="The cleaned copy: .npz (images, arrays) or .csv/.parquet (tables).")
    ] = Path("deduped.npz"),
    target: TargetOpt = None,
    groups: GroupsOpt = None,
    text: TextOpt = None,
    limit: LimitOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a copy of the data without duplicated examples and without training copies of test examples."""
    from assay.data.audit.dedupe import dedupe

    ctx = _context(data, target, groups, text, limit, config)
    result = dedupe(ctx, out_file)
    if json_out:
        emit_json(result.summary())
        return
    for name, ids in result.removed.items():
        out.print(f"{name}: removed {len(ids):,}, kept {result.kept[name]:,}")
    out.print(
        f"Wrote [bold]{result.path}[/] (read it back with --data npz:{result.path})"
        if result.path.suffix == ".npz"
        else f"Wrote [bold]{result.path}[/]"
    )


@data_app.command("splits")
@friendly
def splits_cmd(
    data: DataOpt = "fashion-mnist",
    target: TargetOpt = None,
    groups: GroupsOpt = None,
    limit: LimitOpt = None,
    split: Annotated[str | None, typer.Option("--split", help="Only this split: train, val or test.")] = None,
    ids: Annotated[
        bool,
        typer.Option(
            "--ids",
            help="List every example: its id, label and the row of the source it was read from "
            "(tab-separated; with --json, one record each).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """List the splits assay makes of a data source: size, fingerprint, class counts; with --ids, every
    example's id (what a predictions file names), label and source row."""
    from assay.data import load_dataset, parse_data_arg

    spec = parse_data_arg(data, limit=limit, target=target, groups=_split_list(groups))
    dataset = load_dataset(spec)
    chosen = dataset.splits() if split is None else {split: dataset.split(split)}
    splits = {name: _split_summary(s, dataset.class_names) for name, s in chosen.items()}
    if ids:
        for name, s in chosen.items():  # the loaders record each example's source row (Split.rows)
            assert s.rows is not None
            splits[name]["rows_of"] = s.rows_of
            splits[name]["examples"] = [
                {"id": i, "label": int(y), "class": dataset.class_names[int(y)], "row": int(r)}
                for i, y, r in zip(s.ids.tolist(), s.y.tolist(), s.rows.tolist(), strict=True)
            ]
    document = {
        "dataset": dataset.name,
        "source": data,
        "fingerprint": dataset.fingerprint(),
        "classes": dataset.class_names,
        "splits": splits,
    }
    if json_out:
        emit_json(document)
    elif ids:
        _print_ids(document)
    else:
        out.print(_splits_table(document))


def _split_summary(split: Any, class_names: list[str]) -> dict[str, Any]:
    import numpy as np

    counts = np.bincount(split.y, minlength=len(class_names))
    return {
        "n": split.n,
        "fingerprint": split.fingerprint(),
        "class_counts": {name: int(c) for name, c in zip(class_names, counts, strict=True)},
    }


def _splits_table(document: dict[str, Any]) -> Table:
    table = Table(
        title=f"{escape(document['dataset'])} ({escape(document['source'])}), fingerprint "
        f"{document['fingerprint'][:16]}"
    )
    for column in ("split", "examples", "fingerprint (sha256)", "examples per class"):
        table.add_column(column)
    for name, s in document["splits"].items():
        counts = ", ".join(f"{escape(c)} {k:,}" for c, k in s["class_counts"].items())
        table.add_row(name, f"{s['n']:,}", s["fingerprint"][:16], counts)
    return table


def _print_ids(document: dict[str, Any]) -> None:
    """Tab-separated, one example a line, for a script to read (plain text: no markup, no wrapping)."""
    import sys

    lines = ["split\tid\tlabel\tclass\trow\trows_of"]
    for name, s in document["splits"].items():
        lines += [
            f"{name}\t{e['id']}\t{e['label']}\t{e['class']}\t{e['row']}\t{s['rows_of']}"
            for e in s["examples"]
        ]
    sys.stdout.write("\n".join(lines) + "\n")

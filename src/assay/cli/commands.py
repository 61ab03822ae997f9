"""The core commands: demo, run, train, eval, gate, report, policy, and the registry (models ...)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from assay.cli.common import (
    ForceDataOpt,
    HomeOpt,
    JsonOpt,
    LabelColumnOpt,
    TextColumnOpt,
    data_spec,
    emit_json,
    err,
    friendly,
    out,
    print_paths,
    show_evaluation,
    show_verdict,
    workspace,
)
from assay.errors import UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Evaluate, gate, register and report deep learning models.",
)
models_app = typer.Typer(
    no_args_is_help=True, help="The registry: versions, aliases, promotion and rollback."
)
app.add_typer(models_app, name="models")


def _print_version(value: bool) -> None:
    if value:
        from assay import __version__

        out.print(f"assay {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
    ] = False,
) -> None:
    """Evaluate, gate, register and report deep learning models."""


@app.command()
@friendly
def demo(
    which: Annotated[
        str, typer.Argument(help="images (Fashion-MNIST CNNs) or text (MiniLM on quotations).")
    ] = "images",
    home: HomeOpt = None,
    limit: Annotated[
        int | None, typer.Option(help="Use a stratified subset of each split (quick look).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the whole loop: on Fashion-MNIST (train a baseline, promote it, train a candidate, gate it),
    or with `text` on quotations (a frozen MiniLM head, its fine-tuned child gated, then compressed)."""
    if which == "text":
        _demo_text(home, limit, json_out)
        return
    if which != "images":
        raise UsageError(f"Unknown demo {which!r}; choose images or text.")
    from assay.demo import run_demo

    result = run_demo(workspace(home), limit=limit, progress=not json_out, console=err)
    if json_out:
        emit_json(result)
        return
    table = Table(title="assay demo")
    from assay.format import label

    calibration = label(result["steps"][0]["calibration_metric"] or "ece")  # the ECE the rows lead with
    columns = ("step", "version", "accuracy [95% CI]", calibration, "latency p50 b1", "verdict", "alias")
    for column in columns:
        table.add_column(column)
    for row in result["steps"]:
        table.add_row(
            *[
                str(row[k])
                for k in ("step", "version", "accuracy", "calibration", "latency", "verdict", "alias")
            ]
        )
    out.print(table)
    for line in result["gate"]["lines"]:
        out.print(f"  {line}", highlight=False)
    print_paths(report=result["report"])
    out.print(
        "Next: `assay models show fmnist-cnn`, `assay compress fmnist-cnn@production`, "
        "`assay models rollback fmnist-cnn`"
    )


def _demo_text(home: Path | None, limit: int | None, json_out: bool) -> None:
    from assay.data import parse_data_arg
    from assay.demo_text import LIMIT, MODEL, run_text_demo

    data = parse_data_arg("fortunes", limit=limit or LIMIT)
    result = run_text_demo(workspace(home), data=data, progress=not json_out, console=err)
    if json_out:
        emit_json(result)
        return
    gate = result["gate"]
    verdict = "passed" if gate["passed"] else "failed"
    out.print(f"baseline {result['baseline']['version']} (frozen MiniLM + head), candidate "
              f"{result['candidate']['version']} (fine-tuned): gate {verdict}, "
              f"production is {result['production']}")  # fmt: skip
    for line in gate["summary"]["lines"]:
        out.print(f"  {line}", highlight=False)
    if result["compression"] is not None:
        out.print(f"compression: {result['compression']['message']}", highlight=False)
        print_paths(report=gate["report"], compression=result["compression"]["report"])
    else:
        print_paths(report=gate["report"])
    out.print(f"Next: `assay models show {MODEL}`, `assay trust {MODEL}@production`")


@app.command()
@friendly
def run(
    pipeline_file: Annotated[Path, typer.Argument(help="Pipeline TOML (see docs).")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train, register, evaluate or gate, and promote, as a pipeline file says."""
    from assay.pipeline import load_pipeline, run_pipeline

    result = run_pipeline(workspace(home), load_pipeline(pipeline_file), progress=not json_out)
    summary = {
        "version": result.version.ref,
        "gate_status": result.version.gate_status,
        "baseline": result.baseline.ref if result.baseline else None,
        "promoted": result.promotion is not None,
        "report": str(result.evaluation.html),
        "run_id": result.evaluation.run_id,
        "summary": result.evaluation.document["summary"],
    }
    if json_out:
        emit_json(summary)
    else:
        out.print(result.evaluation.document["summary"]["headline"])
        for line in result.evaluation.document["summary"]["lines"]:
            out.print(f"  {line}", highlight=False)
        out.print(
            f"version {summary['version']}, promoted: {summary['promoted']}, report: {summary['report']}"
        )
    if result.evaluation.verdict is not None and not result.evaluation.verdict.passed:
        raise typer.Exit(1)


@app.command("train")
@friendly
def train_cmd(
    name: Annotated[str, typer.Option(help="Model name in the registry.")],
    data: Annotated[
        str, typer.Option(help="Data source: fashion-mnist, idx:DIR, npz:FILE, csv:FILE, sklearn:NAME.")
    ] = "fashion-mnist",
    arch: Annotated[str, typer.Option(help="Zoo architecture: cnn or mlp.")] = "cnn",
    spec: Annotated[str, typer.Option(help="JSON object of architecture overrides.")] = "{}",
    epochs: int = 8,
    batch_size: int = 128,
    lr: float = 3e-3,
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp32.")] = "auto",
    seed: int = 0,
    target: Annotated[str | None, typer.Option(help="Label column of a table.")] = None,
    text_column: TextColumnOpt = None,
    limit: Annotated[int | None, typer.Option(help="Stratified subset of each split.")] = None,
    description: Annotated[str, typer.Option(help="Intended use, for the model card.")] = "",
    licence: Annotated[str | None, typer.Option(help="Licence of the weights, for the model card.")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a zoo model and register it as a new version (texts: import a text model, then `assay
    finetune` it)."""
    from pydantic import ValidationError

    from assay.config import validation_message
    from assay.data import load_dataset
    from assay.release import train_version
    from assay.train import TrainConfig

    options = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "precision": precision, "seed": seed}
    try:
        overrides = json.loads(spec)
        config = TrainConfig.model_validate(options)
    except json.JSONDecodeError as e:
        raise UsageError(f"Bad training option: --spec is not JSON ({e}).") from None
    except ValidationError as e:
        raise UsageError(validation_message("Bad training option", e)) from None
    if not isinstance(overrides, dict):
        raise UsageError(f"--spec must be a JSON object, got {spec!r}.")
    spec_of_data = data_spec(data, limit, target, text_column)
    dataset = load_dataset(spec_of_data)
    version, result = train_version(
        workspace(home),
        name,
        dataset,
        spec_of_data,
        arch=arch,
        config=config,
        spec_overrides=overrides,
        description=description,
        licence=licence,
        progress=not json_out,
    )
    summary = {"version": version.ref, "artifact_digest": version.artifact_digest, **result.summary()}
    if json_out:
        emit_json(summary)
    else:
        out.print(
            f"registered [bold]{version.ref}[/]: "
            + ", ".join(f"{k}={v}" for k, v in result.summary().items())
        )


@app.command("finetune")
@friendly
def finetune_cmd(
    ref: Annotated[str, typer.Argument(help="The Hugging Face text classifier to fine-tune (NAME@VERSION).")],
    data: Annotated[
        str | None, typer.Option(help="Texts to fine-tune on (default: the version's own data).")
    ] = None,
    label_column: LabelColumnOpt = None,
    text_column: TextColumnOpt = None,
    name: Annotated[
        str | None, typer.Option(help="Register as the next version of this model (default: the same).")
    ] = None,
    epochs: int = 3,
    batch_size: int = 16,
    lr: float = 5e-5,
    warmup: Annotated[float, typer.Option(help="Share of the steps with a linear warm-up.")] = 0.1,
    schedule: Annotated[str, typer.Option(help="Decay after the warm-up: linear or cosine.")] = "linear",
    max_grad_norm: Annotated[
        float | None, typer.Option(help="Clip gradients to this global norm (default 1.0).")
    ] = 1.0,
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp32.")] = "auto",
    seed: int = 0,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Folder to keep each finished epoch in; run again with it to resume."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Stratified subset of each split.")] = None,
    description: Annotated[str, typer.Option(help="Intended use, for the model card.")] = "",
    licence: Annotated[str | None, typer.Option(help="Licence of the weights, for the model card.")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fine-tune a registered Hugging Face text classifier; the result is the next version, its parent
    the version it was fine-tuned from."""
    from assay.finetune_run import finetune_version
    from assay.train.finetune import FinetuneConfig

    config = FinetuneConfig.parse(
        {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "warmup": warmup, "schedule": schedule,
            "max_grad_norm": max_grad_norm, "precision": precision, "seed": seed,
        }
    )  # fmt: skip
    if data is None and limit is not None:
        raise UsageError("--limit subsets --data, which is not given; name the data to fine-tune on.")
    imported, result = finetune_version(
        workspace(home),
        ref,
        config,
        data_spec=data_spec(data, limit, label_column, text_column),
        name=name,
        checkpoint=checkpoint,
        description=description,
        licence=licence,
        progress=not json_out,
    )
    for warning in imported.warnings:
        err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    summary = {"version": imported.version.ref, "parent": imported.version.parent, **result.summary()}
    if json_out:
        emit_json({**summary, "artifact_digest": imported.version.artifact_digest})
        return
    v = imported.version
    out.print(
        f"registered [bold]{escape(v.ref)}[/] (fine-tuned from {escape(str(v.parent))}): "
        + ", ".join(f"{k}={v}" for k, v in result.summary().items()),
        highlight=False,
        soft_wrap=True,
    )


@app.command("eval")
@friendly
def eval_cmd(
    target: Annotated[
        str,
        typer.Argument(
            help="A model ref (name, name@3, name@production) or a predictions file (.npz/.parquet)."
        ),
    ],
    data: Annotated[
        str | None, typer.Option(help="Evaluate on this data instead of the version's own.")
    ] = None,
    label_column: LabelColumnOpt = None,
    text_column: TextColumnOpt = None,
    force_data: ForceDataOpt = False,
    save_predictions: Annotated[
        Path | None,
        typer.Option(help="Also write the per-example outputs with their ids (.npz or .parquet)."),
    ] = None,
    split: str = "test",
    efficiency: Annotated[bool, typer.Option(help="Measure latency, throughput and memory.")] = True,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: int = 0,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for the report (default: the store's).")
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a model version or a predictions file: metrics with intervals, calibration, efficiency."""
    from assay.release import evaluate_target

    evaluated = evaluate_target(
        workspace(home),
        target,
        data_spec=data_spec(data, None, label_column, text_column),
        split=split,
        efficiency=efficiency,
        n_boot=n_boot,
        seed=seed,
        out_dir=out_dir,
        progress=not json_out,
        force_data=force_data,
        save_predictions=save_predictions,
    )
    _warn_forced(evaluated.document)
    show_evaluation(evaluated, json_out, save_predictions)


def _warn_forced(document: dict[str, Any]) -> None:
    """A forced run says on stderr what did not fit, as its report does."""
    from assay.format import forced_inputs

    for ref, differences in forced_inputs(document):
        for difference in differences:
            err.print(f"[bold yellow]forced:[/] {escape(ref)}: {escape(difference)}", highlight=False)


@app.command()
@friendly
def gate(
    baseline: Annotated[str, typer.Argument(help="Baseline: a model ref or a predictions file.")],
    candidate: Annotated[str, typer.Argument(help="Candidate: a model ref or a predictions file.")],
    policy_file: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="Policy TOML (default: the documented default policy; for two lm-eval generation logs, "
            "exact match within 1 point).",
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Compare on this data instead of the candidate's own.")
    ] = None,
    label_column: LabelColumnOpt = None,
    text_column: TextColumnOpt = None,
    force_data: ForceDataOpt = False,
    efficiency: Annotated[bool, typer.Option(help="Measure and compare latency (model refs only).")] = True,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the report.")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare a candidate with a baseline on the same examples under a policy. Exit 0 pass, 1 fail."""
    from assay.release import gate_targets

    evaluated = gate_targets(  # the policy file is read once the gate knows what its inputs measure
        workspace(home),
        baseline,
        candidate,
        policy_file,
        data_spec=data_spec(data, None, label_column, text_column),
        efficiency=efficiency,
        out_dir=out_dir,
        progress=not json_out,
        force_data=force_data,
    )
    _warn_forced(evaluated.document)
    show_verdict(evaluated, json_out)


@app.command()
@friendly
def report(
    source: Annotated[str, typer.Argument(help="A run id from the store, or a report JSON file.")],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the HTML and JSON (default: the store's reports)."),
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Render the HTML report of a stored run or of a report JSON document."""
    from assay.report import write_report

    ws = workspace(home)
    if source.isdigit():
        document = ws.store.get_run(int(source)).document
        stem = f"run-{source}"
    else:
        path = Path(source)
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"No such run id or report file: {source}.") from None
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}: not a JSON report ({e}).") from None
        if not isinstance(document, dict) or document.get("schema") != "assay.report/1":
            raise UsageError(f"{path}: not an assay report document (schema 'assay.report/1').")
        stem = path.stem
    paths = write_report(document, out_dir or ws.reports_dir, stem)
    if json_out:
        emit_json({"html": str(paths.html), "json": str(paths.json)})
    else:
        print_paths(report=paths.html)


@models_app.command("import")
@friendly
def models_import(
    name: Annotated[str, typer.Argument(help="The model name to register the next version of.")],
    source: Annotated[
        str,
        typer.Argument(
            help="path/to/file.py:factory or package.module:factory (your nn.Module), model.pt2 "
            "(torch.export), model.onnx, or a Hugging Face folder."
        ),
    ],
    data: Annotated[
        str, typer.Option(help="The data the model is meant for (npz:FILE, csv:FILE, ...): its contract.")
    ],
    weights: Annotated[
        Path | None,
        typer.Option(help="Weights of a torch module: .safetensors, or a torch checkpoint (scanned first)."),
    ] = None,
    adapter: Annotated[
        str | None, typer.Option(help="The adapter (torch, export, onnx, hf) where the source does not tell.")
    ] = None,
    label_column: LabelColumnOpt = None,
    text_column: TextColumnOpt = None,
    limit: Annotated[int | None, typer.Option(help="Use a stratified subsample of each split.")] = None,
    description: str = "",
    licence: str | None = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Import a model assay did not train: its files checked and copied into the store, registered.

    A factory is your own code and runs, as importing it would; nothing in a weights or model file runs.
    """
    from assay.model_import import import_model

    imported = import_model(
        workspace(home),
        name,
        source,
        data=data_spec(data, limit, label_column, text_column),
        weights=weights,
        adapter=adapter,
        description=description,
        licence=licence,
    )
    for warning in imported.warnings:
        err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if json_out:
        emit_json(imported.to_dict())
        return
    v, digest = imported.version, imported.version.artifact_digest or "-"
    out.print(
        f"Registered [bold]{escape(v.ref)}[/] through the {imported.adapter} adapter: {len(imported.files)} "
        f"file(s), artifact {digest[:12]}; {imported.probe_accuracy:.0%} right "
        f"on a first look at the validation split (chance {imported.chance:.0%}).",
        highlight=False,
        soft_wrap=True,
    )


@models_app.command("list")
@friendly
def models_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Every model with its latest version and aliases."""
    models = workspace(home).store.list_models()
    if json_out:
        emit_json(models)
        return
    table = Table(title="models")
    for column in ("model", "versions", "latest", "aliases"):
        table.add_column(column)
    for m in models:
        aliases = ", ".join(f"{a}→v{v}" for a, v in m.aliases.items())
        table.add_row(m.name, str(m.n_versions), f"v{m.latest.version}", aliases)
    out.print(table)


@models_app.command("show")
@friendly
def models_show(
    ref: Annotated[str, typer.Argument(help="A model name or ref.")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Versions of a model with lineage, gate status and alias history."""
    store = workspace(home).store
    name = ref.split("@", 1)[0]
    versions = store.list_versions(name)
    history = store.alias_history(name)
    if json_out:
        emit_json(
            {
                "versions": [dataclasses.asdict(v) for v in versions],
                "alias_history": [dataclasses.asdict(h) for h in history],
            }
        )
        return
    from assay.data import InputContract

    table = Table(title=f"{name}: versions")
    for column in ("version", "created", "parent", "gate", "digest", "training", "inputs"):
        table.add_column(column)
    for v in versions:
        t = v.lineage.get("training", {})
        training = (
            f"{t.get('epochs_run', '?')} ep, {t.get('precision', '?')}, {t.get('seconds', '?')} s"
            if t
            else ""
        )
        aliases = f" ({', '.join(v.aliases)})" if v.aliases else ""
        table.add_row(
            f"v{v.version}{aliases}",
            f"{v.created_at:%Y-%m-%d %H:%M}",
            v.parent or "",
            # The run id is what `assay report RUN_ID` re-renders.
            f"{v.gate_status} (run {v.gate_run_id})" if v.gate_run_id else v.gate_status,
            (v.artifact_digest or "")[:12],
            training,
            # The input contract (--json has it whole, the table statistics included); variants take
            # their parent's.
            InputContract.from_dict(v.lineage["contract"]).describe() if "contract" in v.lineage else "",
        )
    out.print(table)
    hist = Table(title=f"{name}: alias history")
    for column in ("at", "alias", "action", "from", "to", "forced", "reason"):
        hist.add_column(column)
    for h in history:
        hist.add_row(
            f"{h.at:%Y-%m-%d %H:%M:%S}",
            h.alias,
            h.action,
            f"v{h.from_version}" if h.from_version else "",
            f"v{h.to_version}",
            "yes" if h.forced else "",
            h.reason or "",
        )
    out.print(hist)


@models_app.command("promote")
@friendly
def models_promote(
    ref: Annotated[str, typer.Argument(help="The version to promote, e.g. fmnist-cnn@3.")],
    alias: str = "production",
    force: Annotated[
        bool, typer.Option(help="Promote even if its gate failed or it was never gated (recorded).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why; recorded in the alias history.")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Point an alias at a version. Refused unless its gate passed (or the alias is new), or --force."""
    change = workspace(home).store.promote(ref, alias, force=force, reason=reason, actor="cli")
    if json_out:
        emit_json(change)
    else:
        out.print(change.message)


@models_app.command("rollback")
@friendly
def models_rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: str = "production",
    reason: Annotated[str | None, typer.Option(help="Why; recorded in the alias history.")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Move an alias back to the version it pointed at before."""
    change = workspace(home).store.rollback(name, alias, reason=reason, actor="cli")
    if json_out:
        emit_json(change)
    else:
        out.print(change.message)


@app.command("policy")
@friendly
def policy_cmd(
    check: Annotated[Path | None, typer.Option("--check", help="Validate this policy file instead.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the default gate policy (TOML), or validate a policy file."""
    from assay.gate import DEFAULT_POLICY_TOML, Policy

    policy = Policy.from_toml(check) if check is not None else Policy.default()
    if check is None and not json_out:
        sys.stdout.write(DEFAULT_POLICY_TOML)
        return
    if json_out:
        emit_json(policy.to_dict())
    else:
        out.print(f"{check}: valid, {len(policy.rules)} rule(s).")

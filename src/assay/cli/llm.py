"""``assay llm ...``: language models through the release loop (see :mod:`assay.llm.release`).

    assay llm import NAME SOURCE --corpus fortunes   a Hugging Face causal-LM folder or a .gguf file
    assay llm eval REF                               perplexity, bits per byte and the task, with intervals
    assay llm gate BASELINE CANDIDATE                paired per document and item; exit 0 pass, 1 fail
    assay llm quantize REF --precision P             a cheaper variant, registered with its parent
    assay llm search REF                             every precision as a variant, gated, timed; frontier
    assay llm moe CONFIG                             an MoE config's parameters, traffic and roofline

Promotion and rollback are the models' (``assay models promote``): a passing gate run lets it promote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from assay.cli.common import (
    HomeOpt,
    JsonOpt,
    TextColumnOpt,
    data_spec,
    emit_json,
    err,
    friendly,
    out,
    print_cost,
    show_evaluation,
    show_verdict,
    workspace,
)

llm_app = typer.Typer(no_args_is_help=True, help="Language models: import, evaluate, gate, quantize.")

CorpusOpt = Annotated[
    str | None,
    typer.Option(help="Texts to score on: fortunes, or jsonl:FILE / csv:FILE with --text and --target."),
]
GroupColumnOpt = Annotated[
    str | None,
    typer.Option(
        "--target", help="The corpus file's column of document groups (the cloze's wrong endings share it)."
    ),
]
LimitOpt = Annotated[int | None, typer.Option(min=1, help="Use a stratified subsample of each split.")]
TaskOpt = Annotated[
    Path | None,
    typer.Option("--task", help="A multiple-choice task (JSONL; docs/llm.md); default: the corpus's cloze."),
]
GenerationOpt = Annotated[
    Path | None,
    typer.Option(
        "--generation", help="A generation task (JSONL; docs/llm.md); default: the corpus's last words."
    ),
]


def _corpus(corpus: str | None, limit: int | None, group: str | None, text_column: str | None) -> Any:
    return data_spec(corpus, limit, group, text_column)


def _interval(value: tuple[float, float, float] | None, form: str) -> str:
    return (
        "" if value is None else f"{form.format(value[0])} [{form.format(value[1])}, {form.format(value[2])}]"
    )


def _count(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"


@llm_app.command("import")
@friendly
def llm_import(
    name: Annotated[str, typer.Argument(help="The model name to register the next version of.")],
    source: Annotated[str, typer.Argument(help="A Hugging Face causal-LM folder or a .gguf file.")],
    corpus: Annotated[
        str, typer.Option(help="Its corpus: fortunes, or jsonl:FILE with --text and --target.")
    ],
    text_column: TextColumnOpt = None,
    group: GroupColumnOpt = None,
    limit: LimitOpt = None,
    description: str = "",
    licence: str | None = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Import a causal language model: checked (no remote code; nothing in a file runs), registered."""
    from assay.llm.release import import_language_model

    imported = import_language_model(
        workspace(home),
        name,
        source,
        corpus=_corpus(corpus, limit, group, text_column),
        description=description,
        licence=licence,
    )
    for warning in imported.warnings:
        err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if json_out:
        emit_json(imported.to_dict())
        return
    v, spec = imported.version, imported.version.spec
    gguf = v.lineage.get("gguf")
    origin = f", dequantized from {gguf['quantization']} GGUF" if gguf else ""
    out.print(
        f"Registered [bold]{escape(v.ref)}[/]: {escape(str(spec['architecture']))}, "
        f"{_count(spec['n_parameters'])} parameters, {spec['layers']} layers, context "
        f"{spec['context_length']}{escape(origin)}; perplexity {imported.probe_perplexity:.1f} on a first "
        f"look at the validation documents.",
        highlight=False,
        soft_wrap=True,
    )


@llm_app.command("eval")
@friendly
def llm_eval(
    ref: Annotated[str, typer.Argument(help="A language-model version: name, name@2, name@production.")],
    corpus: CorpusOpt = None,
    text_column: TextColumnOpt = None,
    group: GroupColumnOpt = None,
    limit: LimitOpt = None,
    task: TaskOpt = None,
    generation: GenerationOpt = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: int = 0,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the report.")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Perplexity, nats per token and bits per byte on the corpus's test documents, and a multiple-choice
    task, each with its 95% interval."""
    from assay.llm.release import evaluate_language_model

    evaluated = evaluate_language_model(
        workspace(home),
        ref,
        corpus=_corpus(corpus, limit, group, text_column),
        limit=limit,
        task_file=task,
        generation_file=generation,
        n_boot=n_boot,
        seed=seed,
        out_dir=out_dir,
        progress=not json_out,
    )
    show_evaluation(evaluated, json_out)


@llm_app.command("gate")
@friendly
def llm_gate(
    baseline: Annotated[str, typer.Argument(help="Baseline: a language-model version.")],
    candidate: Annotated[str, typer.Argument(help="Candidate: a language-model version.")],
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy TOML (default: the language-model policy, docs/llm.md)."),
    ] = None,
    corpus: CorpusOpt = None,
    text_column: TextColumnOpt = None,
    group: GroupColumnOpt = None,
    limit: LimitOpt = None,
    task: TaskOpt = None,
    generation: GenerationOpt = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the report.")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The candidate against the baseline on the same documents and items, paired. Exit 0 pass, 1 fail."""
    from assay.gate import Policy
    from assay.llm.release import LANGUAGE_MODEL_POLICY, gate_language_models

    policy = Policy.from_toml(policy_file) if policy_file else LANGUAGE_MODEL_POLICY
    evaluated = gate_language_models(
        workspace(home),
        baseline,
        candidate,
        policy,
        corpus=_corpus(corpus, limit, group, text_column),
        limit=limit,
        task_file=task,
        generation_file=generation,
        out_dir=out_dir,
        progress=not json_out,
    )
    show_verdict(evaluated, json_out)


@llm_app.command("quantize")
@friendly
def llm_quantize(
    ref: Annotated[str, typer.Argument(help="The fp32 language-model version to make a variant of.")],
    precision: Annotated[
        str,
        typer.Option(
            help="bf16, int8_weight_only, int8_weight_only_bf16, w8a8_block32 (int8 weights and activations "
            "on a kernel built for this machine), int8_dynamic, int4_weight_only, or a "
            "GGUF type gated for quality: gguf_q8_0, gguf_q5_1, gguf_q5_0, gguf_q4_1, gguf_q4_0; kv_fp8 "
            "for an fp8 KV cache, alone or after a precision (int8_weight_only_bf16+kv_fp8)."
        ),
    ] = "int8_weight_only",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a cheaper variant of REF (its parent); gate it with `assay llm gate REF VARIANT`."""
    from assay.llm.release import quantize_language_model

    version = quantize_language_model(workspace(home), ref, precision)
    if json_out:
        emit_json({"version": version.ref, "parent": version.parent, "spec": version.spec})
        return
    out.print(
        f"Registered [bold]{escape(version.ref)}[/] ({escape(precision)} of {escape(str(version.parent))}): "
        f"{version.spec['weight_bytes'] / 2**20:.1f} MiB of weights. Next: `assay llm gate "
        f"{escape(str(version.parent))} {escape(version.ref)}`",
        highlight=False,
        soft_wrap=True,
    )


@llm_app.command("search")
@friendly
def llm_search(
    ref: Annotated[str, typer.Argument(help="The fp32 language-model version to make variants of.")],
    precisions: Annotated[
        str,
        typer.Option(
            help="Comma-separated variants to try: precisions, kv_fp8 (an fp8 KV cache), or PRECISION+kv_fp8."
        ),
    ] = "bf16,int8_weight_only_bf16,w8a8_block32,int8_weight_only,int8_dynamic,int8_weight_only_bf16+kv_fp8",
    policy_file: Annotated[
        Path | None, typer.Option("--policy", help="Policy TOML (default: the language-model policy).")
    ] = None,
    limit: LimitOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register each precision as a variant of REF, gate it against REF, time its decoding, and report the
    frontier by tokens/s, weight bytes and memory (weights and one sequence's KV cache at the full context).
    Exit 0 when a passing variant decodes faster than REF."""
    from rich.table import Table

    from assay.gate import Policy
    from assay.llm.release import LANGUAGE_MODEL_POLICY
    from assay.llm.search import search_language_model

    chosen = tuple(p.strip() for p in precisions.split(",") if p.strip())
    policy = Policy.from_toml(policy_file) if policy_file else LANGUAGE_MODEL_POLICY
    result = search_language_model(
        workspace(home), ref, precisions=chosen, policy=policy, limit=limit, progress=not json_out
    )
    best = result.best
    if json_out:
        emit_json(result.to_dict())
    else:
        table = Table(title=f"variants of {result.parent.ref}")
        columns = ("version", "precision", "gate", "nll/token delta", "accuracy delta", "tok/s",
                   "weights MiB", "memory MiB")  # fmt: skip
        for column in columns:
            table.add_column(column)
        frontier = {p.ref for p in result.frontier}
        for p in [result.parent, *result.variants]:
            gate = "parent" if p.passed is None else ("pass" if p.passed else "fail")
            nll = _interval(p.nll_per_token_delta, "{:+.4f}")
            acc = _interval(p.accuracy_delta, "{:+.1%}")
            mark = " *" if p.ref in frontier else ""
            rate = "llama.cpp" if p.tokens_per_second is None else f"{p.tokens_per_second:.1f}"
            memory = "" if p.memory_bytes is None else f"{p.memory_bytes / 2**20:.1f}"
            table.add_row(escape(p.ref + mark), p.precision, gate, nll, acc, rate,
                          f"{p.weight_bytes / 2**20:.1f}", memory)  # fmt: skip
        out.print(table)
        verdict = "No passing variant decodes faster than the parent."
        if best is not None:
            verdict = (
                f"Fastest passing: {escape(best.ref)} at {best.tokens_per_second or 0:.1f} tok/s against the "
                f"parent's {result.parent.tokens_per_second or 0:.1f}."
            )
        out.print(f"* on the frontier of passing variants (tokens/s, weight bytes, memory). {verdict}")
        if result.cost:
            print_cost(result.cost)
    if best is None:
        raise typer.Exit(1)


@llm_app.command("moe")
@friendly
def llm_moe(
    config: Annotated[Path, typer.Argument(help="A mixture-of-experts model's config.json (or its folder).")],
    batches: Annotated[str, typer.Option(help="Comma-separated decode batch sizes.")] = "1,4,16,64",
    bandwidth: Annotated[
        float | None, typer.Option(help="Memory bandwidth in GB/s (default: this machine's, measured).")
    ] = None,
    bytes_per_parameter: Annotated[
        float, typer.Option(help="Bytes a weight takes: 4 fp32, 2 bf16, 1 int8, about 0.56 Q4_0.")
    ] = 2.0,
    context: Annotated[int, typer.Option(min=0, help="Tokens in the KV cache a step reads.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Total and active parameters of an MoE config, the experts a decode batch touches, the bytes a
    token reads and the tokens/s the memory bandwidth allows."""
    import json

    from rich.table import Table

    from assay.errors import UsageError
    from assay.llm.moe import MoEShape

    path = config / "config.json" if config.is_dir() else config
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a readable config.json ({e}).") from None
    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        raise UsageError(
            f"--batches {batches!r}: give whole numbers separated by commas, e.g. 1,4,16."
        ) from None
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--batches {batches!r}: every batch size must be at least 1.")
    if bandwidth is None:
        from assay.cost.machine import memory_bandwidth

        bandwidth = memory_bandwidth() / 1e9
    shape = MoEShape.from_config(raw)
    lines = [shape.roofline(b, bandwidth, bytes_per_parameter, context) for b in sizes]
    if json_out:
        settings = {
            "bandwidth_gb_s": bandwidth,
            "bytes_per_parameter": bytes_per_parameter,
            "context": context,
        }
        emit_json({"config": str(path), **shape.to_dict(), **settings, "roofline": lines})
        return
    out.print(
        f"{shape.family}: {shape.total() / 1e9:.2f} B parameters, {shape.active() / 1e9:.2f} B active per "
        f"token ({shape.top_k} of {shape.experts} experts in {shape.moe_layers} of {shape.layers} layers)"
    )
    table = Table(
        title=f"decode at {bandwidth:.1f} GB/s, {bytes_per_parameter:g} bytes a weight, {context} tokens of "
        "context"
    )
    for column in ("batch", "experts touched / layer", "GB read / step", "MB / token", "tok/s limit"):
        table.add_column(column, justify="right")
    for line in lines:
        table.add_row(
            str(line["batch"]), f"{line['expected_experts_per_layer']:.2f}",
            f"{line['weight_bytes_per_step'] / 1e9:.2f}", f"{line['bytes_per_token'] / 1e6:.1f}",
            f"{line['limit_tokens_per_second']:.1f}",
        )  # fmt: skip
    out.print(table)

"""Language models through the release loop: the door in, evaluation with intervals, the paired gate and
cheaper variants, on the same store, runs and reports as assay's classifiers.

A language model's data is a **corpus**: a text dataset (``fortunes``, or ``jsonl:FILE`` with a text
column), whose test split's documents are scored for perplexity, nats per token and bits per byte
(:mod:`assay.llm.perplexity`), and from which the default multiple-choice task is built
(:func:`assay.llm.tasks.cloze_task`, or a task file of the user's). The task's per-item outputs are the
assessment's outputs (accuracy with exact McNemar, calibration over the choices), and the per-document
NLL is its per-example evidence, so :func:`assay.gate.evaluate_policy` pairs two models on both and the
report, the run record and promotion work unchanged.

Example:
    >>> from assay.llm.release import LANGUAGE_MODEL_POLICY
    >>> [rule.metric for rule in LANGUAGE_MODEL_POLICY.rules if rule.gated]
    ['nll_per_token', 'accuracy']
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.data import Dataset, DataSpec, load_dataset
from assay.env import environment
from assay.errors import DataError, UsageError
from assay.evaluate import Assessment, assess
from assay.gate import Policy
from assay.llm import causal
from assay.llm.generation import (
    GenerationTask,
    exact_match,
    generate_answers,
    hits,
    last_word_task,
    read_generation_task,
)
from assay.llm.perplexity import score_documents
from assay.llm.tasks import Task, cloze_task, read_task, score_task
from assay.models.adapters.files import file_digests
from assay.models.backends import read_manifest
from assay.models.io import SPEC
from assay.release import register_dataset
from assay.store.records import VersionInfo
from assay.store.refs import check_model_name
from assay.workspace import Evaluated, Workspace, record_comparison, record_evaluation

TASK = "causal-lm"  # the spec's task of a language-model version
PROBE_DOCUMENTS = 8  # validation documents scored before a model is registered
MAX_LENGTH = 512  # tokens a scoring window holds (documents longer are scored in sliding windows)

LANGUAGE_MODEL_POLICY_TOML = """\
# assay's default policy for language models: on the same documents and task items, the candidate may
# not be worse than the baseline by a stated margin or more (Holm across the gated rules).
[policy]
name = "language-model"
alpha = 0.05
n_bootstrap = 1000
seed = 0

# NLL per token (the log of perplexity) may not rise by 0.02 nats or more: about 2% perplexity.
[[rules]]
metric = "nll_per_token"
kind = "non_inferiority"
margin = 0.02

# The task's accuracy may not drop by 1 point or more.
[[rules]]
metric = "accuracy"
kind = "non_inferiority"
margin = 0.01

# Reported, not deciding: bits per byte (tokenizer-independent) within 0.01.
[[rules]]
metric = "bits_per_byte"
kind = "non_inferiority"
margin = 0.01
gated = false

# Reported, not deciding: the generation task's exact match within 1 point.
[[rules]]
metric = "exact_match"
kind = "non_inferiority"
margin = 0.01
gated = false
"""
LANGUAGE_MODEL_POLICY = Policy.from_toml_text(LANGUAGE_MODEL_POLICY_TOML, source="the language-model policy")


def is_language_model(version: VersionInfo) -> bool:
    return version.spec.get("task") == TASK


@dataclass(frozen=True)
class ImportedLanguageModel:
    """What :func:`import_language_model` registered, and what the probe saw."""

    version: VersionInfo
    files: dict[str, str]
    probe_perplexity: float  # on a few validation documents: a wrong tokenizer shows here first
    vocab_size: int
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        v = self.version
        return {
            "version": v.ref,
            "artifact_digest": v.artifact_digest,
            "files": self.files,
            "probe": {"perplexity": self.probe_perplexity, "vocab_size": self.vocab_size},
            "spec": v.spec,
            "lineage": v.lineage,
            "warnings": self.warnings,
        }


def import_language_model(
    ws: Workspace,
    name: str,
    source: str | Path,
    *,
    corpus: DataSpec,
    description: str = "",
    licence: str | None = None,
) -> ImportedLanguageModel:
    """Register a causal LM (a Hugging Face folder or a ``.gguf`` file) as the next version of ``name``.

    The model is staged (:func:`assay.llm.causal.stage`: nothing in its files runs), loaded and run on a
    few validation documents of ``corpus``, then stored with its lineage (every file's sha256, the GGUF
    file's digest and quantization type, the frameworks, the corpus). Any failure registers nothing.
    """
    check_model_name(name)
    data = load_corpus(corpus)
    with tempfile.TemporaryDirectory(prefix="assay-llm-import-") as tmp:
        folder = Path(tmp) / "model"
        manifest = {**causal.stage(source, folder), "adapter": "causal_lm"}
        model = causal.load(folder, manifest)
        manifest["spec"] = {**manifest["spec"], "n_parameters": parameter_count(model)}
        (folder / SPEC).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        probe = _probe(model, data)
        files = file_digests(folder)
        recipe = {"kind": "import", "label": "imported (causal LM)", "source": str(source),
                  "data": corpus.model_dump()}  # fmt: skip
        register_dataset(ws, data)
        version = ws.store.register_version(
            name,
            artifact_dir=folder,
            spec=manifest["spec"],
            config_hash=hashlib.sha256(json.dumps([recipe, files], sort_keys=True).encode()).hexdigest(),
            parent=None,
            lineage={
                "datasets": data.fingerprints(),
                "dataset": data.name,
                "recipe": recipe,
                "files": files,
                "gguf": manifest.get("gguf"),
                "frameworks": causal.frameworks(),
                "probe": {"documents": PROBE_DOCUMENTS, "perplexity": probe},
                "description": description,
                "licence": licence,
            },
            environment=environment(),
            description=description,
        )
    vocab = int(manifest["spec"]["vocab_size"])
    warnings = []
    if probe >= vocab:
        warnings.append(
            f"{version.ref} has a perplexity of {probe:.0f} on {PROBE_DOCUMENTS} validation documents of "
            f"{data.name}, no better than guessing among its {vocab} tokens: its tokenizer is probably not "
            "the one it was trained with."
        )
    return ImportedLanguageModel(version, files, probe, vocab, warnings)


def load_corpus(spec: DataSpec) -> Dataset:
    data = load_dataset(spec)
    if data.kind != "text":
        raise UsageError(
            f"{data.name} holds {data.kind} data; a language model is evaluated on texts (fortunes, or "
            "jsonl:FILE with --text-column naming the texts)."
        )
    return data


def parameter_count(model: causal.LanguageModel) -> int:
    """The model's parameters, a tied weight counted once."""
    unique = {p.data_ptr(): p.numel() for p in model.model.parameters()}  # tied weights once
    return int(sum(unique.values()))


def _probe(model: causal.LanguageModel, data: Dataset) -> float:
    texts = [str(t) for t in data.val.x[:PROBE_DOCUMENTS]]
    scores = score_documents(
        model.model, model.tokenizer, texts, max_length=min(MAX_LENGTH, model.context_length)
    )
    perplexity = math.exp(scores.nll.sum() / scores.tokens.sum())
    if not math.isfinite(perplexity):
        raise DataError(f"{model.manifest.get('source')}: the model gives non-finite log-likelihoods.")
    return perplexity


def load_version(ws: Workspace, version: VersionInfo) -> causal.LanguageModel:
    """The stored model of a language-model version, in its precision."""
    if not is_language_model(version):
        raise UsageError(f"{version.ref} is not a language model; use `assay eval` and `assay gate` for it.")
    if version.artifact_digest is None:
        raise DataError(f"{version.ref} was registered without model files.")
    folder = ws.store.artifacts.path(version.artifact_digest)
    return causal.load(folder, read_manifest(folder))


def resolve_language_model(ws: Workspace, ref: str) -> VersionInfo:
    version = ws.store.resolve(ref)
    if not is_language_model(version):
        raise UsageError(
            f"{ref} is not a language model ({version.spec.get('arch')}); use `assay eval` for it."
        )
    return version


def corpus_task(data: Dataset, task_file: str | Path | None = None) -> Task:
    """The task file's items, else the cloze task built from the corpus's test documents."""
    if task_file is not None:
        return read_task(task_file)
    test = data.test
    return cloze_task(f"{data.name}-cloze", [str(t) for t in test.x], list(test.ids), list(test.y))


def generation_task(data: Dataset, task_file: str | Path | None = None) -> GenerationTask:
    """The generation task file's items, else the last-word task built from the corpus's test documents."""
    if task_file is not None:
        return read_generation_task(task_file)
    return last_word_task(f"{data.name}-last-word", [str(t) for t in data.test.x], list(data.test.ids))


def assess_language_model(
    ws: Workspace,
    version: VersionInfo,
    data: Dataset,
    task: Task,
    *,
    generation: GenerationTask | None = None,
    model: causal.LanguageModel | None = None,
    max_length: int = MAX_LENGTH,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> Assessment:
    """One model on the corpus's test documents and the tasks: perplexity, nats per token and bits per
    byte with their evidence per document, the multiple-choice task's outputs with every output metric,
    and the generation task's exact match (where one is given) with its evidence per item."""
    from assay.train.loop import progress_bar

    model = model or load_version(ws, version)  # ``model``: the version's, already loaded by the caller
    texts, ids = [str(t) for t in data.test.x], [str(i) for i in data.test.ids]
    window = min(max_length, model.context_length)
    with progress_bar(progress) as bar:
        started = time.perf_counter()
        generated = 0 if generation is None else len(generation.items)
        job = bar.add_task(
            f"scoring {version.ref}", total=len(texts) + len(task.items) + generated,
            info=f"{len(texts)} documents, {len(task.items)} {task.name} items"
            + (f", {generated} {generation.name} items" if generation is not None else ""),
        )  # fmt: skip
        scores = score_documents(
            model.model,
            model.tokenizer,
            texts,
            ids=ids,
            max_length=window,
            on_document=lambda: bar.advance(job),
            kv=model.kv,
        )
        outputs = score_task(
            model.model, model.tokenizer, task, progress=lambda: bar.advance(job), kv=model.kv
        )
        answers = None
        if generation is not None:
            answers = generate_answers(
                model.model, model.tokenizer, generation, lambda: bar.advance(job), kv=model.kv
            )
        seconds = time.perf_counter() - started
    perplexity = scores.measurements(n_boot=n_boot, seed=seed)
    info = {
        "ref": version.ref,
        "name": version.model,
        "version": version.version,
        "card": {
            "architecture": version.spec.get("architecture"),
            "precision": model.precision,
            "kv_cache": model.kv,
            "parameters": version.spec.get("n_parameters"),
            "weight_bytes": causal.weight_bytes(model.model),
            "gguf": version.lineage.get("gguf"),
        },
        "language_model": {
            "task": task.name,
            "items": len(task.items),
            "documents": len(texts),
            "max_length": window,
            "seconds": seconds,
        },
    }
    assessment = assess(outputs, info=info, n_boot=n_boot, seed=seed)
    assessment.measurements.extend(perplexity)
    assessment.per_example.update(scores.per_example(perplexity))
    if generation is not None and answers is not None:
        measurement, evidence = exact_match(generation, hits(generation, answers), n_boot=n_boot, seed=seed)
        assessment.measurements.append(measurement)
        assessment.per_example[measurement.name] = evidence
    return assessment


def dataset_record(data: Dataset, task: Task, generation: GenerationTask | None = None) -> dict[str, Any]:
    """What a run's document says of its data: the corpus's test split and the tasks' items."""
    test = data.test
    items = hashlib.sha256(
        json.dumps([[i.id, i.context, list(i.choices), i.answer] for i in task.items]).encode()
    )
    return {
        "name": data.name,
        "split": "test",
        "n": test.n,
        "fingerprint": test.fingerprint(),
        "class_names": [],
        "source": data.source,
        "licence": data.licence,
        "task": {"name": task.name, "items": len(task.items), "sha256": items.hexdigest()},
        "generation": None
        if generation is None
        else {"name": generation.name, "items": len(generation.items)},
    }


def evaluate_language_model(
    ws: Workspace,
    ref: str,
    *,
    corpus: DataSpec | None = None,
    limit: int | None = None,
    task_file: str | Path | None = None,
    generation_file: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: bool = False,
) -> Evaluated:
    """``assay llm eval``: one version on its corpus (or ``corpus``; ``limit``: a stratified subsample of
    each split of its own), recorded with its report."""
    version = resolve_language_model(ws, ref)
    data = load_corpus(corpus or own_corpus(version, limit))
    task, generation = corpus_task(data, task_file), generation_task(data, generation_file)
    assessment = assess_language_model(
        ws, version, data, task, generation=generation, n_boot=n_boot, seed=seed, progress=progress
    )
    record = dataset_record(data, task, generation)
    return record_evaluation(ws, assessment, record, version=version, out_dir=out_dir)


def gate_language_models(
    ws: Workspace,
    baseline: str,
    candidate: str,
    policy: Policy = LANGUAGE_MODEL_POLICY,
    *,
    corpus: DataSpec | None = None,
    limit: int | None = None,
    task_file: str | Path | None = None,
    generation_file: str | Path | None = None,
    out_dir: Path | None = None,
    progress: bool = False,
) -> Evaluated:
    """``assay llm gate``: the candidate against the baseline on the same documents and items, paired
    (on the candidate's corpus unless ``corpus`` names one; ``limit`` as for
    :func:`evaluate_language_model`)."""
    versions = [resolve_language_model(ws, ref) for ref in (baseline, candidate)]
    data = load_corpus(corpus or own_corpus(versions[1], limit))
    task, generation = corpus_task(data, task_file), generation_task(data, generation_file)
    base, cand = (
        assess_language_model(
            ws,
            v,
            data,
            task,
            generation=generation,
            n_boot=policy.n_bootstrap,
            seed=policy.seed,
            progress=progress,
        )
        for v in versions
    )
    return record_comparison(
        ws,
        base,
        cand,
        policy,
        dataset_record(data, task, generation),
        baseline_version=versions[0],
        candidate_version=versions[1],
        out_dir=out_dir,
    )


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # no second 0.5 GB write where the temporary folder shares the disk
    except OSError:
        shutil.copyfile(source, target)


def own_corpus(version: VersionInfo, limit: int | None = None) -> DataSpec:
    """The corpus ``version`` was imported with (``limit``: a stratified subsample of each split)."""
    spec = DataSpec.model_validate(version.lineage["recipe"]["data"])
    return spec if limit is None else spec.model_copy(update={"limit": limit})


def quantize_language_model(ws: Workspace, ref: str, precision: str) -> VersionInfo:
    """A cheaper variant of a language-model version: the same files with ``precision`` applied when it
    loads (:func:`assay.llm.causal.with_precision`), registered as the next version with its parent.
    ``precision`` names a variant (:func:`assay.llm.causal.parse_variant`): the weights' precision, an
    fp8 KV cache (``kv_fp8``), or both (``int8_weight_only_bf16+kv_fp8``)."""
    parent = resolve_language_model(ws, ref)
    weights, kv = causal.parse_variant(precision)
    if (weights, kv) == ("fp32", "model"):
        raise UsageError(
            f"fp32 is the parent's own precision; choose one of {', '.join(causal.PRECISIONS[1:])} "
            f"or {causal.KV_FP8}."
        )
    source = ws.store.artifacts.path(str(parent.artifact_digest))
    manifest = read_manifest(source)
    current = causal.variant_name(str(manifest.get("precision", "fp32")), str(manifest.get("kv", "model")))
    if current != "fp32":
        raise UsageError(f"{parent.ref} is already a {current} variant; quantize its fp32 parent.")
    with tempfile.TemporaryDirectory(prefix="assay-llm-variant-") as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        for path in source.iterdir():  # the parent's files as they are (the store copies them again)
            if path.name != SPEC:
                _link_or_copy(path, folder / path.name)
        manifest = {**manifest, "precision": weights, "source": f"{precision} of {parent.ref}"}
        if kv != "model":
            manifest["kv"] = kv
        (folder / SPEC).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        model = causal.load(folder, manifest)  # the precision applies here, or the variant is refused
        recipe = {
            "kind": "quantize",
            "label": precision,
            "precision": precision,
            "data": parent.lineage["recipe"]["data"],
        }
        files = file_digests(folder)
        version = ws.store.register_version(
            parent.model,
            artifact_dir=folder,
            spec={**parent.spec, "precision": precision, "weight_bytes": causal.weight_bytes(model.model)},
            config_hash=hashlib.sha256(json.dumps([recipe, files], sort_keys=True).encode()).hexdigest(),
            parent=parent.ref,
            lineage={**parent.lineage, "recipe": recipe, "files": files, "frameworks": causal.frameworks()},
            environment=environment(),
        )
    return version


__all__ = [
    "LANGUAGE_MODEL_POLICY",
    "ImportedLanguageModel",
    "assess_language_model",
    "evaluate_language_model",
    "gate_language_models",
    "import_language_model",
    "quantize_language_model",
]

"""The variants of a language model as one search: each precision registered as a variant, gated against
the parent on the same documents and task items, its decoding timed, and the frontier of the passing ones
by tokens per second, weight bytes and memory (the weights and one sequence's KV cache at the model's
full context, where an fp8 cache, ``+kv_fp8``, pays). A GGUF type (``gguf_q4_0`` and the like,
:mod:`assay.llm.gguf_types`) is gated but not timed: it runs in llama.cpp, and its weight bytes are the
type's.

The parent is scored once; each variant's gate is recorded as a run (and lets ``assay models promote``
move an alias to it) as ``assay llm gate`` records it. Decoding is timed as ``benchmarks/llm_decode.py``
times it, shorter: greedy, batch 1, transformers' dynamic cache, the best of three runs by TPOT.

Example:
    >>> from assay.llm.search import DEFAULT_PRECISIONS
    >>> DEFAULT_PRECISIONS[0]
    'bf16'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from assay.cost import Catalogue, cost_table, load_catalogue
from assay.cost.machine import measure_machine
from assay.data import DataSpec
from assay.gate import Policy
from assay.llm import causal
from assay.llm.decoding import GreedyDecoder, kv_cache_bytes, weight_bytes_read
from assay.llm.gguf_types import GGUF_PRECISIONS, stored_bytes
from assay.llm.release import (
    LANGUAGE_MODEL_POLICY,
    assess_language_model,
    corpus_task,
    dataset_record,
    generation_task,
    load_corpus,
    load_version,
    own_corpus,
    parameter_count,
    quantize_language_model,
    resolve_language_model,
)
from assay.store.records import VersionInfo
from assay.workspace import Workspace, record_comparison

DEFAULT_PRECISIONS = (
    "bf16", "int8_weight_only_bf16", "w8a8_block32", "int8_weight_only", "int8_dynamic",
    "int8_weight_only_bf16+kv_fp8",
)  # fmt: skip
PROMPT_TOKENS, NEW_TOKENS, RUNS = 16, 24, 3


@dataclass(frozen=True)
class Point:
    """One model of the search: its verdict (None for the parent) and its cost."""

    ref: str
    precision: str
    passed: bool | None
    tokens_per_second: float | None  # None: not run by assay (a GGUF type runs in llama.cpp)
    weight_bytes: int
    nll_per_token_delta: tuple[float, float, float] | None = None  # value, low, high
    accuracy_delta: tuple[float, float, float] | None = None
    run_id: int | None = None
    parameters: int = 0
    # what decoding one sequence at the model's full context holds: every weight as stored and the KV
    # cache (None: run in llama.cpp, not by assay)
    memory_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def cost_point(self, key: str) -> dict[str, Any] | None:
        """The point the cost table prices: a batch-1 decode step per generated token, its arithmetic
        2 FLOPs a parameter, its reads the weights (None when assay did not time it)."""
        if not self.tokens_per_second:
            return None
        status = "root" if self.passed is None else ("passed" if self.passed else "failed")
        weights, _ = causal.parse_variant(self.precision)
        integer = weights in ("int8_dynamic", "w8a8_block32")  # int8 x int8 products
        compute = "int8" if integer else "bf16" if "bf16" in self.precision else "fp32"
        return {
            "key": key,
            "version": self.ref,
            "status": status,
            "precision": compute,  # weight-only int8 computes in its activations' precision
            "flops": 2 * self.parameters,
            "metrics": {
                "size_on_disk": {"value": float(self.weight_bytes)},
                "latency_p50_b1": {"value": 1e3 / self.tokens_per_second},
            },
        }


@dataclass
class LanguageSearch:
    parent: Point
    variants: list[Point] = field(default_factory=list)
    cost: dict[str, Any] | None = None  # USD and Wh per 1,000 generated tokens (assay.cost), once timed

    def price(self, catalogue: Catalogue | None = None) -> None:
        """Set :attr:`cost`: the timed models priced per 1,000 generated tokens on this machine and
        projected on the catalogue's targets."""
        keyed = [self.parent.cost_point("root"), *(p.cost_point(p.ref) for p in self.variants)]
        points = [p for p in keyed if p is not None]
        self.cost = cost_table(
            points, catalogue or load_catalogue(), measure_machine(), unit="generated tokens"
        )

    @property
    def frontier(self) -> list[Point]:
        """The passing timed variants no other one beats on tokens/s, weight bytes and memory at once."""
        costs = [
            (p, (p.tokens_per_second, -p.weight_bytes, -(p.memory_bytes or p.weight_bytes)))
            for p in self.variants if p.passed and p.tokens_per_second
        ]  # fmt: skip
        return [
            p for p, mine in costs
            if not any(all(a >= b for a, b in zip(theirs, mine, strict=True)) and theirs != mine
                       for _, theirs in costs)
        ]  # fmt: skip

    @property
    def best(self) -> Point | None:
        """The fastest passing variant, if it decodes faster than the parent."""
        parent = self.parent.tokens_per_second or 0.0
        faster = [p for p in self.variants if p.passed and (p.tokens_per_second or 0.0) > parent]
        return max(faster, key=lambda p: p.tokens_per_second or 0.0, default=None)

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "parent": self.parent.to_dict(),
            "variants": [p.to_dict() for p in self.variants],
            "frontier": [p.ref for p in self.frontier],
            "best": None if best is None else best.ref,
            "cost": self.cost,
        }


def decode_rate(lm: causal.LanguageModel) -> float:
    """Tokens per second of greedy batch-1 decoding (the best of ``RUNS``), after a warm-up."""
    prompt = list(lm.tokenizer("The man who goes alone can start today, " * 4)["input_ids"])[:PROMPT_TOKENS]
    decoder = GreedyDecoder(lm, "dynamic", max_context=PROMPT_TOKENS + NEW_TOKENS + 8)
    decoder.run([prompt], 4)
    return max(decoder.run([prompt], NEW_TOKENS).tokens_per_second for _ in range(RUNS))


def _delta(verdict: dict[str, Any], metric: str) -> tuple[float, float, float] | None:
    rule = next((r for r in verdict["rules"] if r["metric"] == metric and r["delta"] is not None), None)
    return None if rule is None else (rule["delta"], rule["delta_ci_low"], rule["delta_ci_high"])


def search_language_model(
    ws: Workspace,
    ref: str,
    *,
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS,
    policy: Policy = LANGUAGE_MODEL_POLICY,
    corpus: DataSpec | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> LanguageSearch:
    """Every precision of ``precisions`` as a variant of ``ref`` (an fp32 version), gated and timed."""
    parent = resolve_language_model(ws, ref)
    data = load_corpus(corpus or own_corpus(parent, limit))
    task, generation = corpus_task(data), generation_task(data)

    def assessed(version: VersionInfo, lm: causal.LanguageModel) -> Any:
        return assess_language_model(
            ws,
            version,
            data,
            task,
            generation=generation,
            model=lm,
            n_boot=policy.n_bootstrap,
            seed=policy.seed,
            progress=progress,
        )

    lm = load_version(ws, parent)  # each model loads once, for its scores and its timing
    base = assessed(parent, lm)
    result = LanguageSearch(_point(parent, lm, None))
    for precision in precisions:
        variant = quantize_language_model(ws, parent.ref, precision)
        lm = load_version(ws, variant)
        cand = assessed(variant, lm)
        run = record_comparison(ws, base, cand, policy, dataset_record(data, task, generation),
                                baseline_version=parent, candidate_version=variant)  # fmt: skip
        verdict = run.document["verdict"]
        result.variants.append(
            _point(
                variant,
                lm,
                bool(verdict["passed"]),
                _delta(verdict, "nll_per_token"),
                _delta(verdict, "accuracy"),
                run.run_id,
            )
        )
    result.price()
    return result


def _point(
    version: VersionInfo,
    lm: causal.LanguageModel,
    passed: bool | None,
    nll: tuple[float, float, float] | None = None,
    accuracy: tuple[float, float, float] | None = None,
    run_id: int | None = None,
) -> Point:
    parameters = parameter_count(lm)
    if lm.precision in GGUF_PRECISIONS:  # rounded to the type, run in float32: llama.cpp's speed, not ours
        stored = stored_bytes(lm.model, lm.precision)
        return Point(version.ref, lm.variant, passed, None, stored, nll, accuracy, run_id, parameters)
    rate, read = decode_rate(lm), weight_bytes_read(lm.model)
    memory = causal.weight_bytes(lm.model) + kv_cache_bytes(lm, lm.context_length)
    return Point(version.ref, lm.variant, passed, rate, read, nll, accuracy, run_id, parameters, memory)

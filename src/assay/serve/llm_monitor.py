"""Monitoring a served language model: the prompts it is sent, against the corpus it was gated on.

Each prompt is one row of two statistics: its length in tokens, and the served model's mean negative
log-likelihood per prompt token (nats), which the prefill computes anyway (:mod:`assay.serve.llm_engine`).
Text unlike the gating corpus (another language or domain, code, a template gone wrong, random
characters) surprises the model: its NLL per token moves before any answer can be checked, the
perplexity signal of OOD detection for language models.

The reference is the same two statistics on the corpus's test documents, the documents the version was
gated on (at most :data:`REFERENCE_DOCUMENTS`, a seeded sample), framed as the server frames a request:
the text itself for ``/v1/completions``, a one-message user chat through the model's template for
``/v1/chat/completions``. A template adds tokens of its own, and they are predictable, so the two
framings differ: each is a stream of windows of its own, calibrated on its own reference. The served model
scores the reference in its precision (a bf16 variant is compared with what bf16 says of the corpus),
once per version and precision; the result is cached in the workspace's outputs folder. Reference prompts
are cut to :data:`MAX_LENGTH` tokens, the gating's scoring window.

The detector is the classifiers' ``features`` detector (:mod:`assay.serve.drift`): a two-sample KS test
per statistic, Benjamini–Hochberg across the two, calibrated by resampling reference windows to the
false-alarm budget. An alarmed window becomes an incident and, by policy, a guarded rollback
(:class:`~assay.serve.guard.RollbackGuard`), as for a classifier.

A mixture-of-experts model adds its router's load: for each routed layer and expert, the share of the
prompt's token choices that expert took (:func:`assay.llm.moe.expert_shares`), from the same prefill.
Prompts unlike the corpus route differently (a topic the experts did not specialise in, a language
they route to one expert), and the window's per-layer expert-load histogram is tested, feature by
feature, with the same KS tests and the same Benjamini–Hochberg correction and calibration.

Output length is counted (the server's histograms) but not tested: how long an answer may be is each
request's own ``max_tokens``, so the corpus says nothing of it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from assay.errors import DataError
from assay.llm.causal import LanguageModel
from assay.llm.moe import batch_expert_shares, routing
from assay.llm.perplexity import BATCH_DOCUMENTS, next_token_logprobs
from assay.llm.release import MAX_LENGTH, load_corpus, own_corpus
from assay.serve.drift import (
    SMALLEST_WINDOW,
    Baseline,
    Calibration,
    Window,
    baseline_for,
    calibrate,
    evaluate,
)
from assay.serve.llm_engine import Sequence
from assay.serve.monitor import Stream, WindowBuffer, WindowResult
from assay.serve.reference import Reference
from assay.serve.served import MonitorSettings, monitoring_window
from assay.store.records import VersionInfo
from assay.workspace import Workspace

PROMPT_STATISTICS = ("prompt_tokens", "prompt_nll_per_token")
FRAMINGS: tuple[Stream, ...] = ("completions", "chat")
# 600 documents calibrate windows of 100 prompts (a sixth), and score in about 50 s a framing for
# SmolLM2-135M in bf16 on 2 cores (docs/llm.md, Monitoring); the result is cached per version
REFERENCE_DOCUMENTS = 600
CACHE_FORMAT = "assay.prompt-reference/1"  # part of the cache key: a change of method rebuilds


def frame(lm: LanguageModel, text: str, framing: Stream) -> list[int]:
    """``text`` as the server would tokenize a request of ``framing``, cut to :data:`MAX_LENGTH`."""
    ids = lm.encode(text) if framing == "completions" else lm.encode_chat([{"role": "user", "content": text}])
    return ids[:MAX_LENGTH]


def prompt_feature_names(experts: int = 0, layers: int = 0) -> tuple[str, ...]:
    """The statistics of a prompt: :data:`PROMPT_STATISTICS`, then for an MoE of ``experts`` experts in
    ``layers`` routed layers, ``expert_share.L.E`` for each routed layer L and expert E."""
    return PROMPT_STATISTICS + tuple(f"expert_share.{i}.{e}" for i in range(layers) for e in range(experts))


@torch.inference_mode()
def prompt_statistics(
    lm: LanguageModel, prompts: Seq[list[int]], on_batch: Callable[[int], object] | None = None
) -> np.ndarray:
    """One row per prompt (:func:`prompt_feature_names`): its tokens, the model's mean NLL per token after
    the first (nats) and an MoE's expert shares, as the engine computes them at prefill; prompts (of 2
    tokens or more) go in padded batches of similar length. ``on_batch`` gets the number of prompts each
    batch scored."""
    if any(len(p) < 2 for p in prompts):
        raise DataError("Every reference prompt needs 2 tokens or more: the first one is not predicted.")
    moe = routing(lm.model) is not None
    out: np.ndarray | None = None
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), BATCH_DOCUMENTS):
        rows = order[start : start + BATCH_DOCUMENTS]
        batch = [prompts[i] for i in rows]
        logprobs, mask = next_token_logprobs(lm.model, batch)
        columns = [
            np.array([[len(p)] for p in batch], dtype=np.float64),
            (-logprobs.sum(dim=1) / mask.sum(dim=1)).numpy()[:, None],
        ]
        if moe:  # a second pass for the router: the reference is built once per version and cached
            columns.append(batch_expert_shares(lm.model, batch).reshape(len(batch), -1))
        block = np.concatenate(columns, axis=1)
        if out is None:
            out = np.zeros((len(prompts), block.shape[1]))
        out[rows] = block
        if on_batch is not None:
            on_batch(len(rows))
    return out if out is not None else np.zeros((0, len(PROMPT_STATISTICS)))


def prompt_row(sequence: Sequence) -> np.ndarray | None:
    """A served prompt's statistics as the engine left them on ``sequence``, None under 2 tokens."""
    if sequence.prompt_nll is None:
        return None
    shares = [] if sequence.expert_shares is None else sequence.expert_shares.ravel().tolist()
    return np.array([len(sequence.prompt), sequence.prompt_nll, *shares], dtype=np.float64)


def prompt_reference(stats: np.ndarray, names: Seq[str] = PROMPT_STATISTICS) -> Reference:
    """The reference of prompt statistics ``(n, len(names))``: inputs alone, no class outputs."""
    return Reference(
        kind="table", n_classes=0, feature_names=tuple(names), inputs=np.asarray(stats, np.float64),
        probs=None, ood=None, embeddings=None, labels=None,
    )  # fmt: skip


def corpus_documents(version: VersionInfo, seed: int = 0) -> list[str]:
    """The test documents of the corpus ``version`` was imported with; a seeded sample of at most
    :data:`REFERENCE_DOCUMENTS`, in their order."""
    texts = [str(t) for t in load_corpus(own_corpus(version)).test.x]
    if len(texts) > REFERENCE_DOCUMENTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), REFERENCE_DOCUMENTS, replace=False))
        texts = [texts[i] for i in keep]
    return texts


def prompt_references(
    ws: Workspace, version: VersionInfo, lm: LanguageModel, *, seed: int = 0, progress: bool = False
) -> dict[Stream, Reference]:
    """Each framing's reference for ``version`` served as ``lm`` (chat only with a chat template), from
    the outputs cache when it was built before; ``progress`` shows a bar while prompts are scored."""
    texts = corpus_documents(version, seed)
    key = hashlib.sha256(
        json.dumps([CACHE_FORMAT, version.artifact_digest, lm.precision, texts]).encode()
    ).hexdigest()[:20]
    references: dict[Stream, Reference] = {}
    for framing in FRAMINGS:
        if framing == "chat" and lm.chat_template is None:
            continue  # the server refuses chats without a template
        path = ws.cache_dir / "llm-prompts" / f"{key}-{framing}.npz"
        if path.is_file():
            try:
                references[framing] = Reference.load(path)
                continue
            except DataError:
                pass  # a damaged cache entry is rebuilt
        prompts = [p for p in (frame(lm, t, framing) for t in texts) if len(p) >= 2]
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"scoring the corpus as {framing} prompts", total=len(prompts))
            stats = prompt_statistics(lm, prompts, on_batch=partial(bar.advance, task))
        # the routed layers are the shares' columns over the experts (a dense layer between them has none)
        experts = route[0] if (route := routing(lm.model)) else 0
        names = prompt_feature_names(experts, (stats.shape[1] - 2) // experts if experts else 0)
        references[framing] = prompt_reference(stats, names)
        references[framing].save(path)
    return references


@dataclass(frozen=True, eq=False)
class _Prompts:
    """Consecutive prompts' statistics and arrival times."""

    stats: np.ndarray  # (n, statistics)
    arrived: np.ndarray

    def __len__(self) -> int:
        return int(self.stats.shape[0])

    def split(self, k: int) -> tuple[_Prompts, _Prompts]:
        return _Prompts(self.stats[:k], self.arrived[:k]), _Prompts(self.stats[k:], self.arrived[k:])


@dataclass
class _Framing:
    baseline: Baseline
    calibration: Calibration
    experts: int  # an MoE's experts per routed layer (0: a dense model, no shares)
    reference_load: list[list[float]] | None  # the corpus's expert load per routed layer
    buffer: WindowBuffer[_Prompts] = field(default_factory=WindowBuffer)
    recent: list[WindowResult] = field(default_factory=list)


class PromptMonitor:
    """The windows of one served version's prompts, a stream per framing (module docstring).

    Thread-safe: each :meth:`observe` adds its row atomically.
    """

    def __init__(
        self, references: Mapping[Stream, Reference], settings: MonitorSettings, ref: str, history: int = 1000
    ) -> None:
        self.history = history
        self._streams: dict[Stream, _Framing] = {}
        lines = []
        for framing, reference in references.items():
            # no labels, so no accuracy detector to need 30 rows: windows go down to the detectors' 10
            window, line = monitoring_window(
                reference.n, settings.window, f"{ref} ({framing} prompts)", smallest=SMALLEST_WINDOW
            )
            calibration = calibrate(
                reference, window=window, false_alarm_windows=settings.false_alarm_windows, seed=settings.seed
            )
            baseline = baseline_for(reference, calibration)
            shares = [n for n in reference.feature_names if n.startswith("expert_share.")]
            experts = len({n.rsplit(".", 1)[1] for n in shares})
            # the comparison half's mean share of each expert (inputs_sorted: features x rows)
            load = baseline.inputs_sorted[2:].mean(axis=1).reshape(-1, experts).tolist() if experts else None
            self._streams[framing] = _Framing(baseline, calibration, experts, load)
            lines.append(f"{framing} prompts in {line}")
        self.monitoring = "; ".join(lines) + " against the gating corpus"
        self._lock = threading.Lock()

    @property
    def streams(self) -> tuple[Stream, ...]:
        return tuple(self._streams)

    def window(self, framing: Stream) -> int:
        return self._streams[framing].calibration.window

    def observe(self, framing: Stream, row: np.ndarray | None) -> list[WindowResult]:
        """Add one prompt's statistics (:func:`prompt_row`); return the window it closed, if any. A prompt
        of one token (``None``: no NLL) or of a framing without a reference is not monitored."""
        stream = self._streams.get(framing)
        if stream is None or row is None:
            return []
        names = stream.baseline.feature_names
        if len(row) != len(names):
            raise DataError(f"a prompt row of {len(row)} statistics for a reference of {len(names)}.")
        rows = _Prompts(np.asarray(row, dtype=np.float64)[None], np.array([time.time()]))
        with self._lock:
            closed = stream.buffer.add(rows, stream.calibration.window)
        results = [self._evaluate(framing, stream, index, parts) for index, parts in closed]
        with self._lock:
            stream.recent.extend(results)
            del stream.recent[: max(0, len(stream.recent) - self.history)]
        return results

    def recent(self, framing: Stream, n: int = 100) -> list[WindowResult]:
        """The last ``n`` closed windows of ``framing``, oldest first."""
        with self._lock:
            stream = self._streams.get(framing)
            return list(stream.recent[-n:]) if stream is not None and n > 0 else []

    def _evaluate(self, framing: Stream, stream: _Framing, index: int, parts: list[_Prompts]) -> WindowResult:
        stats = np.concatenate([p.stats for p in parts])
        empty = np.empty(0)
        # only the features detector is calibrated (the reference has no class outputs): the class columns
        # stay empty
        window = Window(stats, empty, np.empty(0, dtype=np.int64), empty)
        results = evaluate(stream.baseline, stream.calibration, window)
        summary: dict[str, Any] = {
            "input_means": dict(zip(PROMPT_STATISTICS, stats[:, :2].mean(axis=0).tolist(), strict=True)),
            "input_medians": dict(
                zip(PROMPT_STATISTICS, np.median(stats[:, :2], axis=0).tolist(), strict=True)
            ),
        }
        if stream.experts:  # the window's expert-load histogram per routed layer, and the corpus's
            summary["expert_load"] = stats[:, 2:].mean(axis=0).reshape(-1, stream.experts).tolist()
            summary["expert_load_reference"] = stream.reference_load
        started = float(parts[0].arrived[0])
        return WindowResult(index, len(stats), started, time.time(), results, summary, stream=framing)

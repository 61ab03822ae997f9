"""Continuous batching for a causal language model: sequences join and leave the running batch between
decode steps.

One thread runs the model. Each turn it (1) drops the sequences that finished or whose client went away,
(2) admits waiting sequences while the batch has room (``max_sequences``, and ``max_batch_tokens`` over
every running sequence's prompt plus its ``max_tokens``), prefilling each alone and merging its KV cache
into the batch's, and (3) runs one decode step for every running sequence at once. The batch's KV cache
is one tensor per layer, left-padded to the longest sequence: an attention mask hides the padding and each
row has its own positions, so a sequence decodes as it would alone. Joining pads, leaving selects rows
(and drops padding no row needs any more): the copies happen only when the batch changes, not at every
step.

A request that cannot wait (the queue holds ``max_waiting`` sequences already) is refused at once
(:class:`Overloaded`); the server answers 429. Tokens go to each sequence's ``emit`` callback as text
deltas (held back while the text ends inside a multi-byte character), then one final event with the
finish reason (``stop``: end of sequence or a stop string; ``length``: ``max_tokens`` or the context;
``error``: the model raised, which is logged, and the engine goes on with the next requests) and the
token counts.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from assay.errors import UsageError
from assay.llm.causal import LanguageModel
from assay.llm.moe import expert_shares, routing
from assay.llm.perplexity import mean_token_nll

Event = dict[
    str, Any
]  # {"delta": str} or {"finish_reason": ..., "prompt_tokens": ..., "completion_tokens": ...}
_ids = itertools.count(1)
logger = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue is full: the request is refused rather than left to wait without bound."""


@dataclass
class Sequence:
    """One request's generation. ``emit`` is called from the engine's thread."""

    prompt: list[int]
    max_tokens: int
    emit: Callable[[Event], None]
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    id: int = field(default_factory=lambda: next(_ids))
    generated: list[int] = field(default_factory=list)
    text: str = ""  # decoded so far, as emitted
    cancelled: bool = False  # set by the server when the client goes away; honoured at the next step
    finish_reason: str | None = None
    submitted: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    generator: torch.Generator | None = None
    framing: Literal["completions", "chat"] = "completions"  # the endpoint that framed the prompt
    prompt_nll: float | None = None  # the model's mean NLL per prompt token (nats), from the prefill
    expert_shares: np.ndarray | None = None  # an MoE's (routed layers, experts) load of this prompt

    @property
    def budget(self) -> int:
        """The tokens it may come to hold: prompt plus everything it may generate."""
        return len(self.prompt) + self.max_tokens


@dataclass
class EngineConfig:
    max_sequences: int = 16  # running together in one batch
    max_batch_tokens: int = 16384  # prompt + max_tokens over the running sequences
    max_waiting: int = 64  # queued before requests are refused


class Engine:
    """The model's thread and its batch (see the module docstring). ``observe`` receives the figures the
    metrics record: ``("prefill", seconds)``, ``("step", seconds, batch)``, ``("ttft", seconds)``,
    ``("tpot", seconds)`` (a finished sequence's mean time per token after its first),
    ``("finished", reason, prompt_tokens, completion_tokens)``, ``("queue", n)``, and ``("prompt",
    sequence)`` after each prefill (its ``prompt_nll`` set: what the monitor reads)."""

    def __init__(
        self,
        lm: LanguageModel,
        config: EngineConfig | None = None,
        observe: Callable[..., None] | None = None,
    ) -> None:
        if lm.kv != "model":
            # the batch's cache is one tensor per layer over every row, where an fp8 cache keeps one scale
            # per layer, set by one sequence's prefill: rows from different prompts cannot share it
            raise UsageError(
                f"{lm.variant} keeps its KV cache in fp8, which the server's continuous batching cannot "
                f"hold (one scale per layer, set by each sequence's own prompt); serve a variant of the "
                f"same weights with the model's cache ({lm.precision})."
            )
        self.lm, self.config = lm, config or EngineConfig()
        self.observe = observe or (lambda *_: None)
        self.eos = _eos_ids(lm)
        self._config: Any = lm.model.config  # transformers' config, for the caches
        self._route = routing(lm.model)  # an MoE's (experts, top_k): its prefill returns the router's choices
        self._waiting: deque[Sequence] = deque()
        self._wake = threading.Condition()
        self._running = False
        self._closing = False  # draining: no new requests; the thread ends once the last one finished
        self._thread: threading.Thread | None = None
        self._rows: list[Sequence] = []
        self._cache: Any = None  # transformers DynamicCache over the rows
        self._mask = torch.zeros((0, 0), dtype=torch.long)
        self._positions = torch.zeros(0, dtype=torch.long)
        self._next = torch.zeros((0, 1), dtype=torch.long)  # each row's token not yet in the cache

    # -- the server's side -------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="assay-llm-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._running = False
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def close(self) -> None:
        """Drain: refuse new requests, finish the running and waiting ones, then end the thread (a newer
        version's engine takes the new requests meanwhile)."""
        with self._wake:
            self._closing = True
            self._wake.notify()

    @property
    def finished(self) -> bool:
        """Whether the thread has ended (after :meth:`close` drained it, or :meth:`stop`)."""
        return self._thread is not None and not self._thread.is_alive()

    def submit(self, sequence: Sequence) -> None:
        """Queue ``sequence``; :class:`Overloaded` when the queue is full (or the engine drains)."""
        with self._wake:
            if self._closing:
                raise Overloaded("this version is being replaced; retry and the new one answers.")
            if len(self._waiting) >= self.config.max_waiting:
                raise Overloaded(
                    f"{len(self._waiting)} requests are waiting and {len(self._rows)} running, the most this "
                    "server queues; retry shortly."
                )
            self._waiting.append(sequence)
            self.observe("queue", len(self._waiting))
            self._wake.notify()

    def cancel(self, sequence: Sequence) -> None:
        """The client is gone: the sequence leaves at the next step (or is dropped from the queue)."""
        sequence.cancelled = True
        with self._wake:
            self._wake.notify()

    @property
    def running(self) -> int:
        return len(self._rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- the model's thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while self._running and not self._rows and not self._waiting and not self._closing:
                    self._wake.wait()
                if not self._running or (self._closing and not self._rows and not self._waiting):
                    break
            admitted: list[Sequence] = []
            try:
                self._leave([s for s in self._rows if s.cancelled or s.finish_reason is not None])
                admitted = self._admit()
                for sequence in admitted:
                    self._join(sequence)
                if self._rows:
                    self._step()
            except Exception:  # the model failed: its sequences end with "error", the engine goes on
                logger.exception("the language model failed during a step; its sequences end with an error")
                for sequence in [*self._rows, *admitted]:
                    self._finish(sequence, "error")
                self._leave(list(self._rows))
        for sequence in [*self._rows, *self._waiting]:  # shutting down: every stream gets its end
            self._finish(sequence, "abort")

    def _admit(self) -> list[Sequence]:
        admitted: list[Sequence] = []
        with self._wake:
            used = sum(s.budget for s in self._rows)
            while self._waiting and len(self._rows) + len(admitted) < self.config.max_sequences:
                head = self._waiting[0]
                if head.cancelled:
                    self._finish(self._waiting.popleft(), "cancelled")
                    continue
                # it waits for room; alone it always fits (the server refuses a request larger than that)
                if (self._rows or admitted) and used + head.budget > self.config.max_batch_tokens:
                    break
                admitted.append(self._waiting.popleft())
                used += head.budget
            self.observe("queue", len(self._waiting))
        return admitted

    @torch.inference_mode()
    def _join(self, sequence: Sequence) -> None:
        """Prefill the prompt alone and merge its cache into the batch's."""
        from transformers import DynamicCache

        started = time.perf_counter()
        ids = torch.tensor([sequence.prompt])
        cache: Any = DynamicCache(config=self._config)
        routed = {"output_router_logits": True} if self._route else {}
        out = self.lm.model(input_ids=ids, cache=cache, use_cache=True, **routed)
        logits = out.logits
        # the prefill scored every prompt token already: its mean NLL is the monitor's OOD signal, and an
        # MoE's router chose each token's experts in it
        sequence.prompt_nll = mean_token_nll(logits[0], ids[0])
        if self._route is not None:
            sequence.expert_shares = expert_shares(out.router_logits, self._route[1], torch.ones_like(ids))[0]
        self.observe("prefill", time.perf_counter() - started)
        self.observe("prompt", sequence)
        if sequence.seed is not None:
            sequence.generator = torch.Generator().manual_seed(sequence.seed)
        token = self._choose(logits[:, -1], [sequence])
        if self._deliver(sequence, int(token[0])):
            return  # done at its first token: it never joins
        mask = torch.ones((1, len(sequence.prompt)), dtype=torch.long)
        if not self._rows:
            self._cache, self._mask = cache, mask
        else:
            width = max(self._mask.shape[1], mask.shape[1])
            layers = [
                (
                    torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)]),
                    torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)]),
                )
                for old, new in zip(self._cache.layers, cache.layers, strict=True)
            ]
            self._cache = DynamicCache(ddp_cache_data=layers, config=self._config)
            self._mask = torch.cat([_pad_left(self._mask, width, dim=1), _pad_left(mask, width, dim=1)])
        self._rows.append(sequence)
        self._positions = torch.cat([self._positions, torch.tensor([len(sequence.prompt)])])
        self._next = torch.cat([self._next, token[:, None]])

    def _leave(self, gone: list[Sequence]) -> None:
        for sequence in gone:
            if sequence.finish_reason is None:
                self._finish(sequence, "cancelled")
        if not gone:
            return
        keep = [i for i, s in enumerate(self._rows) if s not in gone]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, torch.zeros((0, 0), dtype=torch.long)
            self._positions, self._next = (
                torch.zeros(0, dtype=torch.long),
                torch.zeros((0, 1), dtype=torch.long),
            )
            return
        rows = torch.tensor(keep)
        self._mask, self._positions, self._next = self._mask[rows], self._positions[rows], self._next[rows]
        used = self._mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0  # padding no remaining row needs
        from transformers import DynamicCache

        layers = [
            (layer.keys[rows, :, start:], layer.values[rows, :, start:]) for layer in self._cache.layers
        ]
        self._cache = DynamicCache(ddp_cache_data=layers, config=self._config)
        self._mask = self._mask[:, start:]

    @torch.inference_mode()
    def _step(self) -> None:
        started = time.perf_counter()
        mask = torch.cat([self._mask, torch.ones((len(self._rows), 1), dtype=torch.long)], dim=1)
        out = self.lm.model(
            input_ids=self._next,
            attention_mask=mask,
            position_ids=self._positions[:, None],
            cache=self._cache,
            use_cache=True,
        )
        self._mask, self._positions = mask, self._positions + 1
        tokens = self._choose(out.logits[:, -1], self._rows)
        self._next = tokens[:, None]
        seconds = time.perf_counter() - started
        self.observe("step", seconds, len(self._rows))
        for sequence, token, position in zip(
            self._rows, tokens.tolist(), self._positions.tolist(), strict=True
        ):
            if not self._deliver(sequence, int(token)) and position + 1 >= self.lm.context_length:
                self._finish(sequence, "length")  # the next token would have no position

    def _choose(self, logits: torch.Tensor, rows: list[Sequence]) -> torch.Tensor:
        """Greedy where a row's temperature is 0, else a draw from softmax(logits / temperature)."""
        chosen = logits.argmax(dim=-1)
        for i, sequence in enumerate(rows):
            if sequence.temperature > 0:
                probs = torch.softmax(logits[i].float() / sequence.temperature, dim=-1)
                chosen[i] = torch.multinomial(probs, 1, generator=sequence.generator)[0]
        return chosen

    def _deliver(self, sequence: Sequence, token: int) -> bool:
        """Record ``token`` and emit the new text; True when the sequence has finished."""
        if sequence.first_token is None:
            sequence.first_token = time.perf_counter()
            self.observe("ttft", sequence.first_token - sequence.submitted)
        if token in self.eos:
            self._finish(sequence, "stop")
            return True
        sequence.generated.append(token)
        text = self.lm.tokenizer.decode(sequence.generated, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in sequence.stop) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        if not text.endswith("\ufffd") and len(text) > len(sequence.text):
            sequence.emit({"delta": text[len(sequence.text) :]})
            sequence.text = text
        if cut >= 0:
            self._finish(sequence, "stop")
        elif len(sequence.generated) >= sequence.max_tokens:
            self._finish(sequence, "length")
        return sequence.finish_reason is not None

    def _finish(self, sequence: Sequence, reason: str) -> None:
        if sequence.finish_reason is not None:
            return
        sequence.finish_reason = reason
        usage = {"prompt_tokens": len(sequence.prompt), "completion_tokens": len(sequence.generated)}
        if sequence.first_token is not None and len(sequence.generated) > 1:
            self.observe("tpot", (time.perf_counter() - sequence.first_token) / (len(sequence.generated) - 1))
        self.observe("finished", reason, usage["prompt_tokens"], usage["completion_tokens"])
        sequence.emit({"finish_reason": reason, **usage})


def release_openmp_threads() -> bool:
    """Free the OpenMP worker threads of the calling thread's parallel regions (OpenMP 5's
    ``omp_pause_resource_all``), so that the engine's thread is the only one holding a team. True where
    the OpenMP runtime torch loaded was found (libgomp, torch's on Linux), False where nothing was done.

    Why: once the thread that loaded a model (the main thread, or the one that swapped a version in) has
    a team of its own, libgomp counts more threads than CPUs and the engine's parallel regions wake their
    threads by futex instead of spinning: a 576 x 576 int8 product took 68 us on the engine's thread
    against 12 us, and a SmolLM2 step 38.9 ms in the server against 15.5 ms (docs/llm.md, under load).
    A later parallel region of the calling thread makes its team again; the server calls this after
    every load.
    """
    try:
        gomp = ctypes.CDLL("libgomp.so.1")  # the one torch loaded: the same soname resolves to it
        pause = gomp.omp_pause_resource_all
    except (OSError, AttributeError):
        return False
    return int(pause(1)) == 0  # omp_pause_soft


def _pad_left(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    """``t`` with zeros before its entries along ``dim`` (the sequence axis) up to ``width``."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    pad = [0, 0] * (t.ndim - 1 - dim) + [missing, 0]
    return F.pad(t, pad)


def _eos_ids(lm: LanguageModel) -> set[int]:
    """The token ids that end a sequence: the tokenizer's end of sequence and the generation config's."""
    found: set[int] = set()
    for value in (
        getattr(lm.tokenizer, "eos_token_id", None),
        getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None),
    ):
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list):
            found.update(int(v) for v in value)
    return found

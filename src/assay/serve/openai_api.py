"""An OpenAI-compatible server for a language-model version: ``/v1/completions``,
``/v1/chat/completions`` (streamed as server-sent events when asked), ``/v1/models``, with continuous
batching (:mod:`assay.serve.llm_engine`), Prometheus metrics and hot swaps on promotion.

What a client gets, as OpenAI's API and its official client define it: a completion object (or chunks
ending with ``data: [DONE]``), ``usage`` with the token counts, and on an error an ``{"error": {"message",
"type", "param", "code"}}`` body: 400 for a malformed body, an unknown field value or a prompt that does
not fit the context (``context_length_exceeded``), 404 for a model this server does not serve, 429 when
the queue is full. ``temperature`` 0 decodes greedily; above 0 it samples (``seed`` makes it repeatable).

The served alias is polled: when a promotion or rollback moves it, the new version loads beside the old,
new requests go to it, and the old one finishes every stream it has before its engine ends.

Metrics, in the manner of TGI's: ``assay_llm_queue_size`` and ``assay_llm_batch_size`` (gauges),
``assay_llm_batch_size_per_step``, ``assay_llm_prefill_seconds``, ``assay_llm_decode_step_seconds``,
``assay_llm_ttft_seconds`` and ``assay_llm_tpot_seconds`` (histograms), and counters of requests by
endpoint and status, of finished sequences by reason, and of prompt and generated tokens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from assay.llm.causal import LanguageModel
from assay.serve.guard import RollbackGuard
from assay.serve.llm_engine import Engine, EngineConfig, Overloaded, Sequence, release_openmp_threads
from assay.serve.llm_monitor import PromptMonitor, prompt_references, prompt_row
from assay.serve.monitor import WindowResult
from assay.serve.served import MonitorSettings
from assay.store.records import VersionInfo

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions
# Chat without max_tokens: OpenAI's is the rest of the context, which reserves a whole context of the
# batch's token budget per request; this cap keeps a small server's batch for more than two requests.
DEFAULT_CHAT_MAX_TOKENS = 1024
DISCONNECT_POLL_S = 0.5  # how often a waiting non-streamed request checks that its client is there


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param

    def response(self) -> JSONResponse:
        body = {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False  # a last chunk with the token counts and no choices, as OpenAI sends


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields this server does not use (user, ...)

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)  # one choice per request


class CompletionBody(_Body):
    prompt: str | list[str] | list[int]


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatBody(_Body):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


@dataclass(frozen=True)
class LanguageServeConfig:
    max_sequences: int = 16
    max_batch_tokens: int = 16384
    max_waiting: int = 64
    poll_s: float = 2.0  # how often the alias is checked for a promotion
    monitor: MonitorSettings | None = field(default_factory=MonitorSettings)  # None: not monitored
    rollback_after: int | None = 3  # consecutive alarmed windows that roll the alias back (None: never)
    max_rollbacks: int = 1
    webhook: str | None = None


class Metrics:
    """The server's Prometheus metrics, on a registry of its own; ``observe`` is the engine's hook."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        fast = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
        self.requests = Counter(
            "assay_llm_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.queue = Gauge("assay_llm_queue_size", "Sequences waiting to join the batch", registry=r)
        self.batch = Gauge("assay_llm_batch_size", "Sequences in the running batch", registry=r)
        self.batch_steps = Histogram(
            "assay_llm_batch_size_per_step",
            "Sequences per decode step",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.prefill = Histogram(
            "assay_llm_prefill_seconds", "Prefill time of a prompt", buckets=fast, registry=r
        )
        self.step = Histogram(
            "assay_llm_decode_step_seconds", "Time of one decode step", buckets=fast, registry=r
        )
        self.ttft = Histogram("assay_llm_ttft_seconds", "Time to first token", buckets=fast, registry=r)
        self.tpot = Histogram(
            "assay_llm_tpot_seconds", "Time per output token after the first", buckets=fast, registry=r
        )
        self.finished = Counter("assay_llm_finished", "Finished sequences by reason", ["reason"], registry=r)
        self.prompt_tokens = Counter("assay_llm_prompt_tokens", "Prompt tokens", registry=r)
        self.generated_tokens = Counter("assay_llm_generated_tokens", "Generated tokens", registry=r)
        lengths = (1, 4, 16, 64, 256, 1024, 4096, 16384)
        self.prompt_length = Histogram(
            "assay_llm_prompt_length_tokens", "Tokens of a prompt", buckets=lengths, registry=r
        )
        self.output_length = Histogram(
            "assay_llm_output_length_tokens",
            "Tokens a finished sequence generated",
            buckets=lengths,
            registry=r,
        )
        self.prompt_nll = Histogram(
            "assay_llm_prompt_nll_per_token",
            "The served model's mean NLL per prompt token, nats",
            buckets=(0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12),
            registry=r,
        )
        self.windows = Counter(
            "assay_llm_monitor_windows", "Closed monitoring windows", ["stream", "alarm"], registry=r
        )

    def observe(self, kind: str, *values: Any) -> None:
        if kind == "queue":
            self.queue.set(values[0])
        elif kind == "prefill":
            self.prefill.observe(values[0])
        elif kind == "step":
            self.step.observe(values[0])
            self.batch_steps.observe(values[1])
            self.batch.set(values[1])
        elif kind == "ttft":
            self.ttft.observe(values[0])
        elif kind == "tpot":
            self.tpot.observe(values[0])
        elif kind == "finished":
            self.finished.labels(values[0]).inc()
            self.prompt_tokens.inc(values[1])
            self.generated_tokens.inc(values[2])
            self.output_length.observe(values[2])
        elif kind == "prompt":
            sequence: Sequence = values[0]
            self.prompt_length.observe(len(sequence.prompt))
            if sequence.prompt_nll is not None:
                self.prompt_nll.observe(sequence.prompt_nll)


class LanguageModelServer:
    """The served alias of a language model: its version, model, engine and prompt monitor, swapped on
    promotion and on a guarded rollback.

    Monitoring (:mod:`assay.serve.llm_monitor`) runs on a thread of its own: the engine hands it each
    prefilled prompt through a queue and goes on decoding; the monitor thread closes windows, and the
    :class:`~assay.serve.guard.RollbackGuard` turns alarmed ones into incidents and, by policy, rolls the
    alias back (the server then loads the version it rolled back to).
    """

    def __init__(self, ws: Any, name: str, alias: str, config: LanguageServeConfig | None = None) -> None:
        self.ws, self.name, self.alias = ws, name, alias
        self.config = config or LanguageServeConfig()
        self.metrics = Metrics()
        self.version: VersionInfo | None = None
        self.lm: LanguageModel | None = None
        self.engine: Engine | None = None
        self.monitor: PromptMonitor | None = None
        self.monitoring = "not monitored (--no-monitor)"
        self._retired: list[Engine] = []
        self._lock = threading.Lock()
        # the poll and a rollback may both load; re-entrant, as the first load's recovery of a rollback
        # decided before a crash loads the version rolled back to from inside it
        self._loading = threading.RLock()
        self.guard: RollbackGuard | None = None
        self._prompts: queue.SimpleQueue[tuple[int, PromptMonitor, Sequence] | None] = queue.SimpleQueue()
        self._monitor_thread: threading.Thread | None = None
        if self.config.monitor is not None:
            self.guard = RollbackGuard(
                ws.store, name, alias, rollback_after=self.config.rollback_after,
                max_rollbacks=self.config.max_rollbacks, webhook=self.config.webhook,
                on_rollback=lambda _: self.load(),
            )  # fmt: skip

    def load(self, progress: bool = False) -> None:
        """Load the alias's version (its model, prompt monitor and engine) if it is not the one served;
        ``progress``: a bar while the corpus is scored for the monitor's reference."""
        from assay.llm.release import load_version

        with self._loading:
            if self.guard is not None and self.version is None:
                self.guard.recover()  # a rollback decided before a crash is finished before serving
            version = self.ws.store.resolve(f"{self.name}@{self.alias}")
            if self.version is not None and version.id == self.version.id:
                return
            lm = load_version(self.ws, version)
            monitor = None
            if self.config.monitor is not None:
                references = prompt_references(
                    self.ws, version, lm, seed=self.config.monitor.seed, progress=progress
                )
                monitor = PromptMonitor(references, self.config.monitor, version.ref)
                self._start_monitoring()
            engine = Engine(
                lm,
                EngineConfig(
                    self.config.max_sequences, self.config.max_batch_tokens, self.config.max_waiting
                ),
                observe=partial(self._observe, version.version, monitor),
            )
            engine.start()
            with self._lock:
                old, self.version, self.lm, self.engine = self.engine, version, lm, engine
                self.monitor = monitor
                if monitor is not None:
                    self.monitoring = monitor.monitoring
            if old is not None:
                old.close()  # its streams finish on the old version
                self._retired.append(old)
            self._retired = [e for e in self._retired if not e.finished]
            release_openmp_threads()  # the model ran here to load: only the engine's thread keeps a team

    def stop(self) -> None:
        for engine in [*self._retired, *([self.engine] if self.engine else [])]:
            engine.stop()
        if self._monitor_thread is not None:
            self._prompts.put(None)
            self._monitor_thread.join(timeout=30)

    def _observe(self, version: int, monitor: PromptMonitor | None, kind: str, *values: Any) -> None:
        """The engine's hook (on its thread): metrics now, prompts queued for the monitor thread."""
        self.metrics.observe(kind, *values)
        if kind == "prompt" and monitor is not None:
            self._prompts.put((version, monitor, values[0]))

    def _start_monitoring(self) -> None:
        if self._monitor_thread is None:
            self._monitor_thread = threading.Thread(
                target=self._monitor_loop, name="assay-llm-monitor", daemon=True
            )
            self._monitor_thread.start()

    def _monitor_loop(self) -> None:
        while (item := self._prompts.get()) is not None:
            version, monitor, sequence = item
            try:
                windows = monitor.observe(sequence.framing, prompt_row(sequence))
                self._on_windows(version, windows)
            except Exception:  # monitoring must never stop serving: logged, and the next prompt goes on
                logger.exception("monitoring a prompt failed")

    def _on_windows(self, version: int, windows: list[WindowResult]) -> None:
        for window in windows:
            self.metrics.windows.labels(window.stream, str(window.alarm).lower()).inc()
        if windows and self.guard is not None:
            self.guard.on_windows(version, windows)

    def check_model(self, model: str) -> None:
        assert self.version is not None
        if model not in (self.name, self.version.ref, f"{self.name}@{self.alias}"):
            raise ApiError(
                404,
                f"The model {model!r} does not exist here; this server serves {self.name!r}.",
                code="model_not_found",
                param="model",
            )


def _prompt_ids(lm: LanguageModel, body: CompletionBody | ChatBody) -> list[int]:
    if isinstance(body, ChatBody):
        if lm.chat_template is None:
            raise ApiError(
                400, "This model has no chat template; send a prompt to /v1/completions.", param="messages"
            )
        return lm.encode_chat([m.model_dump() for m in body.messages])
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        vocab = len(lm.tokenizer)
        if any(not 0 <= int(p) < vocab for p in prompt):
            raise ApiError(400, f"Token ids must be between 0 and {vocab - 1}.", param="prompt")
        return [int(p) for p in prompt]
    if isinstance(prompt, list) and len(prompt) != 1:
        raise ApiError(400, "One prompt per request (a list of one string, or a string).", param="prompt")
    text = prompt[0] if isinstance(prompt, list) else prompt
    ids = lm.encode(str(text))
    if not ids:
        raise ApiError(400, "The prompt is empty.", param="prompt")
    return ids


def _sequence(
    server: LanguageModelServer, body: CompletionBody | ChatBody, emit: Any
) -> tuple[Engine, Sequence]:
    with server._lock:
        engine, lm = server.engine, server.lm
    assert engine is not None and lm is not None
    ids = _prompt_ids(lm, body)
    room = lm.context_length - len(ids)
    asked = (
        body.max_completion_tokens
        if isinstance(body, ChatBody) and body.max_completion_tokens
        else body.max_tokens
    )
    default = DEFAULT_MAX_TOKENS if isinstance(body, CompletionBody) else DEFAULT_CHAT_MAX_TOKENS
    max_tokens = asked or min(default, room)
    if room < 1 or max_tokens > room:
        raise ApiError(
            400,
            f"This model's maximum context length is {lm.context_length} tokens; the prompt has {len(ids)} "
            f"and {max_tokens} more were asked for. Shorten the prompt or lower max_tokens.",
            code="context_length_exceeded",
            param="messages" if isinstance(body, ChatBody) else "prompt",
        )
    if len(ids) + max_tokens > server.config.max_batch_tokens:
        raise ApiError(
            400,
            f"The prompt and max_tokens come to {len(ids) + max_tokens} tokens, more than this "
            f"server's batch holds ({server.config.max_batch_tokens}).",
            param="max_tokens",
        )
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if len(stop) > 4 or any(not s for s in stop):
        raise ApiError(400, "stop takes up to 4 non-empty strings.", param="stop")
    sequence = Sequence(
        prompt=ids, max_tokens=max_tokens, emit=emit, temperature=body.temperature, stop=stop, seed=body.seed,
        framing="chat" if isinstance(body, ChatBody) else "completions",
    )  # fmt: skip
    return engine, sequence


def create_llm_app(server: LanguageModelServer) -> FastAPI:
    """The ASGI application over ``server`` (loaded on start-up)."""

    async def poll() -> None:
        failed = ""  # the last failure's message: said once, not at every poll
        while True:
            await asyncio.sleep(server.config.poll_s)
            try:
                await asyncio.to_thread(server.load)
                failed = ""
            except Exception as e:  # a failed swap keeps the served version; the next poll retries
                if str(e) != failed:
                    logger.warning("keeping the served version; the alias's version does not load: %s", e)
                failed = str(e)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if server.engine is None:
            await asyncio.to_thread(server.load)
        task = asyncio.create_task(poll())
        yield
        task.cancel()
        server.stop()

    api = FastAPI(title="assay serve (language model)", lifespan=lifespan, docs_url=None, redoc_url=None)

    @api.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        server.metrics.requests.labels(request.url.path, str(error.status)).inc()
        return error.response()

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where + ': ' if where else ''}{first.get('msg', 'invalid request body')}"
        server.metrics.requests.labels(request.url.path, "400").inc()
        return ApiError(400, f"Invalid request: {message}.", param=where or None).response()

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type="text/plain; version=0.0.4")

    @api.get("/monitor")
    async def monitoring(n: int = 20) -> dict[str, Any]:
        """The served version's monitoring: its line, and each framing's window size and last windows."""
        with server._lock:
            version, monitor = server.version, server.monitor
        streams = {}
        if monitor is not None:
            streams = {
                framing: {
                    "window": monitor.window(framing),
                    "windows": [w.to_dict() for w in monitor.recent(framing, max(0, min(n, 1000)))],
                }
                for framing in monitor.streams
            }
        return {
            "version": version.ref if version else None,
            "monitoring": server.monitoring,
            "streams": streams,
        }

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        assert server.version is not None
        created = int(server.version.created_at.timestamp())
        return {
            "object": "list",
            "data": [
                {
                    "id": server.name,
                    "object": "model",
                    "created": created,
                    "owned_by": "assay",
                    "root": server.version.ref,
                }
            ],
        }

    async def generate(request: Request, body: CompletionBody | ChatBody, chat: bool) -> Response:
        server.check_model(body.model)
        loop, events = asyncio.get_running_loop(), asyncio.Queue[dict[str, Any]]()
        engine, sequence = _sequence(server, body, lambda e: loop.call_soon_threadsafe(events.put_nowait, e))
        try:
            engine.submit(sequence)
        except Overloaded as e:
            raise ApiError(429, str(e), kind="rate_limit_error", code="overloaded") from None
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
        head = {"id": ident, "created": int(time.time()), "model": server.name}
        endpoint = request.url.path
        if body.stream:
            with_usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(
                _stream(engine, sequence, events, head, chat, server, endpoint, with_usage),
                media_type="text/event-stream",
            )
        text, final = [], {}
        checked = time.monotonic()
        try:
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=DISCONNECT_POLL_S)
                except TimeoutError:
                    event = {}
                if "finish_reason" in event:
                    final = event
                    break
                text.append(event.get("delta", ""))
                # every DISCONNECT_POLL_S, whether tokens keep coming or not
                if time.monotonic() - checked >= DISCONNECT_POLL_S:
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        return Response(status_code=499)  # nobody reads it; the slot frees below
        finally:
            if sequence.finish_reason is None:
                engine.cancel(sequence)  # the client went away while waiting
        if final["finish_reason"] == "error":
            raise ApiError(500, "The model failed while generating; the server log has the cause.",
                           kind="server_error")  # fmt: skip
        server.metrics.requests.labels(endpoint, "200").inc()
        choice: dict[str, Any] = {"index": 0, "finish_reason": final["finish_reason"], "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": "".join(text)}
        else:
            choice["text"] = "".join(text)
        usage = {
            "prompt_tokens": final["prompt_tokens"],
            "completion_tokens": final["completion_tokens"],
            "total_tokens": final["prompt_tokens"] + final["completion_tokens"],
        }
        kind = "chat.completion" if chat else "text_completion"
        return JSONResponse({**head, "object": kind, "choices": [choice], "usage": usage})

    @api.post("/v1/completions")
    async def completions(request: Request, body: CompletionBody) -> Response:
        return await generate(request, body, chat=False)

    @api.post("/v1/chat/completions")
    async def chat(request: Request, body: ChatBody) -> Response:
        return await generate(request, body, chat=True)

    return api


async def _stream(
    engine: Engine,
    sequence: Sequence,
    events: asyncio.Queue[dict[str, Any]],
    head: dict[str, Any],
    chat: bool,
    server: LanguageModelServer,
    endpoint: str,
    include_usage: bool = False,
) -> AsyncIterator[bytes]:
    """Server-sent events: a chunk per text delta, one with the finish reason, then ``[DONE]``. When the
    client disconnects, the response stops iterating and the sequence is cancelled (its slot is free at
    the engine's next step)."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str | None, finish: str | None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if chat:
            choice["delta"] = {} if text is None else {"content": text}
        else:
            choice["text"] = text or ""
        return f"data: {json.dumps({**head, 'object': kind, 'choices': [choice]})}\n\n".encode()

    try:
        if chat:  # the role comes first, as OpenAI's streams begin
            role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            yield f"data: {json.dumps({**head, 'object': kind, 'choices': [role]})}\n\n".encode()
        while "finish_reason" not in (event := await events.get()):
            yield chunk(event["delta"], None)
        yield chunk(None, event["finish_reason"])
        if include_usage:
            counts = {k: event[k] for k in ("prompt_tokens", "completion_tokens")}
            usage = {**counts, "total_tokens": sum(counts.values())}
            yield f"data: {json.dumps({**head, 'object': kind, 'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"
        server.metrics.requests.labels(endpoint, "200").inc()
    finally:
        if sequence.finish_reason is None:
            engine.cancel(sequence)

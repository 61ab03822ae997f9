"""The HTTP face of a :class:`~assay.serve.service.Service`: an ASGI app for uvicorn.

    POST /v1/models/{name}/predict   JSON {"inputs": [...], "labels": [...]?} or a NumPy .npy body
                                     (Content-Type: application/x-npy); JSON answer, or .npy
                                     probabilities with Accept: application/x-npy; either names its
                                     request id (X-Assay-Request-Id)
    POST /v1/models/{name}/feedback  JSON {"request_id": "...", "labels": [...]}: labels that arrived
                                     after the answer, one per row, for the accuracy detector
    GET  /health                     the process is up
    GET  /ready                      200 only once the model is loaded and warmed up, else 503
    GET  /metrics                    Prometheus text format
    GET  /                           the dashboard (assay.serve.dashboard)

Every refusal is a 4xx with ``{"error": {"status": ..., "message": ...}}`` saying what was wrong; a full
queue is a 503 at once. Nothing a client sends can stop the server from serving the next request.
Predictions and feedback go to bare ASGI handlers (:class:`Predict`, :class:`Feedback`), everything else
through FastAPI.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp, Receive, Scope, Send

from assay.errors import NotFoundError, OverloadedError, RefusedError, UsageError
from assay.serve.dashboard import dashboard_router
from assay.serve.service import Service

NPY = "application/x-npy"
JSON_TYPE = b"application/json"


class ClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Disconnected(Exception):
    """The client went away before its request body arrived; there is nobody to answer."""


def _json(content: Any) -> bytes:
    # What Starlette's JSONResponse writes.
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _error_body(status: int, message: str) -> bytes:
    return _json({"error": {"status": status, "message": message}})


def _error(status: int, message: str) -> Response:
    return Response(_error_body(status, message), status_code=status, media_type="application/json")


async def _respond(
    send: Send, status: int, body: bytes, media_type: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    start = [(b"content-type", media_type), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def _check_served(service: Service, name: str) -> None:
    if name != service.model:
        raise ClientError(404, f"No model {name!r} is served here; this server serves {service.model!r}.")
    if not service.ready:
        raise ClientError(503, "The model is still loading; retry when /ready answers 200.")


async def read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ClientError(413, f"The body is {int(declared)} bytes; this server takes at most {limit}.")
    chunks, size, more = [], 0, True
    while more:  # also caps bodies sent without a Content-Length
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ClientError(413, f"The body exceeds {limit} bytes, the most this server takes.")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _array(value: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError:
        raise ClientError(
            422, f"'{what}' must be a rectangular array of numbers (rows of equal length)."
        ) from None
    if array.dtype == object:
        raise ClientError(422, f"'{what}' must be a rectangular array of numbers (rows of equal length).")
    if array.dtype.kind not in "iuf":
        raise ClientError(422, f"'{what}' must hold numbers; got values of type {array.dtype}.")
    return array


# The header numpy writes for a plain C-ordered numeric array. np.load parses every header with
# ast.literal_eval (about 0.1 ms, as much as the model's batched share of a request); this form is read
# directly, anything else goes through np.load.
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=]?[biuf]\d{1,2})', 'fortran_order': False, 'shape': \(([\d, ]*)\), \} *\n"
)


def read_npy(body: bytes) -> np.ndarray:
    """A .npy body as an array, never unpickling anything."""
    if body[:6] == b"\x93NUMPY" and len(body) >= 10 and body[6] == 1:
        header_len = int.from_bytes(body[8:10], "little")
        match = _NPY_HEADER.fullmatch(body[10 : 10 + header_len])
        if match is not None:
            dtype = np.dtype(match[1].decode())
            shape = tuple(int(d) for d in match[2].split(b",") if d.strip())
            count = math.prod(shape)
            if len(body) != 10 + header_len + count * dtype.itemsize:
                raise ClientError(
                    400, f"The .npy body is truncated or padded: shape {shape} of {dtype} does not fit."
                )
            return np.frombuffer(body, dtype, count, offset=10 + header_len).reshape(shape)
    try:
        return np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ClientError(400, f"The body is not a readable .npy array ({e}).") from None


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ClientError(400, f"The body is not valid JSON ({e}).") from None


def parse_request(body: bytes, content_type: str) -> tuple[np.ndarray, np.ndarray | None]:
    kind = _media_type(content_type)
    if kind == NPY:
        return _array(read_npy(body), "the .npy body"), None
    if kind not in ("application/json", ""):
        raise ClientError(415, f"Send JSON (application/json) or a NumPy array ({NPY}); got {kind!r}.")
    payload = _load_json(body)
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise ClientError(422, 'The JSON body must be an object with "inputs" (and optionally "labels").')
    x = _array(payload["inputs"], "inputs")
    labels = payload.get("labels")
    return x, (None if labels is None else _array(labels, "labels"))


def parse_feedback(body: bytes, content_type: str) -> tuple[str, np.ndarray]:
    """(request id, labels) of a feedback body."""
    kind = _media_type(content_type)
    if kind not in ("application/json", ""):
        raise ClientError(415, f"Send feedback as JSON (application/json); got {kind!r}.")
    payload = _load_json(body)
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("request_id"), str)
        or "labels" not in payload
    ):
        raise ClientError(
            422,
            'The JSON body must be an object with "request_id" (the string a prediction answer gave) and '
            '"labels" (one class index per row of that request).',
        )
    return payload["request_id"], _array(payload["labels"], "labels")


def check_labels(labels: np.ndarray, n: int, n_classes: int, per: str) -> np.ndarray:
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ClientError(422, f"'labels' must be {n} integer class indices, one per {per}.")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ClientError(422, f"'labels' must be class indices in [0, {n_classes - 1}].")
    return labels


def check_inputs(
    x: np.ndarray, labels: np.ndarray | None, input_shape: tuple[int, ...], n_classes: int
) -> tuple[np.ndarray, np.ndarray | None]:
    if x.shape == input_shape:
        x = x[None]  # one example without its batch dimension
    if x.ndim != len(input_shape) + 1 or x.shape[1:] != input_shape or x.shape[0] == 0:
        want = ", ".join(str(d) for d in input_shape)
        raise ClientError(422, f"'inputs' must have shape (n, {want}) with n >= 1; got {tuple(x.shape)}.")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ClientError(422, "'inputs' holds NaN or infinite values; send finite numbers.")
    if labels is not None:
        labels = check_labels(labels, x.shape[0], n_classes, "input")
    x = np.ascontiguousarray(x)
    return (x if x.flags.writeable else x.copy()), labels  # torch wants writable memory


MODEL_PATH = re.compile(r"/v1/models/([^/]+)/(predict|feedback)")
REQUEST_ID = b"x-assay-request-id"


class Predict:
    """``POST /v1/models/{name}/predict`` as a bare ASGI handler.

    It bypasses FastAPI's middleware stack and routing: on 2 cores the event loop's work per request is
    what limits a batched server, and FastAPI's layers were about 40% of it (a py-spy profile under load,
    docs/benchmarks.md). Everything else the server answers goes through FastAPI.
    """

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        headers = dict(scope["headers"])  # ASGI names are lower-case bytes
        try:
            status, body, media_type, extra = await self._answer(name, headers, receive)
        except Disconnected:
            return
        await _respond(send, status, body, media_type, extra)
        metrics = self.service.metrics
        metrics.requests.labels(str(status)).inc()
        metrics.latency.observe(time.perf_counter() - start)

    async def _answer(
        self, name: str, headers: dict[bytes, bytes], receive: Receive
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        """(status, body, media type, extra headers)."""
        service = self.service
        try:
            _check_served(service, name)
            body = await read_body(receive, headers.get(b"content-length"), service.config.max_body_bytes)
            x, labels = parse_request(body, headers.get(b"content-type", b"").decode("latin-1"))
            served = service.served
            x, labels = check_inputs(x, labels, served.input_shape, served.model.spec["n_classes"])
            out = await service.predict(x, labels)
        except ClientError as e:
            return e.status, _error_body(e.status, e.message), JSON_TYPE, []
        except OverloadedError as e:
            return 503, _error_body(503, str(e)), JSON_TYPE, []
        except UsageError as e:  # a request larger than the queue
            return 413, _error_body(413, str(e)), JSON_TYPE, []
        request_id = service.remember(out, labelled=labels is not None)
        extra = [(REQUEST_ID, request_id.encode())]
        if NPY.encode() in headers.get(b"accept", b""):
            buffer = io.BytesIO()
            np.save(buffer, out.probs.astype(np.float32), allow_pickle=False)
            extra.append((b"x-assay-version", str(out.version).encode()))
            return 200, buffer.getvalue(), NPY.encode(), extra
        rows = out.probs.round(6).tolist()
        answer = {
            "model": service.model,
            "version": out.version,
            "request_id": request_id,
            "predictions": out.predictions.tolist(),  # the classes feedback labels are compared with
            "confidence": [max(row) for row in rows],
            "probabilities": rows,
        }
        return 200, _json(answer), JSON_TYPE, extra


class Feedback:
    """``POST /v1/models/{name}/feedback``: the labels of an earlier answer, by its request id."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body = 200, _json(await self._answer(name, dict(scope["headers"]), receive))
        except ClientError as e:
            status, body = e.status, _error_body(e.status, e.message)
        except Disconnected:
            return
        await _respond(send, status, body, JSON_TYPE)

    async def _answer(self, name: str, headers: dict[bytes, bytes], receive: Receive) -> dict[str, Any]:
        service = self.service
        _check_served(service, name)
        body = await read_body(receive, headers.get(b"content-length"), service.config.max_body_bytes)
        request_id, labels = parse_feedback(body, headers.get(b"content-type", b"").decode("latin-1"))
        try:
            answer = service.answered(request_id)
            n_classes = service.served.model.spec["n_classes"]
            labels = check_labels(labels, len(answer.predictions), n_classes, "row of that request")
            monitored = await service.feedback(request_id, labels)
        except NotFoundError as e:
            raise ClientError(404, str(e)) from None
        except RefusedError as e:
            raise ClientError(409, str(e)) from None
        return {"request_id": request_id, "labelled": len(labels), "monitored": monitored}


def create_app(service: Service) -> ASGIApp:
    """The server's ASGI application: predictions straight to :class:`Predict`, the rest to FastAPI."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    # FastAPI's OpenTelemetry hooks check for providers on every request; the server has its own metrics.
    no_telemetry: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    api = FastAPI(
        title="assay serve", lifespan=lifespan, docs_url=None, redoc_url=None, telemetry=no_telemetry
    )

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/ready")
    async def ready() -> Response:
        if not service.ready:
            return _error(503, "The model is still loading.")
        return JSONResponse(
            {"ready": True, "model": service.model, "version": service.served.version.version}
        )

    @api.get("/metrics")
    async def prometheus() -> Response:
        return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4")

    api.include_router(dashboard_router(service))
    handlers: dict[str, Callable[[str, Scope, Receive, Send], Awaitable[None]]] = {
        "predict": Predict(service),
        "feedback": Feedback(service),
    }

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        match = MODEL_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await api(scope, receive, send)
        elif scope["method"] == "POST":
            await handlers[match[2]](match[1], scope, receive, send)
        else:
            response = _error(405, f"{match[2].capitalize()} requests are POST requests.")
            response.headers["allow"] = "POST"
            await response(scope, receive, send)

    return app

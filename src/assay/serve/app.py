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

import ast
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
from assay.serve.batcher import too_many_examples
from assay.serve.dashboard import dashboard_router
from assay.serve.served import BatchOutput
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


# --- .npy bodies -------------------------------------------------------------------------------------

NPY_MAGIC = b"\x93NUMPY"
NPY_MAX_HEADER = 10_000  # bytes: numpy's own default bound on a header it parses (max_header_size)
# The header numpy writes for a plain C-ordered numeric array. np.load parses every header with
# ast.literal_eval (about 0.1 ms, as much as the model's batched share of a request); this form is read
# directly, any other through literal_eval. At most 18 digits a dimension: every such number fits an int64.
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=]?[biuf]\d{1,2})', 'fortran_order': False, "
    rb"'shape': \(((?:\d{1,18}, )*\d{1,18},?)?\), \} *\n"
)


def _not_npy(why: str) -> ClientError:
    return ClientError(400, f"The body is not a readable .npy array: {why}.")


def _npy_header(body: bytes) -> tuple[int, object, object, object]:
    """(offset of the data, descr, fortran_order, shape) as the header states them, unchecked."""
    if body[:6] != NPY_MAGIC or len(body) < 10:
        raise _not_npy("it does not start with numpy's magic string \\x93NUMPY")
    major, minor = body[6], body[7]
    if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
        raise _not_npy(f"format version {major}.{minor}; this server reads 1.0, 2.0 and 3.0")
    start = 10 if major == 1 else 12
    length = int.from_bytes(body[8:start], "little")
    if length > NPY_MAX_HEADER or start + length > len(body):
        raise _not_npy(
            f"its header claims {length} bytes; the body holds {max(len(body) - start, 0)} after the "
            f"header length, and headers are at most {NPY_MAX_HEADER}"
        )
    raw = body[start : start + length]
    match = _NPY_HEADER.fullmatch(raw)
    if match is not None:
        dims = match[2].split(b",") if match[2] else []
        return start + length, match[1].decode(), False, tuple(int(d) for d in dims if d.strip())
    try:
        header = ast.literal_eval(raw.decode("utf-8" if major == 3 else "latin-1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise _not_npy("its header is not a Python literal") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise _not_npy("its header is not a dict of 'descr', 'fortran_order' and 'shape'")
    return start + length, header["descr"], header["fortran_order"], header["shape"]


def _npy_dtype(descr: Any) -> np.dtype[Any]:  # Any: whatever the header holds
    try:
        dtype = np.lib.format.descr_to_dtype(descr)
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, RecursionError):
        raise _not_npy(f"its dtype {str(descr)[:80]!r} is not one numpy knows") from None
    if dtype.hasobject:
        raise _not_npy(
            f"its dtype {str(dtype)[:80]} holds Python objects, which would need unpickling, and this "
            "server never unpickles; send numbers"
        )
    if dtype.itemsize == 0:
        raise _not_npy(f"its dtype {dtype} has no bytes")
    return dtype


def read_npy(body: bytes) -> np.ndarray:
    """A .npy body as a read-only view of its bytes, never unpickling anything.

    A header may claim any shape: numpy's own reader allocates what it claims before reading the data (a
    claim of 292 GiB raised MemoryError; a smaller lie would have taken the memory), so here the claim is
    checked against the body's length first and the array is a view of the body, allocating nothing.
    """
    offset, descr, fortran, shape = _npy_header(body)
    if not isinstance(fortran, bool):
        raise _not_npy(f"its fortran_order is {str(fortran)[:40]!r}, not True or False")
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise _not_npy(f"its shape {str(shape)[:80]} is not a tuple of non-negative integers")
    dtype = _npy_dtype(descr)
    count = math.prod(shape)
    if len(body) - offset != count * dtype.itemsize:
        raise ClientError(
            400,
            f"The .npy body is truncated or padded: its header claims shape {shape} of {dtype} "
            f"({count * dtype.itemsize} bytes), and the body holds {len(body) - offset} after its header.",
        )
    flat = np.frombuffer(body, dtype, count, offset=offset)
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


# --- JSON bodies -------------------------------------------------------------------------------------


def _load_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ClientError(
            400, f"The body is not valid JSON: JSON is UTF-8, and byte {e.start} is not ({e.reason})."
        ) from None
    try:
        return json.loads(text)
    except RecursionError:  # json.loads recurses once a level: 100,000 "[" once answered 500
        raise ClientError(
            400,
            "The JSON body nests arrays or objects too deeply to read (beyond Python's recursion limit, "
            "about 1,000 levels); inputs of shape (n, C, H, W) need 5.",
        ) from None
    except ValueError as e:  # JSONDecodeError, or a number of more digits than Python converts
        raise ClientError(400, f"The body is not valid JSON ({e}).") from None


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def parse_request(body: bytes, content_type: str) -> tuple[np.ndarray, np.ndarray | None]:
    kind = _media_type(content_type)
    if kind == NPY:
        return _array(read_npy(body), "the .npy body"), None
    if kind not in ("application/json", ""):
        raise ClientError(415, f"Send JSON (application/json) or a NumPy array ({NPY}); got {kind!r}.")
    payload = _load_json(body)
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise ClientError(422, 'The JSON body must be an object with "inputs" (and optionally "labels").')
    inputs = payload["inputs"]
    texts = isinstance(inputs, list) and bool(inputs) and all(isinstance(t, str) for t in inputs)
    x = np.array(inputs, dtype=object) if texts else _array(inputs, "inputs")
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


MAX_TEXT_CHARS = (
    100_000  # a text longer than this is not a sentence to classify; the tokenizer truncates anyway
)


def check_texts(
    x: np.ndarray, labels: np.ndarray | None, n_classes: int, max_examples: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """A text model's examples: a list of strings, each at most :data:`MAX_TEXT_CHARS` characters."""
    if x.dtype != object or x.ndim != 1 or x.shape[0] == 0:
        raise ClientError(422, '\'inputs\' must be a list of texts, e.g. {"inputs": ["some text", ...]}.')
    if x.shape[0] > max_examples:
        raise ClientError(413, too_many_examples(x.shape[0], max_examples))
    longest = max(len(t) for t in x.tolist())
    if longest > MAX_TEXT_CHARS:
        raise ClientError(413, f"A text of {longest} characters is over the limit of {MAX_TEXT_CHARS}.")
    if labels is not None:
        labels = check_labels(labels, x.shape[0], n_classes, "input")
    return x, labels


def check_inputs(
    x: np.ndarray,
    labels: np.ndarray | None,
    input_shape: tuple[int, ...],
    n_classes: int,
    max_examples: int,
    *,
    images: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The examples as float32 (C-ordered, writable), after every check a request can fail: the shape and
    the number of examples before anything is converted (a .npy body arrives as a view of its bytes), then
    the values. For an image model (``images``), 8-bit pixels are divided by 255, as the data loaders do;
    the model's own transform (a table's standardisation) runs with its batch (``Service._run``)."""
    if x.shape == input_shape:
        x = x[None]  # one example without its batch dimension
    if x.dtype == object:
        raise ClientError(422, "'inputs' holds texts, and this model takes numbers.")
    if x.ndim != len(input_shape) + 1 or x.shape[1:] != input_shape or x.shape[0] == 0:
        want = ", ".join(str(d) for d in input_shape)
        raise ClientError(422, f"'inputs' must have shape (n, {want}) with n >= 1; got {tuple(x.shape)}.")
    if x.shape[0] > max_examples:
        raise ClientError(413, too_many_examples(x.shape[0], max_examples))
    if images and x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255)
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused below
        x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ClientError(422, "'inputs' holds NaN or infinite values; send finite numbers.")
    if labels is not None:
        labels = check_labels(labels, x.shape[0], n_classes, "input")
    x = np.ascontiguousarray(x)
    return (x if x.flags.writeable else x.copy()), labels  # torch wants writable memory


def check_outputs(out: BatchOutput) -> None:
    """Refuse an answer the model cannot give: inputs far outside what it was trained on can overflow its
    activations, and the probabilities of an infinite logit are NaN. Such rows are not monitored either
    (``Service._run``)."""
    if not out.finite_rows().all():
        raise ClientError(
            422,
            "The model's outputs on these inputs are not finite: the values lie far outside the range it "
            "was trained on. See docs/serving.md for the input format.",
        )


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
            n_classes, max_examples = served.model.spec["n_classes"], service.config.max_queue
            if served.contract.kind == "text":
                x, labels = check_texts(x, labels, n_classes, max_examples)
            else:
                x, labels = check_inputs(
                    x,
                    labels,
                    served.input_shape,
                    n_classes,
                    max_examples,
                    images=served.contract.kind == "image",
                )
            out = await service.predict(x, labels)
            check_outputs(out)
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

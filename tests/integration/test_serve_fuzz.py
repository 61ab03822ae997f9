"""A bounded, seeded fuzz of the predict and feedback endpoints on a real server: no request crashes it.

About 1,300 requests over loopback to a real uvicorn server with the monitor on: malformed, truncated and
very deeply nested JSON, ``.npy`` bodies whose header lies (a shape far larger or smaller than the body,
negative or huge dimensions, other dtypes, object arrays, Fortran order, other format versions), wrong
content types, garbage bytes, well-formed inputs of the wrong shape, non-finite and extreme values, and
feedback bodies of the same kinds. What must hold: no 5xx but an explicit 503 (queue full); each case gets
the status its kind calls for, every 4xx with a JSON error message; no traceback (or any warning) in the
server's log; the server answers a valid request afterwards. Every case is drawn from one seed, so a
failure names a case that can be replayed.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from assay.serve.service import Service
from assay.workspace import Workspace
from tests.integration.serving_fixtures import MODEL, config, make_registry, running, traffic

# numpy's RuntimeWarnings (an overflowing cast, say) would be log noise on the server: here they are errors
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("error::RuntimeWarning"),
]
PREDICT, FEEDBACK = f"/v1/models/{MODEL}/predict", f"/v1/models/{MODEL}/feedback"
SHAPE = (1, 12, 12)  # the bars model's input
MAX_BODY = 2**20  # the fuzzed server's --max-body-mb, small so that 413s are cheap to provoke
MAX_QUEUE = 256
JSON, NPY = "application/json", "application/x-npy"
SEED = 20260513


@dataclass(frozen=True)
class Case:
    kind: str
    body: bytes
    content_type: str | None
    expect: frozenset[int]
    path: str = PREDICT
    says: str | None = None  # a phrase the error message must hold


def case(
    kind: str,
    body: bytes,
    content_type: str | None,
    *expect: int,
    path: str = PREDICT,
    says: str | None = None,
) -> Case:
    return Case(kind, body, content_type, frozenset(expect), path, says)


def npy(x: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x, allow_pickle=allow_pickle)
    return buffer.getvalue()


def npy_by_hand(header: str, data: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """A .npy body whose header says whatever ``header`` says, padded as numpy pads it."""
    width = 2 if version == (1, 0) else 4
    text = header.encode("latin-1")
    text += b" " * (-(6 + 2 + width + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + len(text).to_bytes(width, "little") + text + data


def header(shape: tuple[int, ...], descr: str = "'<f4'", fortran: bool = False) -> str:
    return f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"


def images(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    return traffic(int(rng.integers(1, 9)) if n is None else n, seed=int(rng.integers(1 << 30)))


def as_json(payload: object) -> bytes:
    return json.dumps(payload).encode()


# --- predict -----------------------------------------------------------------------------------------


def valid(rng: np.random.Generator) -> Case:
    x = images(rng)
    if rng.random() < 0.5:
        return case("valid .npy", npy(x), NPY, 200)
    content_type = str(rng.choice([JSON, "application/json; charset=utf-8", "Application/JSON"]))
    if rng.random() < 0.3:
        labelled = {"inputs": x.tolist(), "labels": rng.integers(0, 3, len(x)).tolist()}
        return case("valid JSON with labels", as_json(labelled), content_type, 200)
    return case("valid JSON", as_json({"inputs": x.tolist()}), content_type, 200)


def truncated_json(rng: np.random.Generator) -> Case:
    body = as_json({"inputs": images(rng).tolist()})
    return case("truncated JSON", body[: int(rng.integers(1, len(body)))], JSON, 400, says="not valid JSON")


def mutated_json(rng: np.random.Generator) -> Case:
    body = bytearray(as_json({"inputs": images(rng, 1).tolist()}))
    for i in rng.integers(0, len(body), int(rng.integers(1, 4))):
        body[i] = int(rng.integers(0, 256))
    return case("mutated JSON", bytes(body), JSON, 200, 400, 422)


def deep_json(rng: np.random.Generator) -> Case:
    # Deeper than json.loads recurses (about 1,000 levels), in bodies under MAX_BODY: a 400 that says so.
    depth = int(rng.choice([5_000, 20_000, 50_000, 140_000]))
    form = int(rng.integers(0, 5))
    if form == 0:
        body = b"[" * depth + b"]" * depth
    elif form == 1:
        body = b"[" * depth  # never closed
    elif form == 2:
        body = b'{"inputs": ' + b"[" * depth + b"0.5" + b"]" * depth + b"}"
    elif form == 3:
        body = b'{"a": ' * depth + b"1" + b"}" * depth
    else:  # brackets inside a string are not nesting; the nesting after it is
        body = b'{"inputs": "' + b"]" * depth + b'", "x": ' + b"[" * depth + b"]" * depth + b"}"
    return case(f"JSON nested {depth} deep (form {form})", body, JSON, 400, says="too deeply")


def shallow_nesting(rng: np.random.Generator) -> Case:
    """Nesting the parser reads is parsed, and the shape (or, past numpy's 64 dimensions, the array) is
    what is wrong."""
    depth = int(rng.choice([5, 20, 30, 63, 100, 500]))
    body = b'{"inputs": ' + b"[" * depth + b"0.5" + b"]" * depth + b"}"
    says = "must have shape" if depth <= 64 else "rectangular array"
    return case(f"JSON inputs nested {depth} deep", body, JSON, 422, says=says)


ODD_JSON = [
    (b"", 400), (b"null", 422), (b"[]", 422), (b"1", 422), (b'"inputs"', 422), (b"{}", 422),
    (b'{"inputs": "abc"}', 422), (b'{"inputs": [1, "a"]}', 422), (b'{"inputs": [[1, 2], [3]]}', 422),
    (b'{"inputs": [true, false]}', 422), (b'{"inputs": {"a": 1}}', 422), (b'{"inputs": null}', 422),
    (b'{"inputs": [null]}', 422), (b'{"inputs": []}', 422), (b'{"inputs": [[]]}', 422),
    (b'{"inputs": [1' + b"0" * 5000 + b"]}", 400),  # more digits than Python converts
    (b'{"inputs": [1e400]}', 422), (b'{"inputs": NaN}', 422), (b'{"inputs": [0.5], "labels": "a"}', 422),
    (b"\xff\xfe{\x00}\x00", 400), (b'{"inputs": [0.5]} trailing', 400), (b"{" * 10 + b"}" * 10, 400),
]  # fmt: skip


def odd_json(rng: np.random.Generator) -> Case:
    body, status = ODD_JSON[int(rng.integers(len(ODD_JSON)))]
    return case(f"odd JSON {body[:40]!r}", body, JSON, status)


def wrong_shape(rng: np.random.Generator) -> Case:
    n = int(rng.integers(2, 5))  # (1, 12, 12) is one example without its batch dimension
    shape = [(n, 12, 12), (n, 1, 12, 13), (n, 3, 12, 12), (n, 144), (12, 12), (), (n, 1, 1, 12, 12)][
        int(rng.integers(7))
    ]
    x = rng.random(shape, dtype=np.float32)
    if rng.random() < 0.5:
        return case(f".npy of shape {shape}", npy(x), NPY, 422, says="must have shape")
    return case(f"JSON of shape {shape}", as_json({"inputs": x.tolist()}), JSON, 422, says="must have shape")


def non_finite(rng: np.random.Generator) -> Case:
    x = images(rng).astype(np.float64)
    index = tuple(int(rng.integers(d)) for d in x.shape)
    value = float(rng.choice([np.nan, np.inf, -np.inf, 1e39, -1e300]))  # 1e39 overflows float32
    x[index] = value
    if rng.random() < 0.5:
        return case(f".npy float64 holding {value}", npy(x), NPY, 422, says="NaN or infinite")
    body = json.dumps({"inputs": x.tolist()}).encode()  # NaN and Infinity as Python's json writes them
    return case(f"JSON holding {value}", body, JSON, 422, says="NaN or infinite")


def extreme(rng: np.random.Generator) -> Case:
    """Finite float32 values far outside the training range: answered, or refused if the model's outputs
    overflow, never a 500."""
    x = images(rng)
    x[..., : int(rng.integers(1, 12))] = np.float32(rng.choice([3e38, -3e38, 1e20]))
    return case("extreme finite values", npy(x), NPY, 200, 422)


def bad_labels(rng: np.random.Generator) -> Case:
    x = images(rng)
    n = len(x)
    labels = [[0] * (n + 1), [3] * n, [-1] * n, [0.5] * n, [True] * n, [[0]] * n, "0", [2**70] * n][
        int(rng.integers(8))
    ]
    return case(f"labels {str(labels)[:30]}", as_json({"inputs": x.tolist(), "labels": labels}), JSON, 422)


def lying_npy(rng: np.random.Generator) -> Case:
    """The header's shape and the body's length disagree."""
    x = images(rng)
    n = len(x)
    claims = [
        (int(rng.integers(10**3, 10**9)), *SHAPE),  # far larger than the body (numpy would allocate it)
        (n + 1, *SHAPE),
        (max(n - 1, 0), *SHAPE),
        (n, 1, 12, 11),  # smaller than the body
        (10**6, 10**6, 10**6),
        (2**62, 2**62, 1, 12, 12),  # the element count overflows int64
        (-1, *SHAPE),
        (n, -1, 12, 12),
    ]
    shape = claims[int(rng.integers(len(claims)))]
    fortran = bool(rng.random() < 0.3)
    body = npy_by_hand(
        header(shape, fortran=fortran), x.tobytes(), version=(1, 0) if rng.random() < 0.7 else (2, 0)
    )
    return case(f".npy claiming {shape} for {n} images", body, NPY, 400)


def other_dtype(rng: np.random.Generator) -> Case:
    x = images(rng, 2)
    choice = int(rng.integers(6))
    if choice == 0:
        return case(".npy of complex64", npy(x.astype(np.complex64)), NPY, 422, says="numbers")
    if choice == 1:
        return case(".npy of bools", npy(x > 0.5), NPY, 422, says="numbers")
    if choice == 2:
        return case(".npy of strings", npy(x.astype("U4")), NPY, 422, says="numbers")
    if choice == 3:
        return case(".npy of datetimes", npy(np.zeros((2, *SHAPE), "M8[ns]")), NPY, 422, says="numbers")
    if choice == 4:
        structured = np.zeros((2, *SHAPE), dtype=[("a", "<f4")])
        return case(".npy of a structured dtype", npy(structured), NPY, 422, says="numbers")
    descr = str(rng.choice(["'|O'", "'<f4x'", "'<f0'", "42", "[('a', '|O')]", "'V99999999999999'"]))
    body = npy_by_hand(header((2, *SHAPE), descr=descr), x.tobytes())
    return case(f".npy with descr {descr}", body, NPY, 400)


def object_npy(rng: np.random.Generator) -> Case:
    objects = np.empty(int(rng.integers(1, 4)), dtype=object)
    objects[:] = [{"a": 1}] * len(objects)
    return case(
        ".npy of objects (a pickle)", npy(objects, allow_pickle=True), NPY, 400, says="not a readable .npy"
    )


def odd_npy_layout(rng: np.random.Generator) -> Case:
    """Readable .npy bodies numpy writes in other ways: answered as the same array."""
    x = images(rng)
    choice = int(rng.integers(4))
    if choice == 0:
        return case("Fortran-ordered .npy", npy(np.asfortranarray(x)), NPY, 200)
    if choice == 1:
        return case("big-endian float64 .npy", npy(x.astype(">f8")), NPY, 200)
    if choice == 2:
        body = npy_by_hand(header(x.shape), x.tobytes(), version=(2, 0))
        return case(".npy format 2.0", body, NPY, 200)
    spaced = f"{{'shape': {x.shape!r}, 'fortran_order': False, 'descr': '<f4'}}"
    return case(".npy header in another key order", npy_by_hand(spaced, x.tobytes(), (3, 0)), NPY, 200)


def truncated_npy(rng: np.random.Generator) -> Case:
    body = npy(images(rng))
    return case("truncated .npy", body[: int(rng.integers(0, len(body)))], NPY, 400)


def garbled_npy(rng: np.random.Generator) -> Case:
    """The magic string, then garbage where the header should be; or a header of another version."""
    body = bytearray(npy(images(rng, 1)))
    choice = int(rng.integers(3))
    if choice == 0:
        start = 10
        body[start : start + 40] = rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
    elif choice == 1:
        body[6] = int(rng.choice([0, 4, 9, 255]))  # an unknown format version
    else:
        body[8:10] = int(rng.integers(0, 65536)).to_bytes(2, "little")  # a header length that lies
    return case(f"garbled .npy ({choice})", bytes(body), NPY, 400)


def too_large(rng: np.random.Generator) -> Case:
    if rng.random() < 0.5:
        return case("a body over the limit", b"0" * (MAX_BODY + int(rng.integers(1, 1000))), NPY, 413)
    x = np.zeros((MAX_QUEUE + int(rng.integers(1, 50)), *SHAPE), np.float32)
    return case(f"{len(x)} examples, more than the queue", npy(x), NPY, 413, says="at most")


def wrong_content_type(rng: np.random.Generator) -> Case:
    x = images(rng, 1)
    choice = int(rng.integers(5))
    if choice == 0:
        return case("JSON sent as text/plain", as_json({"inputs": x.tolist()}), "text/plain", 415)
    if choice == 1:
        return case("multipart", b"--b\r\n\r\n--b--", "multipart/form-data; boundary=b", 415)
    if choice == 2:
        return case("JSON labelled .npy", as_json({"inputs": x.tolist()}), NPY, 400)
    if choice == 3:
        return case(".npy labelled JSON", npy(x), JSON, 400)
    return case(".npy without a content type", npy(x), None, 400)  # no type: read as JSON


def garbage(rng: np.random.Generator) -> Case:
    body = rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes()
    content_type = str(rng.choice([JSON, NPY, ""]))
    return case(f"{len(body)} random bytes as {content_type!r}", body, content_type, 400, 422)


# --- feedback ----------------------------------------------------------------------------------------


def bad_feedback(rng: np.random.Generator) -> Case:
    choice = int(rng.integers(9))
    if choice == 0:
        depth = int(rng.choice([5_000, 10_000, 200_000]))
        body = b'{"request_id": "x", "labels": ' + b"[" * depth + b"]" * depth + b"}"
        return case(f"feedback nested {depth} deep", body, JSON, 400, path=FEEDBACK, says="too deeply")
    if choice == 1:
        body = as_json({"request_id": "abc", "labels": [0]})
        return case("feedback truncated", body[: int(rng.integers(1, len(body)))], JSON, 400, path=FEEDBACK)
    if choice == 2:
        return case("feedback as .npy", npy(np.zeros(3)), NPY, 415, path=FEEDBACK)
    if choice == 3:
        body = as_json({"request_id": int(rng.integers(100)), "labels": [0]})
        return case("feedback with a numeric id", body, JSON, 422, path=FEEDBACK)
    if choice == 4:
        body = as_json({"request_id": "0" * int(rng.integers(1, 100_000)), "labels": [0]})
        return case("feedback for an unknown id", body, JSON, 404, path=FEEDBACK)
    if choice == 5:
        return case("feedback without labels", as_json({"request_id": "a"}), JSON, 422, path=FEEDBACK)
    if choice == 6:
        body = rng.integers(0, 256, int(rng.integers(1, 2000)), dtype=np.uint8).tobytes()
        return case("feedback of random bytes", body, JSON, 400, 422, path=FEEDBACK)
    if choice == 7:
        return case("feedback over the limit", b"{" * (MAX_BODY + 1), JSON, 413, path=FEEDBACK)
    body = as_json({"request_id": "a", "labels": [[1, 2], [3]]})
    return case("feedback with ragged labels", body, JSON, 422, path=FEEDBACK)


KINDS: list[tuple[Callable[[np.random.Generator], Case], int]] = [
    (valid, 150), (truncated_json, 80), (mutated_json, 80), (deep_json, 100), (shallow_nesting, 20),
    (odd_json, 80), (wrong_shape, 60), (non_finite, 60), (extreme, 30), (bad_labels, 40), (lying_npy, 120),
    (other_dtype, 60), (object_npy, 15), (odd_npy_layout, 40), (truncated_npy, 60), (garbled_npy, 60),
    (too_large, 20), (wrong_content_type, 40), (garbage, 60), (bad_feedback, 90),
]  # fmt: skip


def cases(seed: int) -> list[Case]:
    """Every fuzz case, in a seeded random order."""
    rng = np.random.default_rng(seed)
    drawn = [make(rng) for make, count in KINDS for _ in range(count)]
    return [drawn[i] for i in rng.permutation(len(drawn))]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("fuzz") / "home"
    make_registry(home, versions=1).store.close()
    return home


def wrong(c: Case, response: httpx.Response) -> str | None:
    """What is wrong with the answer to ``c``, or None."""
    status = response.status_code
    if status == 503 and "capacity" in response.text:  # a full queue is an explicit refusal
        return None
    if status not in c.expect:
        return f"{c.kind}: expected {sorted(c.expect)}, got {status}: {response.text[:200]}"
    if status >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            return f"{c.kind}: a {status} without a JSON error: {response.text[:200]}"
        if error.get("status") != status or not isinstance(error.get("message"), str) or not error["message"]:
            return f"{c.kind}: a {status} with a malformed error {error}"
        if c.says is not None and c.says not in error["message"]:
            return f"{c.kind}: the message does not say {c.says!r}: {error['message'][:200]}"
    return None


def test_no_request_crashes_the_server(registry: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    ws = Workspace.open(registry)
    # the defaults, but every example monitored (the odd valid inputs reach the monitor) and small limits
    service = Service(
        ws,
        MODEL,
        "production",
        config(window=None, max_body_bytes=MAX_BODY, max_queue=MAX_QUEUE, rollback_after=None),
    )
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    answered: list[tuple[str, int]] = []  # (request id, rows) of answers to requests without labels
    with running(service) as base, httpx.Client(base_url=base, timeout=60) as client:
        for c in cases(SEED):
            headers = {} if c.content_type is None else {"Content-Type": c.content_type}
            response = client.post(c.path, content=c.body, headers=headers)
            statuses[response.status_code] += 1
            if (problem := wrong(c, response)) is not None:
                problems.append(problem)
            elif response.status_code == 200 and c.kind in ("valid .npy", "valid JSON"):
                answered.append((response.json()["request_id"], len(response.json()["predictions"])))
        # feedback for real answers: accepted once, refused after
        for request_id, n in answered[:20]:
            body = as_json({"request_id": request_id, "labels": [0] * n})
            assert client.post(FEEDBACK, content=body, headers={"Content-Type": JSON}).status_code == 200
            again = client.post(FEEDBACK, content=body, headers={"Content-Type": JSON})
            assert again.status_code == 409 and again.json()["error"]["message"]
        after = client.post(PREDICT, content=npy(traffic(3, seed=1)), headers={"Content-Type": NPY})
        assert after.status_code == 200 and len(after.json()["predictions"]) == 3
        assert client.get("/ready").status_code == 200
    assert not problems, f"{len(problems)} wrong answers, {dict(statuses)}; the first: " + "\n".join(
        problems[:12]
    )
    assert sum(statuses.values()) > 1000 and len(answered) > 50, statuses
    assert service.current is not None and service.current.monitor is not None
    assert service.current.monitor.rows_seen > 0  # the monitor kept observing throughout
    # an incident (a warning) is the monitor doing its job on this traffic; an error is a failure
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy[:5]]
    assert "Traceback" not in caplog.text

"""Request bodies: the fast .npy reader agrees with np.load, and nothing unsafe or malformed gets through.

JSON nesting is checked against a character-at-a-time scanner, a .npy header against the body's length
before anything is allocated (tracemalloc sees numpy's allocations), and every refusal is a 4xx.
"""

from __future__ import annotations

import contextlib
import io
import re
import tracemalloc
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from assay.outputs import softmax
from assay.serve.app import (
    ClientError,
    check_inputs,
    check_outputs,
    parse_feedback,
    parse_request,
    read_npy,
)
from assay.serve.served import BatchOutput


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32),
        np.arange(12, dtype=">i8").reshape(3, 4),  # big-endian
        np.ones(5, np.float64),
        np.zeros((0, 3), np.uint8),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),  # Fortran order: the np.load path
        np.ones((2, 2), np.bool_),
        np.float32(3.5).reshape(()),  # a scalar
    ],
)
def test_read_npy_equals_np_load(array: np.ndarray) -> None:
    body = npy(array)
    got, want = read_npy(body), np.load(io.BytesIO(body), allow_pickle=False)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_pickles_truncation_and_garbage_are_refused() -> None:
    with pytest.raises(ClientError, match=r"not a readable \.npy") as e:
        read_npy(npy(np.array([{"a": 1}], dtype=object)))  # would need unpickling
    assert e.value.status == 400
    with pytest.raises(ClientError, match="truncated or padded"):
        read_npy(npy(np.zeros((2, 3), np.float32))[:-4])
    with pytest.raises(ClientError, match=r"not a readable \.npy"):
        read_npy(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(ClientError, match="not valid JSON"):
        parse_request(b"{", "application/json")


def test_inputs_are_checked_for_shape_values_and_labels() -> None:
    shape = (1, 4, 4)
    x, labels = check_inputs(np.zeros((2, 1, 4, 4)), np.array([0, 1]), shape, 3, 64)
    assert x.dtype == np.float32 and x.flags.writeable and x.flags.c_contiguous and labels is not None
    single, _ = check_inputs(np.zeros(shape), None, shape, 3, 64)
    assert single.shape == (1, *shape)
    frozen = np.frombuffer(np.zeros(16, np.float32).tobytes(), np.float32).reshape(1, 1, 4, 4)
    assert check_inputs(frozen, None, shape, 3, 64)[0].flags.writeable  # torch needs writable memory
    for bad, message in [
        (np.zeros((2, 16)), r"shape \(n, 1, 4, 4\)"),
        (np.zeros((0, 1, 4, 4)), "n >= 1"),
        (np.full((1, 1, 4, 4), np.inf), "NaN or infinite"),
    ]:
        with pytest.raises(ClientError, match=message):
            check_inputs(bad, None, shape, 3, 64)
    with pytest.raises(ClientError, match=r"class indices in \[0, 2\]"):
        check_inputs(np.zeros((2, 1, 4, 4)), np.array([0, 3]), shape, 3, 64)
    with pytest.raises(ClientError, match="2 integer class indices"):
        check_inputs(np.zeros((2, 1, 4, 4)), np.array([0.5, 1.0]), shape, 3, 64)


def test_8_bit_images_are_scaled_as_the_loaders_scale_them_and_tables_are_not() -> None:
    pixels = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4) * 17  # 0, 17, ..., 255
    images, _ = check_inputs(pixels, None, (1, 4, 4), 3, 64, images=True)
    np.testing.assert_array_equal(images, pixels.astype(np.float32) / np.float32(255))  # the loader's step
    assert images.max() == 1.0
    counts, _ = check_inputs(pixels.reshape(1, 16), None, (16,), 3, 64)  # a table's uint8 column: a count
    np.testing.assert_array_equal(counts, pixels.reshape(1, 16).astype(np.float32))


# --- JSON nesting ------------------------------------------------------------------------------------


def test_json_nested_beyond_the_parser_is_a_400_and_within_it_is_parsed() -> None:
    def body(depth: int) -> bytes:
        return b'{"inputs": ' + b"[" * (depth - 1) + b"0.5" + b"]" * (depth - 1) + b"}"

    x, _ = parse_request(body(32), "application/json")  # the object and 31 arrays
    assert x.ndim == 31
    with pytest.raises(ClientError, match="must be a rectangular array"):  # numpy takes 64 dimensions
        parse_request(body(100), "application/json")
    for depth in (5_000, 100_000):  # json.loads raised RecursionError inside json: a 500, once
        with pytest.raises(ClientError, match="nests arrays or objects too deeply") as e:
            parse_request(body(depth), "application/json")
        assert e.value.status == 400
    with pytest.raises(ClientError, match="too deeply"):
        parse_feedback(b"[" * 100_000, "application/json")
    # brackets inside a string are not nesting: this body is parsed, and its inputs are what is wrong
    quoted = b'{"inputs": "' + b"[" * 1000 + b'\\"' + b"[" * 1000 + b'"}'
    with pytest.raises(ClientError, match="must hold numbers") as e:
        parse_request(quoted, "application/json")
    assert e.value.status == 422


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"inputs": [1' + b"0" * 5000 + b"]}", "not valid JSON"),  # more digits than Python converts
        (b'\xff{"inputs": []}', "not valid JSON: JSON is UTF-8, and byte 0"),
        ('{"inputs": []}'.encode("utf-16"), "not valid JSON"),
        (b'{"inputs": [0.5]} and more', "not valid JSON"),
    ],
)
def test_json_that_cannot_be_read_is_a_400(body: bytes, says: str) -> None:
    with pytest.raises(ClientError, match=re.escape(says)) as e:
        parse_request(body, "application/json")
    assert e.value.status == 400


# --- .npy headers ------------------------------------------------------------------------------------


def by_hand(header: str, data: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """A .npy body whose header says whatever ``header`` says."""
    width = 2 if version == (1, 0) else 4
    text = header.encode("latin-1") + b"\n"
    return b"\x93NUMPY" + bytes(version) + len(text).to_bytes(width, "little") + text + data


def peak_bytes(call: Callable[[], object]) -> int:
    """The most memory ``call`` held at once (numpy's allocations included: it reports to tracemalloc)."""
    tracemalloc.start()
    try:
        with contextlib.suppress(ClientError):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_header_is_checked_against_the_body_before_anything_is_allocated() -> None:
    data = np.zeros((2, 1, 28, 28), np.float32).tobytes()
    for claim in [(10**9, 1, 28, 28), (292 * 2**28, 1, 28, 28)]:  # 2.9 TiB; the fuzz: 292 GiB
        body = by_hand(f"{{'descr': '<f4', 'fortran_order': True, 'shape': {claim}, }}", data)
        with pytest.raises(ClientError, match=r"header claims shape .* the body holds 6272") as e:
            read_npy(body)
        assert e.value.status == 400
        assert peak_bytes(lambda body=body: read_npy(body)) < 2**16
    # a truthful body is read as a view of its bytes: nothing of its size is allocated either
    body = npy(np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32))  # 200 KiB
    assert peak_bytes(lambda: read_npy(body)) < 2**14
    assert not read_npy(body).flags.writeable  # a view of the (immutable) body


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4), }", "non-negative integers"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2**62, 2**62), }", "not a Python literal"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 8), }", "header claims"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), }", "header claims shape (1, 1)"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", "header claims shape (3, 4)"),
        ("{'descr': '<f4', 'fortran_order': 1, 'shape': (2, 4), }", "fortran_order is '1'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': [2, 4], }", "not a tuple"),
        ("{'descr': '<f4', 'shape': (2, 4), }", "a dict of 'descr'"),
        ("[1, 2, 3]", "a dict of 'descr'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), 'x': 1}", "a dict of 'descr'"),
        ("{'descr': 'hello', 'fortran_order': False, 'shape': (2, 4), }", "not one numpy knows"),
        ("{'descr': '|O', 'fortran_order': False, 'shape': (2, 4), }", "would need unpickling"),
        ("{'descr': [('a', '|O')], 'fortran_order': False, 'shape': (2, 4), }", "would need unpickling"),
        ("{'descr': '|V0', 'fortran_order': False, 'shape': (2, 4), }", "has no bytes"),
        ("{'descr': " + "(" * 500 + "'<f4'" + ")" * 500 + ", }", "not a Python literal"),
        ("__import__('os')", "not a Python literal"),
    ],
)
def test_headers_that_lie_or_do_not_parse_are_a_400(header: str, says: str) -> None:
    with pytest.raises(ClientError, match=re.escape(says)) as e:
        read_npy(by_hand(header, np.zeros((2, 4), np.float32).tobytes()))
    assert e.value.status == 400 and "Traceback" not in e.value.message


def test_a_body_that_is_not_npy_is_a_400() -> None:
    valid = npy(np.zeros((2, 4), np.float32))
    for body, says in [
        (b"", "magic string"),
        (b"PK\x03\x04" + valid, "magic string"),  # an .npz
        (valid[:6] + b"\x04\x00" + valid[8:], "format version 4.0"),
        (valid[:8] + (60_000).to_bytes(2, "little") + valid[10:], "header claims 60000 bytes"),
        (by_hand("{" + " " * 20_000 + "}", b"", version=(2, 0)), "at most 10000"),
    ]:
        with pytest.raises(ClientError, match=re.escape(says)) as e:
            read_npy(body)
        assert e.value.status == 400


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_other_format_versions_and_key_orders_read_as_np_load_does(version: tuple[int, int]) -> None:
    array = np.random.default_rng(1).random((3, 5)).astype(">f8")
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version)  # numpy's own writer, any version
    got = read_npy(buffer.getvalue())
    np.testing.assert_array_equal(got, np.load(io.BytesIO(buffer.getvalue())))
    shuffled = by_hand("{'shape': (3, 5), 'descr': '>f8', 'fortran_order': False}", array.tobytes(), version)
    np.testing.assert_array_equal(read_npy(shuffled), array)


# --- sizes, values and outputs -----------------------------------------------------------------------


def test_too_many_examples_are_refused_before_conversion() -> None:
    shape = (1, 4, 4)
    view = read_npy(npy(np.zeros((65, *shape), np.float64)))
    with pytest.raises(ClientError, match="at most 64 examples") as e:
        check_inputs(view, None, shape, 3, 64)
    assert e.value.status == 413


def test_values_beyond_float32_are_refused_without_a_warning() -> None:
    x = np.zeros((2, 1, 4, 4))
    x[1, 0, 0, 0] = -1e300  # finite in float64, -inf in float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in cast" would be log noise
        with pytest.raises(ClientError, match="NaN or infinite") as e:
            check_inputs(x, None, (1, 4, 4), 3, 64)
    assert e.value.status == 422


def test_an_answer_with_non_finite_outputs_is_refused() -> None:
    logits = np.array([[1.0, 2.0], [np.inf, 0.0]])
    with np.errstate(invalid="ignore"):
        probs = softmax(logits)
    out = BatchOutput(1, logits, probs, logits.argmax(1), None)
    check_outputs(out.rows(0, 1))  # the finite row is answered
    assert out.finite_rows().tolist() == [True, False]
    with pytest.raises(ClientError, match="not finite") as e:
        check_outputs(out)
    assert e.value.status == 422

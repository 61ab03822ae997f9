"""Request bodies: the fast .npy reader agrees with np.load, and nothing unsafe or malformed gets through."""

from __future__ import annotations

import io

import numpy as np
import pytest

from assay.serve.app import ClientError, check_inputs, parse_request, read_npy


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
    x, labels = check_inputs(np.zeros((2, 1, 4, 4)), np.array([0, 1]), shape, 3)
    assert x.dtype == np.float32 and x.flags.writeable and x.flags.c_contiguous and labels is not None
    single, _ = check_inputs(np.zeros(shape), None, shape, 3)
    assert single.shape == (1, *shape)
    frozen = np.frombuffer(np.zeros(16, np.float32).tobytes(), np.float32).reshape(1, 1, 4, 4)
    assert check_inputs(frozen, None, shape, 3)[0].flags.writeable  # torch needs writable memory
    for bad, message in [
        (np.zeros((2, 16)), r"shape \(n, 1, 4, 4\)"),
        (np.zeros((0, 1, 4, 4)), "n >= 1"),
        (np.full((1, 1, 4, 4), np.inf), "NaN or infinite"),
    ]:
        with pytest.raises(ClientError, match=message):
            check_inputs(bad, None, shape, 3)
    with pytest.raises(ClientError, match=r"class indices in \[0, 2\]"):
        check_inputs(np.zeros((2, 1, 4, 4)), np.array([0, 3]), shape, 3)
    with pytest.raises(ClientError, match="2 integer class indices"):
        check_inputs(np.zeros((2, 1, 4, 4)), np.array([0.5, 1.0]), shape, 3)

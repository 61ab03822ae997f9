from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from assay.data.idx import find_idx, read_idx
from assay.errors import DataError


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    codes = {np.dtype("uint8"): 0x08, np.dtype(">f4"): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [True, False])
def test_round_trip(tmp_path: Path, gz: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    path = write_idx(tmp_path / ("x.gz" if gz else "x"), images, gz)
    np.testing.assert_array_equal(read_idx(path), images)


def test_float_dtype(tmp_path: Path) -> None:
    values = np.arange(6, dtype=">f4").reshape(2, 3)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "f", values, False)), values)


def test_truncated_file_names_the_problem(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", np.zeros((4, 2, 2), np.uint8), False)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(path)


def test_bad_magic(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "x")


def test_corrupt_gzip(tmp_path: Path) -> None:
    (tmp_path / "x.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "x.gz")


def test_find_prefers_gz_and_names_missing(tmp_path: Path) -> None:
    (tmp_path / "a-idx1-ubyte.gz").write_bytes(b"")
    assert find_idx(tmp_path, "a-idx1-ubyte").name == "a-idx1-ubyte.gz"
    with pytest.raises(DataError, match="missing 'b-idx1-ubyte'"):
        find_idx(tmp_path, "b-idx1-ubyte")

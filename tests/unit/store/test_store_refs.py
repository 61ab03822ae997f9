from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from assay.errors import UsageError
from assay.store.jsonsafe import to_json
from assay.store.refs import Ref, check_alias_name, parse_ref


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("mnist", Ref("mnist")),
        ("mnist@3", Ref("mnist", version=3)),
        ("mnist@v12", Ref("mnist", version=12)),
        ("mnist@production", Ref("mnist", alias="production")),
        ("fashion-mnist.int8_v2@staging-eu", Ref("fashion-mnist.int8_v2", alias="staging-eu")),
        ("mnist@v", Ref("mnist", alias="v")),
    ],
)
def test_parse_ref(text: str, ref: Ref) -> None:
    assert parse_ref(text) == ref


@pytest.mark.parametrize("name", ["3", "v3", "v03", "", "-x", "has space", "x" * 200])
def test_alias_names_that_would_be_ambiguous_or_malformed_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="Alias name"):
        check_alias_name(name)


def test_json_values_are_made_portable() -> None:
    value = {
        "nan": math.nan,
        "inf": -math.inf,
        "tuple": (1, 2.5),
        "path": Path("/a/b"),
        "when": datetime(2025, 1, 2, tzinfo=UTC),
        "np": {"scalar": np.float32(0.5), "int": np.int64(3), "array": np.array([[1, 2]])},
        "nested": [{"x": None, "ok": True}],
    }
    assert to_json(value, "doc") == {
        "nan": None,
        "inf": None,
        "tuple": [1, 2.5],
        "path": "/a/b",
        "when": "2025-01-02T00:00:00+00:00",
        "np": {"scalar": 0.5, "int": 3, "array": [[1, 2]]},
        "nested": [{"x": None, "ok": True}],
    }


def test_json_errors_name_the_place() -> None:
    with pytest.raises(UsageError, match=r"doc\.a\[1\]: a set cannot be stored"):
        to_json({"a": [1, {2}]}, "doc")

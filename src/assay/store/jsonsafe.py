"""Make caller-supplied values safe for the JSON columns, before any transaction starts.

Checking here, rather than letting the database driver fail during a flush, gives the caller a message
that names the offending field; and it makes SQLite and PostgreSQL store the same thing (PostgreSQL
refuses NaN in JSON, SQLite would keep it).
"""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

from assay.errors import UsageError


def to_json(value: Any, where: str) -> Any:
    """A copy of ``value`` built from dict (str keys), list, str, int, float, bool and None.

    Non-finite floats become None, as in the measurement schema; tuples become lists; paths and dates
    become strings; numpy scalars and arrays become Python numbers and lists.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise UsageError(f"{where}: keys must be strings. Got {key!r} ({type(key).__name__}).")
            out[key] = to_json(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [to_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy
        return to_json(value.tolist(), where)
    raise UsageError(
        f"{where}: a {type(value).__name__} cannot be stored as JSON. "
        "Convert it to a str, number, bool, list or dict first."
    )


def to_json_object(value: dict[str, Any] | None, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a dict. Got {type(value).__name__}.")
    result: dict[str, Any] = to_json(value, where)
    return result

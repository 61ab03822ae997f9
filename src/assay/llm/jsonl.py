"""Reading the JSONL files of the language-model stage (assay's tasks, lm-eval's samples): one JSON object
a line, each refused with its line number when it is not one."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from assay.errors import DataError


def read_objects(path: Path, what: str) -> list[tuple[str, dict[str, Any]]]:
    """Every non-blank line of ``path`` as ``(where, object)``, ``where`` being "PATH, line N". Refused: a
    file that cannot be read, a line that is not JSON or not an object (``what`` names one, "an item"), a
    file without any."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({e}).") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not JSON ({e.msg}).") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: {what} is a JSON object, got {type(row).__name__}.")
        rows.append((where, row))
    if not rows:
        raise DataError(f"{path}: holds no {what.split(' ', 1)[-1]}s.")
    return rows


def check_unique_ids(ids: Iterable[tuple[str, str]]) -> None:
    """``(where, id)`` pairs: refuse the first id seen twice, naming its line."""
    seen: set[str] = set()
    for where, ident in ids:
        if ident in seen:
            raise DataError(f"{where}: the id {ident!r} is used twice; each item needs an id of its own.")
        seen.add(ident)

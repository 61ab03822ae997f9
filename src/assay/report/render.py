"""Render a report document to one self-contained HTML page, and write it beside its JSON twin.

The document (a plain dict, schema ``assay.report/1``) is what :mod:`assay.evaluate` builds; the JSON file is
that document verbatim (NaN and infinities as null), the HTML page is its reading copy. Both files are written
to temporary names and renamed into place, so a reader never sees half a file: each is either the previous
report's or the complete new one.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from assay.errors import UsageError
from assay.governance import governance
from assay.report import sections

SCHEMA = "assay.report/1"
TEMPLATES = Path(__file__).parent / "templates"


class ReportPaths(NamedTuple):
    html: Path
    json: Path


@cache
def template_environment(folder: Path = TEMPLATES) -> Environment:
    """The Jinja set-up every report page uses (this package's templates, or another report's folder)."""
    # StrictUndefined: a misspelt field in the template fails the render instead of printing nothing.
    return Environment(
        loader=FileSystemLoader(folder),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def to_json_safe(value: Any, where: str = "document") -> Any:
    """A copy that JSON can hold: NaN/inf -> None, numpy scalars and arrays -> Python numbers and lists.

    Anything else that JSON cannot represent is an error naming where it is, rather than a silent ``str()``.
    """
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist(), where)
    if isinstance(value, np.generic):
        return to_json_safe(value.item(), where)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, Path):
        return str(value)
    raise UsageError(
        f"The report document holds a {type(value).__name__} at '{where}', which JSON cannot represent. "
        "Convert it to a str, number, bool, list or dict."
    )


def _checked(document: Any) -> dict[str, Any]:
    if not isinstance(document, Mapping):
        raise UsageError(f"A report document must be a dict. Got {type(document).__name__}.")
    schema = document.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise UsageError(f"This assay renders report schema '{SCHEMA}'. Got schema '{schema}'.")
    kind = document.get("kind", "evaluation")
    if kind not in ("evaluation", "comparison"):
        raise UsageError(f"The report 'kind' must be 'evaluation' or 'comparison'. Got {kind!r}.")
    clean: dict[str, Any] = to_json_safe(document)
    # Every report says which framework subcategories its evidence bears on: the JSON and the page alike.
    clean.setdefault("governance", governance(clean))
    return clean


def _html(clean: dict[str, Any]) -> str:
    return template_environment().get_template("report.html.j2").render(**sections.build(clean))


def _json(clean: dict[str, Any]) -> str:
    return json.dumps(clean, indent=2, sort_keys=False, allow_nan=False) + "\n"


def render_html(document: Mapping[str, Any]) -> str:
    """The report page of ``document``: the same document always gives the same bytes."""
    return _html(_checked(document))


def render_json(document: Mapping[str, Any]) -> str:
    """The JSON file's text: the document as given, NaN and infinities as null."""
    return _json(_checked(document))


def write_temp(directory: Path, stem: str, text: str) -> Path:
    """``text`` in a new hidden file beside its final name, synced to disk: rename it into place."""
    # Exclusive create under a random name rather than mkstemp: mkstemp makes the file owner-only (0600),
    # and a report is meant to be read by others, with the permissions the umask gives any new file.
    path = directory / f".{stem}.{secrets.token_hex(8)}.tmp"
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def write_report(document: Mapping[str, Any], out_dir: Path, stem: str) -> ReportPaths:
    """Write ``<stem>.html`` and ``<stem>.json`` into ``out_dir`` (created if needed); returns both paths."""
    clean = _checked(document)
    return write_pair(out_dir, stem, html_text=_html(clean), json_text=_json(clean))


def write_pair(out_dir: Path, stem: str, *, html_text: str, json_text: str) -> ReportPaths:
    """Both texts are written to temporary files before either is renamed into place, so a render or
    write error leaves the previous report as it was, and no temporary file behind."""
    if not stem or Path(stem).name != stem or stem.startswith("."):
        raise UsageError(f"The report stem must be a plain file name without folders. Got {stem!r}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(out_dir / f"{stem}.html", out_dir / f"{stem}.json")
    temps: list[Path] = []
    try:
        temps.append(write_temp(out_dir, stem, json_text))
        temps.append(write_temp(out_dir, stem, html_text))
        os.replace(temps[0], paths.json)
        os.replace(temps[1], paths.html)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return paths

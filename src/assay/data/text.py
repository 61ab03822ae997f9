"""Text data: the checks every text passes, and the readers behind text datasets that pandas has none for
(JSON Lines files, and the strfile folders of Debian's ``fortunes`` package).

A text example is one Python ``str``, a document; the model's own tokenizer turns it into inputs, so
nothing here tokenizes, lower-cases or truncates. What is checked is what would make an example
meaningless to every tokenizer: a value that is not a string, or one that is empty or only whitespace
(a missing value in disguise: a CSV field left blank reads as the empty string).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assay.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_LICENCE = "BSD-style, per-file notices in /usr/share/doc/fortunes/copyright"
# A category joins the dataset with at least this many distinct entries, and keeps at most FORTUNES_CAP:
# 24 of the 43 files of Debian's fortunes 1.99.1 qualify, from 203 to 300 entries each, so no class is
# tiny and none is six times another (the raw files range from 2 to 1,251 entries).
FORTUNES_MIN_ENTRIES = 200
FORTUNES_CAP = 300
_INDEX_SUFFIXES = (".dat", ".u8")  # strfile's index files, and the UTF-8 links to the text files
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # control characters but tab and newline


def is_missing(value: object) -> bool:
    """None, NaN (how pandas marks a missing value) or the empty string (a blank CSV field)."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _problem(value: object) -> str | None:
    """Why ``value`` is not a usable text, or None when it is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "is missing"
    if not isinstance(value, str):
        return f"holds {value!r} ({type(value).__name__}), not a string"
    if not value.strip():
        return "is empty" if not value else "holds only whitespace"
    return None


def check_texts(
    values: Iterable[object], source: str, where: Callable[[int], str], remedy: str
) -> np.ndarray:
    """``values`` as a 1-D object array of ``str``, each non-blank; otherwise a DataError naming the first
    bad one as ``where(position)`` and how many there are, followed by ``remedy`` (what to do)."""
    items = list(values)
    texts = np.empty(len(items), dtype=object)
    for i, value in enumerate(items):  # one by one: numpy would turn a list value into a second axis
        texts[i] = value
    bad = [(i, why) for i, v in enumerate(texts) if (why := _problem(v)) is not None]
    if bad:
        at, why = bad[0]
        more = f" ({len(bad)} such values in all)" if len(bad) > 1 else ""
        raise DataError(f"{source}: {where(at)} {why}{more}; {remedy}")
    return texts


def read_jsonl(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The records of a JSON Lines file (one JSON object a line; blank lines skipped), and each record's
    line in the file (0-based)."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"Text file not found: {path}.")
    records: list[dict[str, object]] = []
    lines: list[int] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}: line {number + 1} is not UTF-8 (byte {e.start}); save the file as UTF-8."
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}: line {number + 1} is not JSON ({e.msg} at column {e.colno}); "
                    'each line must hold one JSON object, such as {"text": "...", "label": "..."}.'
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}: line {number + 1} holds a JSON {type(record).__name__}, not an object; "
                    'each line must hold one JSON object, such as {"text": "...", "label": "..."}.'
                )
            records.append(record)
            lines.append(number)
    if not records:
        raise DataError(f"{path}: no records; a JSON Lines file holds one JSON object a line.")
    return pd.DataFrame.from_records(records), np.asarray(lines, dtype=np.int64)


@dataclass(frozen=True)
class Fortunes:
    """The entries of a fortunes folder chosen for a dataset, with what was found on the way.

    ``entries[i]`` is text ``i``'s position among the %-separated entries of the file ``labels[i]``
    names (0-based), so each example can be found again in its file.
    """

    texts: np.ndarray  # (N,) object, str
    labels: np.ndarray  # (N,) str: the category, its file's name
    entries: np.ndarray  # (N,) int64
    found: dict[str, int] = field(default_factory=dict)  # distinct entries per category file, all files
    duplicates: int = 0  # entries dropped because an identical text came earlier
    # The distinct entries of the files too small to be classes: texts of held-out classes, a near-OOD
    # set for a model trained on the others (same source, same style, categories it never saw).
    held_out: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))


def _render(line: str) -> str:
    """A line as a terminal prints it: ``_\\bI`` or ``____\\b\\b\\b\\bword`` (underlining by overstrike,
    as in nroff output) becomes the letters; an underscore struck over a letter keeps the letter."""
    out: list[str] = []
    at = 0
    for ch in line:
        if ch == "\b":
            at = max(0, at - 1)
            continue
        if at < len(out):
            if ch != "_" or out[at] in " _":
                out[at] = ch
        else:
            out.append(ch)
        at += 1
    return "".join(out)


def _clean(entry: str) -> str:
    """An entry as text: overstrikes rendered, other control characters (the bell) dropped, the whitespace
    around it stripped; tabs, newlines and the attribution line stay."""
    if "\b" in entry:
        entry = "\n".join(_render(line) for line in entry.split("\n"))
    return _CONTROL.sub("", entry).strip()


def _entries(path: Path) -> list[str]:
    """The %-separated entries of one strfile text file, cleaned (empty ones kept, for the positions)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text (byte {e.start}); convert it (iconv -f latin1 -t utf-8) or move it "
            "out of the folder."
        ) from None
    entries: list[str] = []
    current: list[str] = []
    for line in text.split("\n"):
        if line.rstrip("\r") == "%":
            entries.append("\n".join(current))
            current = []
        else:
            current.append(line.rstrip("\r"))
    entries.append("\n".join(current))
    return [_clean(e) for e in entries]


def _fixed_sample(texts: list[str], cap: int) -> set[int]:
    """Positions of the ``cap`` texts with the lowest sha256: a sample that depends on the texts alone,
    not on the order of the file, a seed or the other categories."""
    digests = sorted((hashlib.sha256(t.encode()).hexdigest(), i) for i, t in enumerate(texts))
    return {i for _, i in digests[:cap]}


def read_fortunes(
    directory: Path, *, min_entries: int = FORTUNES_MIN_ENTRIES, cap: int = FORTUNES_CAP
) -> Fortunes:
    """The categories of a fortunes folder with at least ``min_entries`` distinct entries, at most ``cap``
    of each (a fixed sample: those with the lowest sha256).

    Files are read in name order; every file but strfile's ``.dat``/``.u8`` companions is a category, and
    folders (Debian's ``off/``) are not read. An entry whose text appeared earlier (in this file or a file
    before it) is dropped: the first copy stays, under its own category.
    """
    if not directory.is_dir():
        raise DataError(
            f"Fortunes folder not found: {directory}. Install Debian's fortunes package "
            "(sudo apt-get install fortunes; make setup does), or give a folder of fortune files as "
            "fortunes:DIR."
        )
    files = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix not in _INDEX_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise DataError(
            f"{directory}: no fortune files (text files of entries separated by lines holding only %)."
        )
    seen: set[str] = set()
    duplicates = 0
    kept: dict[str, list[tuple[int, str]]] = {}
    for path in files:
        distinct: list[tuple[int, str]] = []
        for position, entry in enumerate(_entries(path)):
            if not entry:
                continue
            if entry in seen:
                duplicates += 1
                continue
            seen.add(entry)
            distinct.append((position, entry))
        kept[path.name] = distinct
    found = {name: len(entries) for name, entries in kept.items()}
    chosen = [name for name, n in found.items() if n >= min_entries]
    if not chosen:
        largest = max(found, key=lambda name: found[name])
        raise DataError(
            f"{directory}: no category has {min_entries} distinct entries or more (the largest, "
            f"'{largest}', has {found[largest]}); a class needs that many examples to be learnt and measured."
        )
    texts: list[str] = []
    labels: list[str] = []
    positions: list[int] = []
    for name in chosen:
        entries = kept[name]
        sample = (
            _fixed_sample([t for _, t in entries], cap) if len(entries) > cap else set(range(len(entries)))
        )
        for i, (position, entry) in enumerate(entries):
            if i in sample:
                texts.append(entry)
                labels.append(name)
                positions.append(position)
    return Fortunes(
        texts=np.asarray(texts, dtype=object),
        labels=np.asarray(labels, dtype=str),
        entries=np.asarray(positions, dtype=np.int64),
        found=found,
        duplicates=duplicates,
        held_out=np.asarray([t for name in found if name not in chosen for _, t in kept[name]], dtype=object),
    )

"""Text datasets: CSV, Parquet and JSON Lines text columns, Debian's fortunes, and the text Split.

Splits are checked against the table loader's split of the same file (which the audit reproduces row for
row), rows against the file itself, and the fortunes reader against an independent parse of a fake folder.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assay.data import Dataset, DataSpec, Split, load_dataset, parse_data_arg
from assay.data.text import FORTUNES_DIR, read_fortunes
from assay.errors import DataError, UsageError

CLASSES = ("billing", "shipping", "technical")


def _frame(n_per_class: int = 40) -> pd.DataFrame:
    """Unique texts of three classes (sizes 40, 48, 56 by default) with a group column; one text is "NA"."""
    rows = []
    for c, name in enumerate(CLASSES):
        for i in range(n_per_class + 8 * c):
            rows.append(
                {"body": f"{name} question {i}: café, “quoted”, 数", "topic": name, "shop": f"s{i % 3}"}
            )
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)
    frame.loc[5, "body"] = "NA"  # a text pandas would read as missing by default
    return frame


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in frame.to_dict("records")))
    return path


def _load(path: Path, **options: object) -> Dataset:
    kind = path.suffix.lstrip(".")
    return load_dataset(parse_data_arg(f"{kind}:{path}", text="body", target="topic", **options))


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_text_files_load_split_as_tables_do_and_rows_map_back(tmp_path: Path, suffix: str) -> None:
    frame = _frame()
    path = _write(frame, tmp_path / f"tickets{suffix}")
    d = _load(path, groups=["shop"])
    assert d.kind == "text" and d.input_shape == () and d.input_range is None
    assert d.class_names == list(CLASSES) and d.name == "tickets"
    assert all(s.x.dtype == object and s.x.ndim == 1 for s in d.splits().values())
    n = len(frame)
    assert d.test.n == math.ceil(0.2 * n) and d.val.n == math.ceil(0.1 * (n - d.test.n))
    ids = np.concatenate([s.ids for s in d.splits().values()])
    assert len(set(ids.tolist())) == n
    # Each example is its row of the file: text, label and group.
    for split in d.splits().values():
        assert split.rows is not None
        source = frame.iloc[split.rows]
        assert split.x.tolist() == source["body"].tolist()
        assert [d.class_names[c] for c in split.y] == source["topic"].tolist()
        assert split.groups is not None and split.groups.tolist() == source["shop"].tolist()
    assert "NA" in np.concatenate([s.x for s in d.splits().values()]).tolist()
    # Stratified: each class's share of the test split within one example of its share of the file.
    share = frame["topic"].value_counts(normalize=True)
    for c, name in enumerate(CLASSES):
        assert abs((d.test.y == c).sum() - share[name] * d.test.n) <= 1
        assert abs((d.val.y == c).sum() - share[name] * d.val.n) <= 1


def test_the_split_is_the_table_loaders_split_of_the_same_file(tmp_path: Path) -> None:
    """Text and table loaders give a file's rows the same splits and ids (the audit relies on it)."""
    frame = _frame()
    frame["length"] = frame["body"].str.len()  # a numeric column, so the table loader has a feature
    path = _write(frame, tmp_path / "t.csv")
    text = _load(path, seed=3)
    table = load_dataset(parse_data_arg(f"csv:{path}", target="topic", groups=["shop"], seed=3))
    for name in ("train", "val", "test"):
        a, b = text.split(name), table.split(name)
        assert a.rows is not None and b.rows is not None
        assert a.rows.tolist() == b.rows.tolist() and a.ids.tolist() == b.ids.tolist()
        assert a.y.tolist() == b.y.tolist() and a.rows_of == b.rows_of


def test_formats_agree_and_splits_are_seeded(tmp_path: Path) -> None:
    frame = _frame()
    csv, parquet, jsonl = (_write(frame, tmp_path / f"t.{s}") for s in ("csv", "parquet", "jsonl"))
    assert _load(csv).fingerprints() == _load(parquet).fingerprints() == _load(jsonl).fingerprints()
    assert _load(csv, seed=1).fingerprints() == _load(csv, seed=1).fingerprints()
    assert _load(csv, seed=1).fingerprints()["test"] != _load(csv, seed=2).fingerprints()["test"]


def test_jsonl_rows_are_lines_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    lines = [json.dumps({"body": f"text {i}", "topic": "ab"[i % 2]}) for i in range(40)]
    lines.insert(3, "   ")
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n\n")
    d = _load(tmp_path / "t.jsonl")
    assert d.test.rows_of == "lines of t.jsonl (0-based)"
    for split in d.splits().values():
        assert split.rows is not None
        assert all(json.loads(lines[r])["body"] == t for r, t in zip(split.rows, split.x, strict=True))
    assert 3 not in np.concatenate([s.rows for s in d.splits().values() if s.rows is not None])


def test_fingerprint_sees_one_character(tmp_path: Path) -> None:
    frame = _frame()
    before = _load(_write(frame, tmp_path / "a.csv"))
    row = int(before.test.rows[0]) if before.test.rows is not None else -1
    changed = frame.copy()
    changed.loc[row, "body"] = changed.loc[row, "body"].replace("é", "e", 1)
    after = _load(_write(changed, tmp_path / "b.csv"))
    fa, fb = before.fingerprints(), after.fingerprints()
    assert fa["train"] == fb["train"] and fa["val"] == fb["val"] and fa["test"] != fb["test"]


def test_text_fingerprint_is_unambiguous_and_image_table_fingerprints_are_unchanged() -> None:
    y, ids = np.zeros(2, dtype=np.int64), np.asarray(["a", "b"])

    def texts(*values: str) -> Split:
        return Split(np.asarray(values, dtype=object), y, ids)

    assert texts("ab", "c").fingerprint() != texts("a", "bc").fingerprint()
    assert texts("a\x1fb", "c").fingerprint() != texts("a", "b\x1fc").fingerprint()
    assert texts("ab", "c").fingerprint() == texts("ab", "c").fingerprint()
    # Images and tables hash as before text existed (an independent copy of that formula): caches hold.
    for x in (np.arange(6, dtype=np.float64).reshape(2, 3), np.ones((2, 1, 2, 2), dtype=np.float32)):
        h = hashlib.sha256()
        h.update(repr(x.shape).encode())
        h.update(x.astype("<f4").tobytes())
        h.update(y.astype("<i8").tobytes())
        h.update(b"a\x1fb")
        assert Split(x, y, ids).fingerprint() == h.hexdigest()


def test_limit_is_a_stratified_seeded_subset(tmp_path: Path) -> None:
    path = _write(_frame(), tmp_path / "t.csv")
    full, small = _load(path), _load(path, limit=12)
    assert (
        small.train.n == 12 and small.test.n == 12 and small.val.n == full.val.n == 12
    )  # no more than the limit
    assert set(small.train.ids) <= set(full.train.ids) and set(small.test.ids) <= set(full.test.ids)
    assert np.bincount(small.test.y).tolist() == [3, 4, 5]  # the file's shares: 40, 48, 56 of 144
    assert small.fingerprints() == _load(path, limit=12).fingerprints()


def _broken(tmp_path: Path, name: str, content: str) -> Path:
    (tmp_path / name).write_text(content)
    return tmp_path / name


ROW = r"\(0-based, header not counted\)"
ONE = '{"body": "hi", "topic": "x"}\n'  # a good first line


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "body,topic\nhi,x\n,y\n", rf"a\.csv: row 1 {ROW}, column 'body', is empty"),
        (
            "b.csv",
            "body,topic\nhi,x\n  ,y\n\t,y\n",
            r"row 1 .* holds only whitespace \(2 such values in all\)",
        ),
        ("c.csv", "body,topic\nhi,x\nho,\n", rf"row 1 {ROW} has no label in column 'topic'"),
        ("d.csv", "text,topic\nhi,x\n", r"d\.csv: no column 'body'; columns are \['text', 'topic'\]"),
        ("e.jsonl", ONE + '{"body": "ho", "topic": \n', r"e\.jsonl: line 2 is not JSON"),
        ("f.jsonl", ONE + '["ho", "y"]\n', r"line 2 holds a JSON list, not an object"),
        (
            "g.jsonl",
            ONE + '{"body": 7, "topic": "y"}\n',
            r"line 2, column 'body', holds 7 \(int\), not a string",
        ),
        ("h.jsonl", ONE + '{"topic": "y"}\n', r"line 2, column 'body', is missing"),
        ("i.jsonl", "\n\n", r"i\.jsonl: no records"),
    ],
)
def test_bad_text_files_are_named_with_the_row(tmp_path: Path, name: str, content: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        _load(_broken(tmp_path, name, content))


def test_parquet_values_that_are_not_strings(tmp_path: Path) -> None:
    pd.DataFrame({"body": ["a", None, "c"], "topic": ["x", "y", "x"]}).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"row 1 \(0-based, header not counted\), column 'body', is missing"):
        _load(tmp_path / "n.parquet")
    pd.DataFrame({"body": [1, 2, 3], "topic": ["x", "y", "x"]}).to_parquet(tmp_path / "i.parquet")
    with pytest.raises(DataError, match=r"row 0 .* holds 1 \(int\), not a string \(3 such values in all\)"):
        _load(tmp_path / "i.parquet")


def test_text_options_and_source_strings(tmp_path: Path) -> None:
    assert parse_data_arg("jsonl:x.jsonl", text="body").text == "body"
    assert parse_data_arg("fortunes").path is None and parse_data_arg("fortunes:/f").path == "/f"
    with pytest.raises(UsageError, match=r"Use .*jsonl:FILE, fortunes\[:DIR\]"):
        parse_data_arg("jsonl:")
    with pytest.raises(UsageError, match="needs --text"):
        load_dataset(DataSpec(kind="jsonl", path=str(tmp_path / "t.jsonl"), target="topic"))
    csv = _write(_frame(), tmp_path / "t.csv")
    with pytest.raises(UsageError, match=r"t\.csv: texts need --target naming the label column"):
        load_dataset(parse_data_arg(f"csv:{csv}", text="body"))
    with pytest.raises(UsageError, match="has no columns"):
        load_dataset(parse_data_arg("sklearn:wine", text="body"))
    with pytest.raises(DataError, match="Text file not found"):
        _load(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="Table not found"):
        _load(tmp_path / "absent.csv")


def test_a_text_dataset_refuses_blank_and_non_string_examples() -> None:
    def dataset(x: np.ndarray) -> Dataset:
        split = Split(x, np.zeros(len(x), dtype=np.int64), np.asarray([f"e{i}" for i in range(len(x))]))
        return Dataset("t", "text", split, split, split, ["only"], "built", input_range=None)

    ok = np.asarray(["one", "two"], dtype=object)
    assert dataset(ok).input_shape == ()
    with pytest.raises(DataError, match="the train split's example e1 is empty"):
        dataset(np.asarray(["one", ""], dtype=object))
    with pytest.raises(DataError, match=r"example e0 holds 3 \(int\), not a string"):
        dataset(np.asarray([3, "x"], dtype=object))
    with pytest.raises(DataError, match="must be a vector of strings"):
        dataset(np.asarray([["a"], ["b"]], dtype=object))
    assert replace(dataset(ok), name="u").name == "u"


# Debian's fortunes -------------------------------------------------------------------------------


def _fortunes(path: Path, entries: list[str]) -> None:
    path.write_text("\n%\n".join(entries) + "\n%\n")


def _fake_fortunes(root: Path) -> Path:
    """alpha: 210 entries; beta: 206, one an alpha entry; gamma: 5 (too few); and what is not read."""
    root.mkdir()
    alpha = [f"Alpha saying number {i}.\n\t\t-- Someone {i % 7}" for i in range(210)]
    beta = [f"Beta proverb {i}" for i in range(205)]
    beta.insert(17, alpha[3])  # a duplicate: the copy in alpha (read first) stays
    beta[0] = "The *____\b\b\b\bonly* thing, _\bI said, b\b_o\b_l\b_d.\a"  # overstrikes and a bell
    _fortunes(root / "alpha", alpha)
    _fortunes(root / "beta", beta)
    _fortunes(root / "gamma", [f"g{i}" for i in range(5)])
    (root / "alpha.dat").write_bytes(b"\x00\x00\x00\x02\xff\xfe")  # strfile's index: binary, not read
    (root / "alpha.u8").symlink_to("alpha")
    (root / "off").mkdir()
    _fortunes(root / "off" / "rude", [f"rude {i}" for i in range(300)])
    return root


def test_fortunes_from_a_folder(tmp_path: Path) -> None:
    root = _fake_fortunes(tmp_path / "fortunes")
    d = load_dataset(parse_data_arg(f"fortunes:{root}"))
    assert d.kind == "text" and d.class_names == ["alpha", "beta"] and d.name == "fortunes"
    every = np.concatenate([s.x for s in d.splits().values()])
    labels = np.concatenate([s.y for s in d.splits().values()])
    assert np.bincount(labels).tolist() == [210, 205] and len(set(every.tolist())) == 415
    assert "The *only* thing, I said, bold." in every.tolist()
    assert not any("rude" in t or t == "g1" for t in every.tolist())
    # gamma, too small to be a class, is held out: texts of a class the model never sees (near-OOD)
    assert d.held_out is not None and d.held_out.tolist() == [f"g{i}" for i in range(5)]
    assert load_dataset(parse_data_arg(f"fortunes:{root}", limit=40)).held_out.tolist() == d.held_out.tolist()
    # Each example is its %-separated entry of the file its label names.
    for split in d.splits().values():
        assert split.rows is not None
        for text, label, row in zip(split.x, split.y, split.rows, strict=True):
            raw = (root / d.class_names[label]).read_text().split("\n%\n")[row]
            assert raw == text or "\b" in raw
    assert d.fingerprints() == load_dataset(parse_data_arg(f"fortunes:{root}")).fingerprints()


def test_fortunes_cap_is_a_fixed_sample_of_each_category(tmp_path: Path) -> None:
    root = _fake_fortunes(tmp_path / "fortunes")
    corpus = read_fortunes(root, min_entries=5, cap=50)
    assert corpus.found == {"alpha": 210, "beta": 205, "gamma": 5} and corpus.duplicates == 1
    assert Counter(corpus.labels.tolist()) == {"alpha": 50, "beta": 50, "gamma": 5}
    assert corpus.held_out.tolist() == []  # every file is a class at min_entries=5
    alpha = [f"Alpha saying number {i}.\n\t\t-- Someone {i % 7}" for i in range(210)]
    lowest = sorted(alpha, key=lambda t: hashlib.sha256(t.encode()).hexdigest())[:50]
    assert set(corpus.texts[corpus.labels == "alpha"].tolist()) == set(lowest)
    assert corpus.entries[corpus.labels == "alpha"].tolist() == sorted(alpha.index(t) for t in lowest)


def test_fortunes_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"Fortunes folder not found: .*apt-get install fortunes"):
        load_dataset(parse_data_arg(f"fortunes:{tmp_path / 'absent'}"))
    (tmp_path / "small").mkdir()
    _fortunes(tmp_path / "small" / "tiny", ["a", "b"])
    with pytest.raises(
        DataError, match=r"no category has 200 distinct entries or more \(the largest, 'tiny', has 2\)"
    ):
        load_dataset(parse_data_arg(f"fortunes:{tmp_path / 'small'}"))
    (tmp_path / "small" / "latin").write_bytes(b"caf\xe9\n%\n")
    with pytest.raises(DataError, match=r"latin: not UTF-8 text \(byte 3\)"):
        load_dataset(parse_data_arg(f"fortunes:{tmp_path / 'small'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no fortune files"):
        load_dataset(parse_data_arg(f"fortunes:{tmp_path / 'empty'}"))


@pytest.mark.skipif(
    not FORTUNES_DIR.is_dir(), reason="Debian's fortunes is not installed (sudo apt-get install fortunes)"
)
def test_debian_fortunes_counts_as_documented() -> None:
    """The figures docs/data.md gives for Debian's fortunes 1:1.99.1-7.3."""
    corpus = read_fortunes(FORTUNES_DIR)
    assert len(corpus.found) == 43 and sum(corpus.found.values()) == 15131 and corpus.duplicates == 86
    counts = Counter(corpus.labels.tolist())
    assert len(counts) == 24 and len(corpus.texts) == 6759
    assert min(counts.values()) == 203 and max(counts.values()) == 300
    d = load_dataset(parse_data_arg("fortunes"))
    assert (d.train.n, d.val.n, d.test.n) == (4866, 541, 1352)
    assert d.class_names[:3] == ["art", "computers", "cookie"] and d.class_names[-1] == "zippy"

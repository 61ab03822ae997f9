"""Where data comes from: one :class:`DataSpec` in, one validated :class:`Dataset` out.

Spec strings on the command line:
    fashion-mnist                  the Debian package's files (or $ASSAY_FASHION_MNIST_DIR)
    idx:DIR                        any folder with the four standard IDX files (MNIST layout)
    npz:FILE                       arrays x_train, y_train, x_test, y_test (optional x_val, y_val)
    csv:FILE / parquet:FILE        a table; needs a target column (--target), optional group columns
    csv:, parquet:, jsonl:FILE     with a text column (``text=``): texts and their labels (``target=``)
    fortunes                       Debian's fortunes, category = file (or fortunes:DIR for another folder)
    sklearn:digits|breast_cancer|wine   scikit-learn's bundled sets
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError
from sklearn.model_selection import train_test_split

from assay.config import validation_message
from assay.data.dataset import Dataset, Split
from assay.data.idx import find_idx, read_idx
from assay.data.text import (
    FORTUNES_DIR,
    FORTUNES_LICENCE,
    check_texts,
    is_missing,
    read_fortunes,
    read_jsonl,
)
from assay.errors import DataError, UsageError
from assay.outputs import as_class_indices

if TYPE_CHECKING:
    import pandas as pd

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
SKLEARN_SETS = ("digits", "breast_cancer", "wine")


_KINDS = ("fashion-mnist", "idx", "npz", "csv", "parquet", "jsonl", "sklearn", "fortunes")
_WITHOUT_PATH = ("fashion-mnist", "fortunes")  # a built-in source; a path names another folder
_WITH_TEXT = ("csv", "parquet", "jsonl")  # the sources that have named columns


class DataSpec(BaseModel):
    kind: Literal["fashion-mnist", "idx", "npz", "csv", "parquet", "jsonl", "sklearn", "fortunes"]
    path: str | None = None
    target: str | None = None
    text: str | None = None  # csv, parquet, jsonl: the column holding the texts (makes a text dataset)
    groups: list[str] = Field(default_factory=list)
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)  # tables, texts and sklearn sets only
    seed: int = 0
    limit: int | None = Field(None, gt=0)  # stratified subsample of each split, for quick runs
    name: str | None = None
    licence: str | None = None


def parse_data_arg(arg: str, **options: object) -> DataSpec:
    """Turn ``--data`` strings like ``npz:file.npz`` into a :class:`DataSpec`; ``options`` are its other
    fields (``target="label"``, ``text="review"``, ``seed=1``...).

    Example:
        >>> parse_data_arg("jsonl:reviews.jsonl", text="review", target="stars").kind
        'jsonl'
    """
    kind, _, rest = arg.partition(":")
    if kind not in _KINDS or (kind not in _WITHOUT_PATH and not rest):
        raise UsageError(
            f"Cannot read data source '{arg}'. Use fashion-mnist, idx:DIR, npz:FILE, csv:FILE, "
            "parquet:FILE, jsonl:FILE, fortunes[:DIR] or sklearn:digits|breast_cancer|wine."
        )
    try:
        return DataSpec.model_validate({"kind": kind, "path": rest or None, **options})
    except ValidationError as e:
        raise UsageError(validation_message(f"data source '{arg}'", e)) from None


def source_text(spec: DataSpec) -> str:
    """The spec's source as written after ``--data``: ``fashion-mnist``, ``npz:FILE``, ``sklearn:digits``."""
    return spec.kind if spec.path is None else f"{spec.kind}:{spec.path}"


def load_dataset(spec: DataSpec) -> Dataset:
    """The dataset ``spec`` names, split and validated (see the module's docstring for the sources)."""
    if spec.text is not None and spec.kind not in _WITH_TEXT:
        raise UsageError(
            f"A text column ('{spec.text}') names a column of a csv, parquet or jsonl file; "
            f"{source_text(spec)} has no columns."
        )
    if spec.kind in ("fashion-mnist", "idx"):
        dataset = _load_idx(spec)
    elif spec.kind == "npz":
        dataset = _load_npz(spec)
    elif spec.kind in _WITH_TEXT and (spec.text is not None or spec.kind == "jsonl"):
        dataset = _load_text(spec)
    elif spec.kind in ("csv", "parquet"):
        dataset = _load_table(spec)
    elif spec.kind == "fortunes":
        dataset = _load_fortunes(spec)
    else:
        dataset = _load_sklearn(spec)
    return _limit(dataset, spec.limit, spec.seed) if spec.limit else dataset


def _stratified_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of ``range(len(y))`` into kept and held-out indices.

    Falls back to an unstratified split where stratifying is impossible: a class with one example, or
    fewer places on either side than there are classes (scikit-learn would raise).
    """
    counts = np.bincount(y)
    n_held = math.ceil(fraction * len(y))
    classes = int((counts > 0).sum())
    stratify = y if counts[counts > 0].min() >= 2 and min(n_held, len(y) - n_held) >= classes else None
    keep, held = train_test_split(np.arange(len(y)), test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(keep), np.sort(held)


def _split_off(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    keep, held = _stratified_indices(split.y, fraction, seed)
    return split.subset(keep), split.subset(held)


def _limit(dataset: Dataset, limit: int, seed: int) -> Dataset:
    if limit < dataset.n_classes:
        raise UsageError(
            f"--limit {limit} is below the {dataset.n_classes} classes of {dataset.name}; "
            "each split needs room for every class."
        )

    def take(split: Split) -> Split:
        if split.n <= limit:
            return split
        _, kept = _split_off(split, limit / split.n, seed)
        return kept

    return Dataset(
        **{
            **dataset.__dict__,
            "train": take(dataset.train),
            "val": take(dataset.val),
            "test": take(dataset.test),
        }
    )


def _images(x: np.ndarray, source: str) -> np.ndarray:
    """uint8 or float images -> float32 (N, C, H, W) in [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{source}: images must be (N, H, W) or (N, C, H, W), got shape {x.shape}.")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if np.isfinite(x).all() and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{source}: float images must lie in [0, 1]; found [{x.min():.3g}, {x.max():.3g}].")
    return x


def _labels(y: np.ndarray, n: int, source: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{source}: labels must be a vector of {n} entries, got shape {y.shape}.")
    return as_class_indices(y, source)


def _class_names(y_train: np.ndarray, y_test: np.ndarray, source: str) -> list[str]:
    """Classes 0..max(train); a test label never seen in training is a data error, not a new class."""
    if y_train.min() < 0 or y_test.min() < 0:
        raise DataError(f"{source}: labels must be >= 0; found {int(min(y_train.min(), y_test.min()))}.")
    unseen = np.setdiff1d(y_test, y_train)
    if unseen.size:
        raise DataError(
            f"{source}: test label(s) {unseen[:5].tolist()} never occur in the training split; "
            "check the label encoding of both splits."
        )
    return [str(c) for c in range(int(y_train.max()) + 1)]


def _ids(prefix: str, n: int) -> np.ndarray:
    return np.char.add(f"{prefix}-", np.arange(n).astype(str))


def _part(
    x: np.ndarray,
    y: np.ndarray,
    prefix: str,
    rows: np.ndarray,
    rows_of: str,
    groups: np.ndarray | None = None,
) -> Split:
    """A train, val or test part with ids ``<prefix>-<position>`` and the source row of each example."""
    return Split(x, y, _ids(prefix, len(y)), groups, rows=rows.astype(np.int64), rows_of=rows_of)


def _image_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    spec: DataSpec,
    source: str,
    class_names: list[str] | None,
    licence: str,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    rows_of: Callable[[str], str] = lambda part: part,
) -> Dataset:
    """``rows_of(part)``: what the rows of the train, val or test arrays are, for each example's row."""
    for split, x in (("train", x_train), ("test", x_test)):
        if len(x) == 0:
            raise DataError(f"{source}: the {split} split has no examples.")
    x_train, x_test = _images(x_train, source), _images(x_test, source)
    y_train, y_test = _labels(y_train, len(x_train), source), _labels(y_test, len(x_test), source)
    names = class_names or _class_names(y_train, y_test, source)
    train = _part(x_train, y_train, "train", np.arange(len(y_train)), rows_of("train"))
    if val is None:
        train, val_split = _split_off(train, spec.val_fraction, spec.seed)
    else:
        x_val = _images(val[0], source)
        y_val = _labels(val[1], len(x_val), source)
        val_split = _part(x_val, y_val, "val", np.arange(len(x_val)), rows_of("val"))
    return Dataset(
        name=spec.name or name,
        kind="image",
        train=train,
        val=val_split,
        test=_part(x_test, y_test, "test", np.arange(len(y_test)), rows_of("test")),
        class_names=names,
        source=source,
        licence=spec.licence or licence,
    )


def _load_idx(spec: DataSpec) -> Dataset:
    if spec.kind == "fashion-mnist":
        directory = Path(spec.path or os.environ.get("ASSAY_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
        name, classes, licence = "fashion-mnist", FASHION_MNIST_CLASSES, "MIT"
    else:
        directory, name, classes, licence = Path(spec.path or ""), Path(spec.path or "").name, None, "unknown"
    if not directory.is_dir():
        hint = " Install Debian's dataset-fashion-mnist package (make setup does)." if not spec.path else ""
        raise DataError(f"Dataset folder not found: {directory}.{hint}")
    x_train, y_train, x_test, y_test = (
        read_idx(find_idx(directory, f"{split}-{part}"))
        for split in ("train", "t10k")
        for part in ("images-idx3-ubyte", "labels-idx1-ubyte")
    )
    return _image_dataset(
        name,
        x_train,
        y_train,
        x_test,
        y_test,
        spec=spec,
        source=str(directory),
        class_names=classes,
        licence=licence,
        rows_of=lambda part: f"{'t10k' if part == 'test' else 'train'}-images of {directory}",
    )


def _load_npz(spec: DataSpec) -> Dataset:
    path = Path(spec.path or "")
    if not path.is_file():
        raise DataError(f"Dataset file not found: {path}.")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e}).") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {missing}; found {sorted(arrays)}.")
    val = (arrays["x_val"], arrays["y_val"]) if "x_val" in arrays and "y_val" in arrays else None

    def rows_of(part: str) -> str:
        return f"x_{part} of {path.name}"

    if arrays["x_train"].ndim == 2:  # a table stored as arrays
        return _table_dataset(
            path.stem,
            arrays["x_train"],
            arrays["y_train"],
            arrays["x_test"],
            arrays["y_test"],
            spec,
            str(path),
            None,
            [f"x{i}" for i in range(arrays["x_train"].shape[1])],
            rows=(np.arange(len(arrays["y_train"])), np.arange(len(arrays["y_test"]))),
            rows_of=(rows_of("train"), rows_of("test")),
        )
    return _image_dataset(
        path.stem,
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        spec=spec,
        source=str(path),
        class_names=None,
        licence="unknown",
        val=val,
        rows_of=rows_of,
    )


def _table_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    spec: DataSpec,
    source: str,
    class_names: list[str] | None,
    feature_names: list[str],
    groups: tuple[np.ndarray, np.ndarray] | None = None,
    licence: str = "unknown",
    *,
    rows: tuple[np.ndarray, np.ndarray],
    rows_of: tuple[str, str],
) -> Dataset:
    """``rows``: each train and test example's row in what ``rows_of`` names (the source's rows)."""
    x_train, x_test = np.asarray(x_train, dtype=np.float32), np.asarray(x_test, dtype=np.float32)
    for label, x in (("train", x_train), ("test", x_test)):
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise DataError(
                f"{source}: {len(bad)} {label} row(s) have missing or infinite values (first: {bad[0]})."
            )
    y_train, y_test = _labels(y_train, len(x_train), source), _labels(y_test, len(x_test), source)
    g_train, g_test = groups if groups is not None else (None, None)
    train, val = _split_off(
        _part(x_train, y_train, "train", rows[0], rows_of[0], g_train), spec.val_fraction, spec.seed
    )
    test = _part(x_test, y_test, "test", rows[1], rows_of[1], g_test)
    # Standardise with the statistics of the training rows alone (after the validation split), so nothing
    # about validation or test examples leaks into the inputs.
    # In float64: float32 statistics are off by ~1e-6 relative, and which way depends on the CPU's
    # summation order; the model's input contract keeps these exact values.
    mean, std = train.x.mean(axis=0, dtype=np.float64), train.x.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    train, val, test = (replace(s, x=((s.x - mean) / std).astype(np.float32)) for s in (train, val, test))
    return Dataset(
        name=spec.name or name,
        kind="table",
        train=train,
        val=val,
        test=test,
        class_names=class_names or _class_names(y_train, y_test, source),
        source=source,
        licence=spec.licence or licence,
        input_range=None,
        feature_names=feature_names,
        standardisation=(mean, std),
    )


_TABLE_ROWS = "rows of {} (0-based, header not counted)"


def _read_frame(spec: DataSpec, path: Path, *, text: str | None = None) -> pd.DataFrame:
    """The csv or parquet file as a frame. With ``text`` (a text column) a CSV is read without pandas'
    missing-value strings, and the text column as strings: the review "NA" stays a text, and a blank
    field is an empty string (refused as such) instead of NaN."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"Table not found: {path}.")
    try:
        if spec.kind == "parquet":
            return pd.read_parquet(path)
        if text is None:
            return pd.read_csv(path)
        return pd.read_csv(path, dtype={text: str}, keep_default_na=False)
    except Exception as e:  # pandas raises many parser-specific types
        raise DataError(f"{path}: cannot read as {spec.kind} ({e}).") from None


def _check_columns(frame: pd.DataFrame, spec: DataSpec, path: Path, columns: list[str]) -> None:
    if not spec.target:
        raise UsageError(
            f"{path}: {'texts need' if spec.text else 'a table needs'} --target naming the label column; "
            f"columns are {list(frame.columns)}."
        )
    for column in columns:
        if column not in frame.columns:
            raise DataError(f"{path}: no column '{column}'; columns are {list(frame.columns)}.")


def _encode(frame: pd.DataFrame, spec: DataSpec) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Class names (sorted as strings), each row's class index, and each row's groups joined by "|"."""
    assert spec.target is not None  # _check_columns saw to it
    classes, y = np.unique(frame[spec.target].astype(str).to_numpy(), return_inverse=True)
    groups = frame[spec.groups].astype(str).agg("|".join, axis=1).to_numpy() if spec.groups else None
    return [str(c) for c in classes], y, groups


def _load_table(spec: DataSpec) -> Dataset:
    import pandas as pd

    path = Path(spec.path or "")
    frame = _read_frame(spec, path)
    _check_columns(frame, spec, path, [str(spec.target), *spec.groups])
    classes, y, groups = _encode(frame, spec)
    features = pd.get_dummies(frame.drop(columns=[spec.target, *spec.groups]), dtype=np.float32)
    if features.shape[1] == 0:
        raise DataError(f"{path}: no feature columns besides the target and groups.")
    try:
        x = features.to_numpy(dtype=np.float32)
    except ValueError as e:
        raise DataError(f"{path}: feature columns must be numeric or categorical ({e}).") from None
    train_i, test_i = _stratified_indices(y, spec.test_fraction, spec.seed)
    g = None if groups is None else (groups[train_i], groups[test_i])
    return _table_dataset(
        path.stem,
        x[train_i],
        y[train_i],
        x[test_i],
        y[test_i],
        spec,
        str(path),
        classes,
        [str(c) for c in features.columns],
        g,
        rows=(train_i, test_i),
        rows_of=(_TABLE_ROWS.format(path.name),) * 2,
    )


def _text_dataset(
    name: str,
    texts: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    spec: DataSpec,
    source: str,
    *,
    rows: np.ndarray,
    rows_of: str,
    groups: np.ndarray | None = None,
    licence: str = "unknown",
    held_out: np.ndarray | None = None,
) -> Dataset:
    """Texts split as tables are: a seeded stratified test split of every row, then the validation split
    taken from the training rows, so the ids of a text file's rows are those a table of it would get."""
    train_i, test_i = _stratified_indices(y, spec.test_fraction, spec.seed)

    def part(prefix: str, index: np.ndarray) -> Split:
        g = None if groups is None else groups[index]
        return _part(texts[index], y[index], prefix, rows[index], rows_of, g)

    train, val = _split_off(part("train", train_i), spec.val_fraction, spec.seed)
    return Dataset(
        name=spec.name or name,
        kind="text",
        train=train,
        val=val,
        test=part("test", test_i),
        class_names=class_names,
        source=source,
        licence=spec.licence or licence,
        input_range=None,
        held_out=held_out,
    )


def _load_text(spec: DataSpec) -> Dataset:
    """A text column and a label column of a CSV, Parquet or JSON Lines file."""
    path = Path(spec.path or "")
    if spec.text is None:
        raise UsageError(f"{path}: a JSON Lines file needs --text naming the field that holds the texts.")
    if spec.kind == "jsonl":
        frame, rows = read_jsonl(path)
        rows_of = f"lines of {path.name} (0-based)"

        def where(at: int) -> str:
            return f"line {rows[at] + 1}"
    else:
        frame = _read_frame(spec, path, text=spec.text)
        rows, rows_of = np.arange(len(frame), dtype=np.int64), _TABLE_ROWS.format(path.name)

        def where(at: int) -> str:
            return f"row {at} (0-based, header not counted)"

    if len(frame) == 0:
        raise DataError(f"{path}: no rows.")
    _check_columns(frame, spec, path, [spec.text, str(spec.target), *spec.groups])
    texts = check_texts(
        frame[spec.text].to_numpy(dtype=object),
        str(path),
        lambda at: f"{where(at)}, column '{spec.text}',",
        "give every example a text, or drop the row.",
    )
    labels = frame[spec.target].to_numpy(dtype=object)
    missing = np.flatnonzero([is_missing(v) for v in labels])
    if missing.size:
        raise DataError(
            f"{path}: {where(int(missing[0]))} has no label in column '{spec.target}' ({missing.size} "
            "row(s) in all); label every example, or drop the row."
        )
    classes, y, groups = _encode(frame, spec)
    return _text_dataset(
        path.stem, texts, y, classes, spec, str(path), rows=rows, rows_of=rows_of, groups=groups
    )


def _load_fortunes(spec: DataSpec) -> Dataset:
    """Debian's fortunes (or another folder of fortune files): one class a category file."""
    directory = Path(spec.path) if spec.path else FORTUNES_DIR
    corpus = read_fortunes(directory)
    classes, y = np.unique(corpus.labels, return_inverse=True)
    return _text_dataset(
        "fortunes",
        corpus.texts,
        y,
        [str(c) for c in classes],
        spec,
        str(directory),
        rows=corpus.entries,
        rows_of=f"%-separated entries (0-based) of the file in {directory} that the label names",
        licence=FORTUNES_LICENCE,
        held_out=corpus.held_out if len(corpus.held_out) else None,
    )


def _load_sklearn(spec: DataSpec) -> Dataset:
    from sklearn import datasets

    name = spec.path or ""
    if name not in SKLEARN_SETS:
        raise UsageError(f"Unknown scikit-learn dataset '{name}'. Known: {', '.join(SKLEARN_SETS)}.")
    bunch = getattr(datasets, f"load_{name}")()
    x, y = np.asarray(bunch.data, dtype=np.float32), np.asarray(bunch.target)
    train_i, test_i = _stratified_indices(y, spec.test_fraction, spec.seed)
    return _table_dataset(
        f"sklearn-{name}",
        x[train_i],
        y[train_i],
        x[test_i],
        y[test_i],
        spec,
        f"sklearn.datasets.load_{name}",
        [str(c) for c in bunch.target_names],
        [str(c) for c in bunch.feature_names],
        licence="BSD-3-Clause",
        rows=(train_i, test_i),
        rows_of=(f"rows of sklearn.datasets.load_{name}()",) * 2,
    )

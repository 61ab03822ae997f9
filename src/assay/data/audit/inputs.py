"""What an audit looks at: the splits of a dataset as arrays, plus the raw table columns where there are any.

Images come from :func:`assay.data.load_dataset` unchanged. Tables are read here instead, because the
loader refuses missing values and turns every text column into indicator columns, while an audit must see
both: the raw columns (for missing values, schema drift, PII and text duplicates) and numeric features
(for near-duplicate rows and outliers). Rows are split exactly as the loader splits them, so example ids
(``train-17``, ``test-3``) name the same rows in an audit and in an evaluation.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from assay.data.dataset import Dataset, Split
from assay.data.sources import DataSpec, _split_off, _stratified_indices, load_dataset
from assay.errors import DataError, UsageError

Kind = Literal["image", "table"]


@dataclass(frozen=True)
class AuditSplit:
    """One split. ``x``: images (N, C, H, W) in [0, 1] or numeric features (N, F) standardised on train
    (missing values filled with the training median); ``frame``: the raw input columns of a table (no label,
    no groups), if any."""

    ids: np.ndarray
    labels: np.ndarray
    x: np.ndarray
    groups: np.ndarray | None = None
    frame: pd.DataFrame | None = None
    meta: pd.DataFrame | None = None  # the label and group columns of a table, as read

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class AuditData:
    name: str
    kind: Kind
    splits: dict[str, AuditSplit]
    class_names: list[str]
    source: str
    licence: str = "unknown"
    text_columns: list[str] = field(default_factory=list)
    feature_columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.splits:
            raise DataError(f"{self.source}: no splits to audit.")
        seen: set[str] = set()
        for name, split in self.splits.items():
            if split.n == 0:
                raise DataError(f"{self.source}: the {name} split is empty; there is nothing to audit.")
            lengths = {"inputs": split.x.shape[0], "labels": split.n, "ids": split.ids.shape[0]}
            if split.groups is not None:
                lengths["groups"] = split.groups.shape[0]
            if split.frame is not None:
                lengths["table rows"] = len(split.frame)
            if len(set(lengths.values())) != 1:
                listed = ", ".join(f"{v} {k}" for k, v in lengths.items())
                raise DataError(f"{self.source}: the {name} split has {listed}; they must match.")
            duplicate_ids = seen.intersection(split.ids.tolist())
            if duplicate_ids or len(set(split.ids.tolist())) != split.n:
                raise DataError(f"{self.source}: example ids must be unique across splits ({name}).")
            seen.update(split.ids.tolist())
            if self.class_names and ((split.labels < 0) | (split.labels >= len(self.class_names))).any():
                raise DataError(f"{self.source}: the {name} split has labels outside the class list.")

    @property
    def n(self) -> int:
        return sum(s.n for s in self.splits.values())

    @classmethod
    def from_arrays(
        cls,
        splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
        *,
        name: str = "arrays",
        kind: Kind | None = None,
        class_names: list[str] | None = None,
        ids: Mapping[str, np.ndarray] | None = None,
        groups: Mapping[str, np.ndarray] | None = None,
    ) -> AuditData:
        """Splits given as ``{"train": (x, y), ...}``; ids default to ``<split>-<row>``."""
        built: dict[str, AuditSplit] = {}
        n_classes = 0
        for split_name, (x, y) in splits.items():
            x, y = np.asarray(x), np.asarray(y)
            if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
                raise DataError(f"{name}: the {split_name} labels must be a vector of integer class indices.")
            split_ids = (
                np.asarray(ids[split_name]).astype(str)
                if ids and split_name in ids
                else np.char.add(f"{split_name}-", np.arange(x.shape[0] if x.ndim else 0).astype(str))
            )
            g = None if not groups or split_name not in groups else np.asarray(groups[split_name]).astype(str)
            built[split_name] = AuditSplit(ids=split_ids, labels=y.astype(np.int64), x=x, groups=g)
            n_classes = max(n_classes, int(y.max()) + 1 if y.size else 0)
        inferred: Kind = "image" if any(s.x.ndim >= 3 for s in built.values()) else "table"
        if (kind or inferred) == "image":  # (N, H, W) grey images get their channel axis
            built = {k: replace(v, x=v.x[:, None]) if v.x.ndim == 3 else v for k, v in built.items()}
        return cls(
            name=name,
            kind=kind or inferred,
            splits=built,
            class_names=class_names or [str(c) for c in range(n_classes)],
            source=name,
        )


def from_dataset(dataset: Dataset) -> AuditData:
    if dataset.kind == "text":
        raise UsageError(
            f"{dataset.name} is a text dataset; the data audit reads images and tables so far. Audit the "
            "file as a table, naming its text column with --text (the PII and text checks read it)."
        )
    return AuditData(
        name=dataset.name,
        kind=dataset.kind,
        splits={
            name: AuditSplit(ids=s.ids, labels=s.y, x=s.x, groups=s.groups)
            for name, s in dataset.splits().items()
        },
        class_names=dataset.class_names,
        source=dataset.source,
        licence=dataset.licence,
        feature_columns=dataset.feature_names,
    )


def load_audit_data(spec: DataSpec, text_columns: list[str] | None = None) -> AuditData:
    """The data behind ``--data``: images and scikit-learn sets through the loader, tables read raw."""
    if spec.kind not in ("csv", "parquet"):
        if text_columns:
            raise DataError(f"--text names columns of a table; {spec.kind} data has none.")
        if spec.kind == "npz":
            _check_npz_splits(Path(spec.path or ""))
        return from_dataset(load_dataset(spec))
    return _load_raw_table(spec, text_columns)


def _check_npz_splits(path: Path) -> None:
    """An empty split is the audit's to name (the loader would fail on it with a numpy message)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            for name in ("train", "val", "test"):
                if f"x_{name}" in z.files and z[f"x_{name}"].shape[:1] == (0,):
                    raise DataError(f"{path}: the {name} split is empty; there is nothing to audit.")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, DataError):
            raise
        # Missing or unreadable: the loader says which, in its own words.


def _read_frame(path: Path, kind: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"Table not found: {path}.")
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except Exception as e:  # pandas raises many parser-specific types
        raise DataError(f"{path}: cannot read as {kind} ({e}).") from None


def _is_text(column: pd.Series) -> bool:
    return bool(column.dtype == object or pd.api.types.is_string_dtype(column))


def _load_raw_table(spec: DataSpec, text_columns: list[str] | None) -> AuditData:
    path = Path(spec.path or "")
    frame = _read_frame(path, spec.kind)
    if len(frame) == 0:
        raise DataError(f"{path}: the table has no rows; there is nothing to audit.")
    if not spec.target:
        raise DataError(
            f"{path}: a table needs --target naming the label column; columns are {list(frame.columns)}."
        )
    for column in [spec.target, *spec.groups, *(text_columns or [])]:
        if column not in frame.columns:
            raise DataError(f"{path}: no column '{column}'; columns are {list(frame.columns)}.")
    if frame[spec.target].isna().any():
        missing = np.flatnonzero(frame[spec.target].isna().to_numpy())
        raise DataError(
            f"{path}: {len(missing)} row(s) have no label in '{spec.target}' (first: row {missing[0]})."
        )
    classes, y = np.unique(frame[spec.target].astype(str).to_numpy(), return_inverse=True)
    inputs = frame.drop(columns=[spec.target, *spec.groups])
    numeric = [str(c) for c in inputs.columns if pd.api.types.is_numeric_dtype(inputs[c])]
    texts = (
        text_columns if text_columns is not None else [str(c) for c in inputs.columns if _is_text(inputs[c])]
    )
    groups = frame[spec.groups].astype(str).agg("|".join, axis=1).to_numpy() if spec.groups else None
    # The loader's split, row for row: the same seeded stratified test split, then the validation split
    # taken from the training rows (ids are positions among the training rows or the test rows).
    train_i, test_i = _stratified_indices(y, spec.test_fraction, spec.seed)
    position = np.arange(len(train_i))
    train_ids = np.char.add("train-", position.astype(str))
    fake = Split(x=position[:, None].astype(np.float64), y=y[train_i], ids=train_ids)
    train_part, val_part = _split_off(fake, spec.val_fraction, spec.seed)
    rows = {
        "train": train_i[train_part.x[:, 0].astype(np.int64)],
        "val": train_i[val_part.x[:, 0].astype(np.int64)],
        "test": test_i,
    }
    ids = {
        "train": train_part.ids,
        "val": val_part.ids,
        "test": np.char.add("test-", np.arange(len(test_i)).astype(str)),
    }
    values = (
        inputs[numeric].to_numpy(dtype=np.float64, na_value=np.nan) if numeric else np.zeros((len(frame), 0))
    )
    train_values = values[rows["train"]]
    with np.errstate(all="ignore"):
        median = np.nan_to_num(np.nanmedian(train_values, axis=0)) if numeric else np.zeros(0)
        filled = np.where(np.isfinite(values), values, median)
        mean, std = filled[rows["train"]].mean(axis=0), filled[rows["train"]].std(axis=0)
    std[std == 0] = 1.0
    features = ((filled - mean) / std).astype(np.float32)
    splits = {
        name: AuditSplit(
            ids=ids[name],
            labels=y[r].astype(np.int64),
            x=features[r],
            groups=None if groups is None else groups[r],
            frame=inputs.iloc[r].reset_index(drop=True),
            meta=frame[[spec.target, *spec.groups]].iloc[r].reset_index(drop=True),
        )
        for name, r in rows.items()
    }
    return AuditData(
        name=spec.name or path.stem,
        kind="table",
        splits={k: v for k, v in splits.items() if v.n > 0},
        class_names=[str(c) for c in classes],
        source=str(path),
        licence=spec.licence or "unknown",
        text_columns=texts,
        feature_columns=numeric,
    )


def describe(data: AuditData) -> dict[str, Any]:
    """Sizes and shapes for the report's header."""
    first = next(iter(data.splits.values()))
    return {
        "name": data.name,
        "kind": data.kind,
        "source": data.source,
        "licence": data.licence,
        "classes": data.class_names,
        "splits": {name: s.n for name, s in data.splits.items()},
        "input_shape": list(first.x.shape[1:]),
        "text_columns": data.text_columns,
        "feature_columns": data.feature_columns,
    }

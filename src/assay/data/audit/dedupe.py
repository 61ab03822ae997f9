"""``assay data dedupe``: a copy of the dataset without the duplicated or leaked examples an audit finds.

What goes: within a split, the later member of every duplicate pair (exact, near, perceptual for images,
near-duplicate text for tables), so one example of each group stays; across splits, the *earlier* split's
member (the training copy of a test example), so the evaluation splits stay as they were and scores stay
comparable with published ones. Images and array tables are written as ``.npz`` (``x_train``, ``y_train``,
``x_val``, ``y_val``, ``x_test``, ``y_test``, ``ids_<split>``), which ``--data npz:FILE`` reads back with its
splits as written; raw tables as ``.csv`` or ``.parquet`` with a ``split`` column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from assay.data.audit.duplicates import leaked_pairs
from assay.data.audit.registry import AuditContext
from assay.data.audit.search import Pairs
from assay.errors import UsageError


@dataclass(frozen=True)
class DedupeResult:
    path: Path
    removed: dict[str, list[str]]  # split -> ids removed
    kept: dict[str, int]

    def summary(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "removed": {k: len(v) for k, v in self.removed.items()},
            "kept": self.kept,
            "removed_ids": self.removed,
        }


def removal_mask(ctx: AuditContext) -> np.ndarray:
    """Over the stacked splits: True for every row the cleaned copy leaves out."""
    parts: list[Pairs] = [leaked_pairs(ctx)]  # exact, near, perceptual and text pairs
    remove = np.zeros(ctx.split_of.shape[0], dtype=bool)
    for pairs in parts:
        same = ctx.split_of[pairs.i] == ctx.split_of[pairs.j]
        remove[pairs.j[same]] = True  # within a split: the later copy
        remove[pairs.i[~same]] = True  # across splits: the copy in the earlier (training) split
    return remove


def dedupe(ctx: AuditContext, out: Path) -> DedupeResult:
    out = Path(out)
    suffix = out.suffix.lower()
    if ctx.data.kind == "image" and suffix != ".npz":
        raise UsageError(f"Cleaned images are written as .npz; got '{out.name}'.")
    if suffix not in (".npz", ".csv", ".parquet"):
        raise UsageError(f"Write the cleaned data as .npz, .csv or .parquet; got '{out.name}'.")
    if suffix != ".npz" and any(s.frame is None for s in ctx.data.splits.values()):
        raise UsageError("Only a table read from csv: or parquet: can be written back as a table; use .npz.")
    remove = removal_mask(ctx)
    removed: dict[str, list[str]] = {}
    kept: dict[str, int] = {}
    keep_rows: dict[str, np.ndarray] = {}
    for k, name in enumerate(ctx.order):
        mask = remove[ctx.split_of == k]
        split = ctx.data.splits[name]
        removed[name] = split.ids[mask].tolist()
        keep_rows[name] = np.flatnonzero(~mask)
        kept[name] = int((~mask).sum())
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.tmp{out.suffix}")
    try:
        if suffix == ".npz":
            arrays: dict[str, np.ndarray] = {}
            for name, rows in keep_rows.items():
                split = ctx.data.splits[name]
                x = split.x[rows]
                as_bytes = np.rint(x * 255)
                if ctx.data.kind == "image" and np.array_equal(as_bytes / 255, x.astype(np.float64)):
                    x = as_bytes.astype(np.uint8)  # 8-bit images stay 8-bit
                arrays[f"x_{name}"] = x
                arrays[f"y_{name}"] = split.labels[rows]
                arrays[f"ids_{name}"] = split.ids[rows]
            with temp.open("wb") as handle:
                np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
        else:
            frames = []
            for name, rows in keep_rows.items():
                split = ctx.data.splits[name]
                assert split.frame is not None and split.meta is not None
                frame = pd.concat([split.meta.iloc[rows], split.frame.iloc[rows]], axis=1)
                frame.insert(0, "split", name)
                frame.insert(1, "id", split.ids[rows])
                frames.append(frame)
            table = pd.concat(frames, ignore_index=True)
            if suffix == ".csv":
                table.to_csv(temp, index=False)
            else:
                table.to_parquet(temp, index=False)
        temp.replace(out)
    finally:
        temp.unlink(missing_ok=True)
    return DedupeResult(out, removed, kept)

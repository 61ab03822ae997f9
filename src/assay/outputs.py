"""Per-example outputs: the single source of truth every metric, gate and report reads.

Inference runs once per (model version, dataset split) and the result is cached as an ``.npz`` with:
``id``, ``label``, ``probs`` (N x C, rows sum to 1), optional ``logits``, ``features`` (penultimate layer)
and ``group``. Predictions are always ``probs.argmax(1)``, so they cannot disagree with the probabilities.

A user with predictions from any other framework writes the same columns to an ``.npz`` or ``.parquet``
file (``label`` plus ``probs`` or ``logits``; ``id`` and ``group`` optional) and gets the same evaluation
and gate without a PyTorch model: see :func:`load_predictions`.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.atomic import replacing
from assay.errors import DataError

WRITTEN_SUFFIXES = (".npz", ".parquet", ".pq")  # what assay writes predictions as
# What a predictions file may be named: those, and .jsonl, lm-evaluation-harness samples (read only).
PREDICTION_SUFFIXES = (*WRITTEN_SUFFIXES, ".jsonl")


@dataclass(frozen=True)
class Outputs:
    ids: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64
    probs: np.ndarray  # (N, C) float64, rows sum to 1
    logits: np.ndarray | None = None  # (N, C) float, when the model produced them
    features: np.ndarray | None = None  # (N, D) penultimate-layer features
    groups: np.ndarray | None = None  # (N,) str
    source: str = field(default="outputs", compare=False, repr=False)  # named in error messages

    def __post_init__(self) -> None:
        _validate(self, self.source)

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.probs.shape[1])

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.preds == self.labels

    def fingerprint(self) -> str:
        """sha256 over the ids and labels: two outputs can be paired only if these match."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.ids.tolist()).encode())
        h.update(np.ascontiguousarray(self.labels, dtype="<i8").tobytes())
        return h.hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file, then rename) so a crash never leaves half a cache."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "id": self.ids.astype(str),
            "label": self.labels,
            "probs": self.probs,
        }
        for key, value in (("logits", self.logits), ("features", self.features), ("group", self.groups)):
            if value is not None:
                arrays[key] = value.astype(str) if key == "group" else value
        with replacing(path) as tmp, tmp.open("xb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
        return path


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def as_class_indices(y: np.ndarray, source: str) -> np.ndarray:
    """Labels as int64 class indices; floats are accepted only when they are whole numbers."""
    whole_floats = y.dtype.kind == "f" and bool(np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    if y.dtype.kind not in "iu" and not whole_floats:
        raise DataError(
            f"{source}: labels must hold whole class indices; got dtype {y.dtype} with NaN or fractions."
        )
    return y.astype(np.int64)


def from_arrays(
    labels: np.ndarray,
    *,
    probs: np.ndarray | None = None,
    logits: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    features: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    source: str = "arrays",
) -> Outputs:
    """Build validated :class:`Outputs`; exactly the checks a predictions file goes through."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"{source}: 'label' must be one-dimensional, got shape {labels.shape}.")
    labels = as_class_indices(labels, source)
    if probs is None and logits is None:
        raise DataError(f"{source}: needs a 'probs' or a 'logits' column; found neither.")
    if logits is not None:
        logits = np.asarray(logits, dtype=np.float64)
        if logits.ndim != 2:
            raise DataError(f"{source}: 'logits' must be N x C, got shape {logits.shape}.")
        if not np.all(np.isfinite(logits)):
            raise DataError(f"{source}: 'logits' contains NaN or infinite values.")
        if probs is None:
            probs = softmax(logits)
        elif np.shape(probs) != logits.shape or not np.allclose(probs, softmax(logits), atol=1e-4):
            raise DataError(
                f"{source}: 'probs' and 'logits' are both given but 'probs' is not softmax('logits'); "
                "keep only the one your model produced."
            )
    probs = np.asarray(probs, dtype=np.float64)
    if ids is None:
        ids = np.arange(labels.shape[0]).astype(str)
    ids = np.asarray(ids).astype(str)
    if groups is not None:
        groups = np.asarray(groups).astype(str)
    if features is not None:
        features = np.asarray(features, dtype=np.float32)
    return Outputs(
        ids=ids, labels=labels, probs=probs, logits=logits, features=features, groups=groups, source=source
    )


def _validate(o: Outputs, source: str) -> None:
    n = o.labels.shape[0]
    if n == 0:
        raise DataError(f"{source}: no examples.")
    if o.probs.ndim != 2 or o.probs.shape[0] != n:
        raise DataError(f"{source}: 'probs' must be N x C with N = {n} rows, got shape {o.probs.shape}.")
    if o.probs.shape[1] < 2:
        raise DataError(f"{source}: need at least 2 classes, 'probs' has {o.probs.shape[1]} column(s).")
    if not np.all(np.isfinite(o.probs)):
        raise DataError(f"{source}: 'probs' contains NaN or infinite values.")
    if np.any(o.probs < -1e-6) or not np.allclose(o.probs.sum(axis=1), 1.0, atol=1e-3):
        raise DataError(
            f"{source}: each row of 'probs' must be a distribution (non-negative, summing to 1). "
            "If these are scores, pass them as 'logits' instead."
        )
    bad = (o.labels < 0) | (o.labels >= o.probs.shape[1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: label {int(o.labels[i])} at row {i} is out of range for {o.probs.shape[1]} classes "
            f"(expected 0..{o.probs.shape[1] - 1}); {int(bad.sum())} row(s) affected."
        )
    for name, arr in (("id", o.ids), ("group", o.groups)):
        if arr is not None and arr.ndim != 1:
            raise DataError(f"{source}: '{name}' must be one value per example, got shape {arr.shape}.")
    for name, arr in (("id", o.ids), ("group", o.groups), ("features", o.features), ("logits", o.logits)):
        if arr is not None and arr.shape[0] != n:
            raise DataError(f"{source}: '{name}' has {arr.shape[0]} rows but 'label' has {n}.")
    if len(np.unique(o.ids)) != n:
        raise DataError(f"{source}: 'id' values must be unique.")


def load_predictions(path: str | Path) -> Outputs:
    """Read a predictions file (``.npz`` or ``.parquet``) into validated :class:`Outputs`.

    Columns: ``label`` (int), ``probs`` or ``logits`` (N x C; in parquet, a list column), optional
    ``id`` and ``group``; an ``.npz`` may also carry ``features``. A ``.jsonl`` file is read as the
    per-sample log of an lm-evaluation-harness multiple-choice task, ``FILE.jsonl#FILTER`` its lines of
    one filter (:mod:`assay.llm.lmeval`).
    """
    from assay.llm import lmeval  # lm-eval's logs are a predictions format; their reader needs no torch

    if lmeval.names_samples(path):
        return lmeval.read_samples(path)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Predictions file not found: {path}.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                cols = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise DataError(f"{path}: not a readable .npz file ({e}).") from None
    elif suffix in (".parquet", ".pq"):
        cols = _read_parquet(path)
    else:
        raise DataError(f"{path}: unsupported predictions format '{suffix}'; use .npz or .parquet.")
    if "label" not in cols:
        raise DataError(f"{path}: no 'label' column; found {sorted(cols)}.")
    return from_arrays(
        cols["label"],
        probs=cols.get("probs"),
        logits=cols.get("logits"),
        ids=cols.get("id"),
        features=cols.get("features"),
        groups=cols.get("group"),
        source=str(path),
    )


def write_predictions(outputs: Outputs, path: str | Path) -> Path:
    """Write ``outputs`` as a predictions file that :func:`load_predictions` reads back unchanged.

    ``.npz`` keeps every column (``id``, ``label``, ``probs``, and ``logits``, ``features``, ``group`` where
    present); ``.parquet`` keeps ``id``, ``label``, ``probs`` (a list column), ``logits`` and ``group``.
    Either is written to a temporary file and renamed, so a crash leaves no half-written file.

    Example:
        >>> import tempfile
        >>> probs = np.array([[0.9, 0.1], [0.3, 0.7]])
        >>> o = from_arrays(np.array([0, 1]), probs=probs, ids=np.array(["a", "b"]))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     back = load_predictions(write_predictions(o, Path(tmp) / "p.parquet"))
        >>> back.ids.tolist(), bool(np.array_equal(back.probs, o.probs))
        (['a', 'b'], True)
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return outputs.save(path)
    if suffix not in WRITTEN_SUFFIXES:
        raise DataError(f"{path}: predictions are written as .npz or .parquet, not '{suffix}'.")
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, list[Any]] = {
        "id": outputs.ids.tolist(),
        "label": outputs.labels.tolist(),
        "probs": outputs.probs.tolist(),
    }
    if outputs.logits is not None:
        columns["logits"] = outputs.logits.tolist()
    if outputs.groups is not None:
        columns["group"] = outputs.groups.tolist()
    with replacing(path) as tmp:
        pq.write_table(pa.table(columns), str(tmp))
    return path


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(f"{path}: not a readable parquet file ({e}).") from None
    cols: dict[str, np.ndarray] = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        if name in ("probs", "logits", "features"):
            try:
                cols[name] = np.asarray(values, dtype=np.float64)
            except ValueError:
                raise DataError(f"{path}: '{name}' rows must all have the same length.") from None
        else:
            cols[name] = np.asarray(values)
    return cols

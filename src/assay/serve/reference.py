"""The reference a release is monitored against: statistics of its gating set, stored with the version.

A :class:`Reference` holds, per example of the gating set (subsampled to ``max_rows``):

    inputs      a few input summaries: a table's columns, or per-image statistics (:func:`input_summaries`)
    probs       predicted probabilities (softmax of the logits); None for a model without class outputs
                (a language model's prompts: their statistics are the inputs, n_classes is 0)
    ood         OOD score, the negative of assay's energy score (``−logsumexp(logits)``): higher = more OOD;
                None with probs
    embeddings  penultimate-layer features, when the model exposes them
    labels      the true labels, when known (the gating set always has them)

plus, for shadow mode, the parent/candidate agreement measured on the gating set. It is saved as one
``.npz`` file whose ``meta`` entry is JSON (no pickles), written to a temporary file and renamed, so a
reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from assay.errors import DataError, UsageError
from assay.metrics.ood import energy_score
from assay.outputs import softmax

FORMAT = "assay.reference/1"
IMAGE_STATISTICS = ("mean", "std", "min", "max", "gradient", "laplacian", "frac_at_min", "frac_at_max")
# A text's own summaries: its length in characters and in whitespace-separated words. Its meaning is
# watched through the model's embeddings (the features), its confidence and its predicted classes.
TEXT_STATISTICS = ("length_chars", "length_words")

Kind = Literal["image", "table", "text"]


@dataclass(frozen=True, eq=False)
class Reference:
    """Per-example statistics of a release's gating set (see the module docstring)."""

    kind: Kind
    n_classes: int
    feature_names: tuple[str, ...]
    inputs: np.ndarray
    probs: np.ndarray | None
    ood: np.ndarray | None
    embeddings: np.ndarray | None
    labels: np.ndarray | None
    agreement: float | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def n(self) -> int:
        """Number of reference rows."""
        return int(self.inputs.shape[0])

    def digest(self) -> str:
        """sha256 over the metadata and every array: ties a calibration to the reference it was fitted on."""
        h = hashlib.sha256(json.dumps(self._meta(), sort_keys=True).encode())
        for name, array in self._arrays().items():
            h.update(name.encode())
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()

    def save(self, path: Path | str) -> Path:
        """Write one ``.npz`` (arrays + JSON metadata) atomically: a temporary file, then ``os.replace``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = np.frombuffer(json.dumps(self._meta()).encode(), dtype=np.uint8)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, meta=meta, **self._arrays())  # type: ignore[arg-type]
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: Path | str) -> Reference:
        """Read a file written by :meth:`save`; anything else is a :class:`DataError` saying why."""
        path = Path(path)
        hint = "Rebuild it with build_reference(...).save(path) from the release's gating outputs."
        if not path.is_file():
            raise DataError(f"No reference file at '{path}'. {hint}")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "meta" not in z.files:
                    raise DataError(
                        f"'{path}' is an .npz file but not an assay reference (no 'meta'). {hint}"
                    )
                meta = json.loads(bytes(z["meta"]).decode())
                arrays = {name: z[name] for name in z.files if name != "meta"}
        except DataError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, UnicodeDecodeError) as exc:
            raise DataError(f"'{path}' is not a readable assay reference file ({exc}). {hint}") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise DataError(f"'{path}' has format {got!r}; expected {FORMAT!r}. {hint}")
        try:
            return cls(
                kind=meta["kind"],
                n_classes=int(meta["n_classes"]),
                feature_names=tuple(str(n) for n in meta["feature_names"]),
                inputs=arrays["inputs"],
                probs=arrays.get("probs"),
                ood=arrays.get("ood"),
                embeddings=arrays.get("embeddings"),
                labels=arrays.get("labels"),
                agreement=None if meta.get("agreement") is None else float(meta["agreement"]),
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"'{path}' is an incomplete assay reference (missing {exc}). {hint}") from exc
        except (DataError, UsageError) as exc:
            raise DataError(f"'{path}' is an inconsistent assay reference: {exc}") from exc

    def _meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "n_classes": self.n_classes,
            "feature_names": list(self.feature_names),
            "agreement": self.agreement,
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "inputs": self.inputs, "probs": self.probs, "ood": self.ood,
            "embeddings": self.embeddings, "labels": self.labels,
        }  # fmt: skip
        return {name: a for name, a in arrays.items() if a is not None}


def _validate(ref: Reference) -> None:
    if ref.kind not in ("image", "table", "text"):
        raise DataError(f"A reference's kind must be 'image', 'table' or 'text'. Got {ref.kind!r}.")
    n = ref.inputs.shape[0] if ref.inputs.ndim == 2 else -1
    if n < 1:
        raise DataError(f"Reference inputs must be a non-empty (n, k) array; got shape {ref.inputs.shape}.")
    if ref.inputs.shape[1] != len(ref.feature_names):
        raise DataError(
            f"Reference inputs have {ref.inputs.shape[1]} columns but {len(ref.feature_names)} feature names."
        )
    if ref.probs is None:
        if ref.ood is not None or ref.n_classes != 0:
            raise DataError("A reference without class outputs has no OOD scores and n_classes 0.")
    elif ref.probs.shape != (n, ref.n_classes) or ref.n_classes < 2:
        raise DataError(f"Reference probs must have shape ({n}, n_classes >= 2); got {ref.probs.shape}.")
    elif ref.ood is None or ref.ood.shape != (n,):
        got = None if ref.ood is None else ref.ood.shape
        raise DataError(f"Reference OOD scores must have shape ({n},); got {got}.")
    if ref.embeddings is not None and (ref.embeddings.ndim != 2 or ref.embeddings.shape[0] != n):
        raise DataError(f"Reference embeddings must have shape ({n}, d); got {ref.embeddings.shape}.")
    if ref.labels is not None and ref.labels.shape != (n,):
        raise DataError(f"Reference labels must have shape ({n},); got {ref.labels.shape}.")
    if ref.agreement is not None and not 0.0 <= ref.agreement <= 1.0:
        raise DataError(f"Reference agreement must lie in [0, 1]. Got {ref.agreement}.")
    for name, array in ref._arrays().items():
        if name != "labels" and not np.all(np.isfinite(array)):
            raise DataError(
                f"Reference {name} contain NaN or infinite values; the gating outputs are corrupt."
            )


# --- input summaries ---------------------------------------------------------------------------------


# Beyond this, float32 squares summed over a million pixels (the std) can overflow: such batches are
# summarised in float64, whose range holds the square of any float32.
FLOAT32_SAFE = 1e15


def image_statistics(images: np.ndarray) -> np.ndarray:
    """Per-image statistics (n, 8) of images (N, C, H, W), in the order of ``IMAGE_STATISTICS``.

    Chosen to move under the shifts met in practice: ``mean`` (brightness), ``std`` (contrast),
    ``min``/``max`` (range, clipping), ``gradient`` (mean absolute difference of horizontal and vertical
    neighbours: blur lowers it, noise raises it), ``laplacian`` (mean absolute 5-point Laplacian over the
    interior: a high-frequency/noise measure), and the fractions of pixels at the image's minimum and
    maximum (saturation, dead regions). Computed in float32: they only need to be comparable, not exact;
    in float64 for a batch with a value beyond ``FLOAT32_SAFE`` (a client may send any finite number).
    """
    x = np.asarray(images, dtype=np.float32)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    lo = flat.min(axis=1)
    hi = flat.max(axis=1)
    if n and max(-float(lo.min()), float(hi.max())) > FLOAT32_SAFE:
        x = x.astype(np.float64)
        flat = x.reshape(n, -1)
    tol = 1e-6 * np.maximum(1.0, np.abs(hi - lo))
    out = np.empty((n, len(IMAGE_STATISTICS)), dtype=np.float64)
    out[:, 0] = flat.mean(axis=1)
    out[:, 1] = flat.std(axis=1)
    out[:, 2] = lo
    out[:, 3] = hi
    h, w = x.shape[2], x.shape[3]
    # In place where numpy allows: the server computes these for every image it answers.
    grad = np.zeros(n, dtype=x.dtype)
    if w > 1:
        grad += _mean_abs(np.diff(x, axis=3))
    if h > 1:
        grad += _mean_abs(np.diff(x, axis=2))
    out[:, 4] = grad
    if h > 2 and w > 2:
        lap = 4 * x[:, :, 1:-1, 1:-1]
        for neighbour in (x[:, :, :-2, 1:-1], x[:, :, 2:, 1:-1], x[:, :, 1:-1, :-2], x[:, :, 1:-1, 2:]):
            lap -= neighbour
        out[:, 5] = _mean_abs(lap)
    else:
        out[:, 5] = 0.0
    size = flat.shape[1]
    out[:, 6] = np.count_nonzero(flat <= (lo + tol)[:, None], axis=1) / size
    out[:, 7] = np.count_nonzero(flat >= (hi - tol)[:, None], axis=1) / size
    return out


def _mean_abs(a: np.ndarray) -> np.ndarray:
    """Per-row mean absolute value of a fresh (N, ...) array, overwriting it."""
    return np.abs(a, out=a).mean(axis=tuple(range(1, a.ndim)))


def summary_names(shape: tuple[int, ...], column_names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The names of :func:`input_summaries` for inputs of ``shape``, without computing them."""
    if len(shape) == 1:  # texts: one string an example
        return TEXT_STATISTICS
    if len(shape) == 2:
        k = shape[1]
        names = tuple(column_names) if column_names is not None else tuple(f"x{i}" for i in range(k))
        if len(names) != k:
            raise UsageError(f"Got {len(names)} column names for a table with {k} columns.")
        return names
    if len(shape) not in (3, 4):
        raise UsageError(f"Inputs must be a table (N, k) or images (N, H, W) / (N, C, H, W); got {shape}.")
    channels = shape[1] if len(shape) == 4 else 1
    return IMAGE_STATISTICS + (tuple(f"mean_c{i}" for i in range(channels)) if 2 <= channels <= 4 else ())


def input_summaries(
    x: np.ndarray, column_names: Sequence[str] | None = None
) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and (N, k) float64 summaries of a batch of inputs.

    Images (N, C, H, W) or (N, H, W): :func:`image_statistics`, plus the mean of each channel when there
    are 2 to 4 channels (colour casts). Tables (N, k): the columns themselves, named ``column_names`` or
    ``x0 .. x{k-1}``. Texts (N,): :data:`TEXT_STATISTICS`.
    """
    a = np.asarray(x)
    names = summary_names(a.shape, column_names)
    if a.ndim == 1:
        if a.dtype.kind not in "OUT":
            raise UsageError(
                f"One-dimensional inputs must be texts (str); got {a.dtype} numbers: send a table."
            )
        return names, np.array([[len(t), len(t.split())] for t in a.tolist()], dtype=np.float64)
    if a.ndim == 2:
        return names, np.asarray(a, dtype=np.float64)
    if a.ndim == 3:
        a = a[:, None]
    stats = image_statistics(a)
    if len(names) > len(IMAGE_STATISTICS):
        per_channel = a.reshape(a.shape[0], a.shape[1], -1).mean(axis=2, dtype=np.float64)
        return names, np.concatenate([stats, per_channel], axis=1)
    return names, stats


def ood_scores(logits: np.ndarray) -> np.ndarray:
    """OOD score per example, higher = more OOD: the negative of assay's energy score (Liu et al. 2020)."""
    return np.asarray(-energy_score(logits))


def build_reference(
    x: np.ndarray,
    logits: np.ndarray,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    max_rows: int = 10000,
    seed: int = 0,
    agreement: float | None = None,
    column_names: Sequence[str] | None = None,
) -> Reference:
    """The reference of a gating set: inputs ``x``, the model's ``logits`` (N, C), optional penultimate
    ``features`` (N, d) and ``labels`` (N,). More than ``max_rows`` examples are subsampled (seeded,
    without replacement, order kept) so the file and the monitor's per-window work stay bounded."""
    z = np.asarray(logits, dtype=np.float64)
    n = z.shape[0] if z.ndim == 2 else -1
    if n < 1 or z.shape[1] < 2:
        raise UsageError(f"logits must be (N, C) with N >= 1 and C >= 2; got shape {np.shape(logits)}.")
    if np.shape(x)[0] != n:
        raise UsageError(f"x has {np.shape(x)[0]} rows but logits have {n}.")
    for name, extra in (("features", features), ("labels", labels)):
        if extra is not None and np.shape(extra)[0] != n:
            raise UsageError(f"{name} has {np.shape(extra)[0]} rows but logits have {n}.")
    if max_rows < 1:
        raise UsageError(f"'max_rows' must be >= 1. Got {max_rows}.")
    keep = np.arange(n)
    if n > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
    names, inputs = input_summaries(np.asarray(x)[keep], column_names)
    kind: Kind = {1: "text", 2: "table"}.get(np.ndim(x), "image")  # type: ignore[assignment]
    emb = None if features is None else np.asarray(features, dtype=np.float64)[keep].reshape(len(keep), -1)
    return Reference(
        kind=kind,
        n_classes=int(z.shape[1]),
        feature_names=names,
        inputs=inputs,
        probs=softmax(z[keep]),
        ood=ood_scores(z[keep]),
        embeddings=emb,
        labels=None if labels is None else np.asarray(labels, dtype=np.int64)[keep],
        agreement=agreement,
    )

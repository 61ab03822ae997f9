"""The in-memory dataset every loader returns: three splits with ids, a class list, provenance."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from assay.data.text import check_texts
from assay.errors import DataError


@dataclass(frozen=True)
class Split:
    """One split. Images are (N, C, H, W) float32 in [0, 1]; tables are (N, F) float32, standardised;
    texts are (N,) object arrays of ``str``, one document an example, as the source holds them."""

    x: np.ndarray
    y: np.ndarray  # (N,) int64
    ids: np.ndarray  # (N,) str, unique within the dataset
    groups: np.ndarray | None = None  # (N,) str
    # Where each example was read: its row (0-based) in what ``rows_of`` names ("x_test of digits.npz",
    # "rows of people.csv (0-based, header not counted)"), so a user can pair their own copy with a split.
    rows: np.ndarray | None = None  # (N,) int64
    rows_of: str = ""

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    def fingerprint(self) -> str:
        """sha256 over canonical bytes: shape, little-endian float32 inputs, int64 labels, ids, groups.

        Canonical dtypes and byte order make the fingerprint independent of how the file stored them.
        Groups are part of it: the cached outputs of a split carry its groups, so new group columns must
        not hit an old cache entry. Texts enter as their UTF-8 bytes, each after its length as 8 bytes
        (little-endian) and the whole behind a ``text`` tag: no text can contain a separator, so no two
        lists of texts hash alike ("ab", "c" and "a", "bc" differ).
        """
        h = hashlib.sha256()
        h.update(repr(tuple(self.x.shape)).encode())
        if self.x.dtype == object:
            encoded = [t.encode("utf-8") for t in self.x]
            h.update(b"\x1etext\x1e" + b"".join(len(b).to_bytes(8, "little") + b for b in encoded))
        else:
            h.update(np.ascontiguousarray(self.x, dtype="<f4").tobytes())
        h.update(np.ascontiguousarray(self.y, dtype="<i8").tobytes())
        h.update("\x1f".join(self.ids.tolist()).encode())
        if self.groups is not None:
            h.update(b"\x1egroups\x1e" + "\x1f".join(self.groups.tolist()).encode())
        return h.hexdigest()

    def subset(self, index: np.ndarray) -> Split:
        return Split(
            x=self.x[index],
            y=self.y[index],
            ids=self.ids[index],
            groups=None if self.groups is None else self.groups[index],
            rows=None if self.rows is None else self.rows[index],
            rows_of=self.rows_of,
        )


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: Literal["image", "table", "text"]
    train: Split
    val: Split
    test: Split
    class_names: list[str]
    source: str
    licence: str = "unknown"
    input_range: tuple[float, float] | None = (0.0, 1.0)  # None for tables and texts
    feature_names: list[str] = field(default_factory=list)
    # Tables: the (mean, sd) per feature the loader standardised every split with (the training rows'
    # statistics). A model's input contract keeps them, so other data can be put through the same step.
    standardisation: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False)
    # Inputs of classes the source holds but did not make labels of (fortunes: the category files too
    # small to be classes): held-out classes, which the trust suite uses as a near-OOD set.
    held_out: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        n_classes = len(self.class_names)
        for split_name, split in self.splits().items():
            if split.n == 0:
                raise DataError(f"{self.source}: the {split_name} split is empty.")
            if split.x.shape[0] != split.n or split.ids.shape[0] != split.n:
                raise DataError(
                    f"{self.source}: the {split_name} split has {split.x.shape[0]} inputs, "
                    f"{split.n} labels and {split.ids.shape[0]} ids; they must match."
                )
            if self.kind == "text":
                self._check_texts(split_name, split)
            elif not np.all(np.isfinite(split.x)):
                raise DataError(f"{self.source}: the {split_name} split contains NaN or infinite inputs.")
            bad = (split.y < 0) | (split.y >= n_classes)
            if bad.any():
                raise DataError(
                    f"{self.source}: the {split_name} split has label {int(split.y[bad][0])}, outside "
                    f"0..{n_classes - 1} for {n_classes} classes ({int(bad.sum())} row(s))."
                )

    def _check_texts(self, split_name: str, split: Split) -> None:
        """Every example a non-blank ``str`` (the loaders check the files; this guards other builders)."""
        if split.x.ndim != 1:
            raise DataError(
                f"{self.source}: the {split_name} split's texts must be a vector of strings, one an "
                f"example; got shape {split.x.shape}."
            )
        check_texts(
            split.x,
            self.source,
            lambda at: f"the {split_name} split's example {split.ids[at]}",
            "every text example must be a non-empty string.",
        )

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: (C, H, W) images, (F,) tables, () texts (one string each)."""
        return tuple(self.train.x.shape[1:])

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def split(self, name: str) -> Split:
        try:
            return self.splits()[name]
        except KeyError:
            raise DataError(f"Unknown split '{name}'; use train, val or test.") from None

    def fingerprints(self) -> dict[str, str]:
        return {name: split.fingerprint() for name, split in self.splits().items()}

    def fingerprint(self) -> str:
        """One digest for the whole dataset: over the split fingerprints in a fixed order."""
        return hashlib.sha256("".join(self.fingerprints().values()).encode()).hexdigest()

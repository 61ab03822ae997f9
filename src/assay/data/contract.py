"""A model's input contract: how the inputs it was trained on were made, so that data made another way is
refused before it reaches the model.

A model learns one particular input pipeline: images scaled to [0, 1], or table rows standardised with the
mean and sd of its own training rows. Fed the same examples made another way (raw 0-16 pixel counts
instead of standardised features, a table standardised with other statistics) it still answers, only
worse, and a gate run on such data passes or fails for the wrong reason. Every version therefore records
its :class:`InputContract` when it is trained, and every evaluation puts its data through the version's
own contract first (:meth:`InputContract.fit`):

- the *kind* (image, table or text), the per-example *shape*, the *features* (names and order, for
  tables) and the *classes* must agree, or nothing can be mapped;
- table rows are re-standardised with the contract's own statistics (a model never sees data scaled
  with statistics other than its training rows'); images are in [0, 1] whatever their stored dtype;
- the *scale* of the inputs after that step (pooled mean and sd) must be near the training inputs': a
  ratio of sds beyond 2, or means apart by more than half an sd, is the footprint of another scaling
  (0-16 counts where 0-255 were expected gives 1/16), not of a shift in the population, which the drift
  monitor measures far more finely.

Texts have no transform and no scale here: a text model's inputs are made by its own tokenizer, which the
adapter names in the contract (``tokenizer``, with a digest of its files) with the truncation length
(``max_length``), so a reader sees what every text went through.

Where anything differs the caller refuses, unless the user forces it, which the run's document records.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from assay.data.dataset import Dataset, Split

# Pooled statistics are computed on at most this many rows (every k-th): enough for a mean and sd to
# about 1%, far inside the factor of 2 the scale check allows, without a float64 copy of 60,000 images.
_SCALE_ROWS = 4096
SD_RATIO_LIMIT = 2.0  # sd(data) / sd(training inputs) outside [1/2, 2]: scaled another way
MEAN_SHIFT_LIMIT = 0.5  # |mean(data) - mean(training inputs)| above half the training sd


def _scale(x: np.ndarray) -> tuple[float, float]:
    """Pooled mean and sd of every value in ``x``, on a deterministic sample of rows."""
    sample = np.asarray(x[:: max(1, len(x) // _SCALE_ROWS)], dtype=np.float64)
    return float(sample.mean()), float(sample.std())


def _dtype(data: Dataset) -> str:
    """The dtype of one example's values: "str" for texts (held in numpy object arrays)."""
    return "str" if data.kind == "text" else str(data.train.x.dtype)


def _is_index_names(names: tuple[str, ...], prefix: str = "") -> bool:
    """Class names "0".."C-1", or the feature names "x0".."xF-1" an .npz table gets, say nothing about
    what a class or a column is, so they agree with any names."""
    return names == tuple(f"{prefix}{i}" for i in range(len(names)))


@dataclass(frozen=True)
class InputContract:
    """How a version's inputs are made: source, transform, shape, dtype, features, classes and scale.

    Example:
        >>> from assay.data import load_dataset, parse_data_arg
        >>> digits = load_dataset(parse_data_arg("sklearn:digits"))
        >>> contract = InputContract.of(digits, "sklearn:digits")
        >>> contract.describe()[:50]
        'table of 64 features standardised with its trainin'
        >>> contract.fit(digits).differences
        ()
    """

    source: str  # the data source it was made from, as written on the command line
    dataset: str  # that dataset's name and fingerprint: provenance, shown, not a condition of fitting
    fingerprint: str
    kind: str  # "image", "table" or "text"
    shape: tuple[int, ...]  # one example, after the transform; () for a text
    dtype: str  # "str" for texts
    transform: str  # "unit_range" (images), "standardise" (tables) or "none" (texts, as they are)
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()  # standardise: the training rows' per-feature mean and sd
    sd: tuple[float, ...] = ()
    # Pooled mean and sd of the training inputs after the transform; None for texts, which have none.
    scale: tuple[float, float] | None = (0.0, 1.0)
    tokenizer: str | None = None  # texts: the model's tokenizer, by name and a digest of its files
    max_length: int | None = None  # texts: the length in tokens the tokenizer truncates to

    @classmethod
    def of(cls, data: Dataset, source: str) -> InputContract:
        """The contract of a model trained on ``data`` (read from ``source``)."""
        """The contract of a model trained on ``data`` (read from ``source``); a text model's adapter adds
        its ``tokenizer`` and ``max_length`` (``dataclasses.replace``)."""
        mean, sd = data.standardisation if data.standardisation is not None else ((), ())
        text = data.kind == "text"
        return cls(
            source=source,
            dataset=data.name,
            fingerprint=data.fingerprint(),
            kind=data.kind,
            shape=tuple(int(d) for d in data.input_shape),
            dtype=_dtype(data),
            transform="none" if text else "standardise" if data.standardisation is not None else "unit_range",
            class_names=tuple(data.class_names),
            feature_names=tuple(data.feature_names),
            mean=tuple(float(v) for v in mean),
            sd=tuple(float(v) for v in sd),
            scale=None if text else _scale(data.train.x),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "kind": self.kind,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "transform": self.transform,
            "class_names": list(self.class_names),
            "feature_names": list(self.feature_names),
            "mean": list(self.mean),
            "sd": list(self.sd),
            "scale": None if self.scale is None else list(self.scale),
            "tokenizer": self.tokenizer,
            "max_length": self.max_length,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputContract:
        """The contract :meth:`to_dict` wrote; one written before ``tokenizer`` and ``max_length`` existed
        loads with neither."""
        scale = d["scale"]
        return cls(
            **{
                **d,
                **{k: tuple(d[k]) for k in ("shape", "class_names", "feature_names", "mean", "sd")},
                "scale": None if scale is None else (float(scale[0]), float(scale[1])),
                "max_length": None if d.get("max_length") is None else int(d["max_length"]),
            }
        )

    @cached_property
    def _statistics(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.mean), np.asarray(self.sd)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Examples as a client holds them (float32: table rows as the source had them, images in [0, 1])
        -> the model's inputs: table rows standardised with this contract's statistics, images as they are.

        What ``assay serve`` does to every batch, so a client sends the rows of its own table.
        """
        if self.transform != "standardise":
            return x
        mean, sd = self._statistics
        with np.errstate(over="ignore"):  # a value beyond float32 after scaling becomes inf: refused
            return ((x - mean) / sd).astype(np.float32)

    def describe(self) -> str:
        """One line a reader can check the data against."""
        if self.kind == "table":
            what = f"table of {self.shape[0]} features standardised with its training rows' mean and sd"
        elif self.kind == "text":
            what = "texts"
        else:
            what = f"{'x'.join(map(str, self.shape))} images in [0, 1]"
        if self.tokenizer is not None:
            what += f" tokenized by {self.tokenizer}"
        if self.max_length is not None:
            what += f", truncated to {self.max_length} tokens"
        return f"{what}, {len(self.class_names)} classes, from {self.source}"

    def fit(self, data: Dataset) -> Fitted:
        """``data`` as this contract makes inputs, with every way it does not fit, in words."""
        differences = self._structure(data)
        if not differences:
            data = self._transformed(data)
            differences = self._scale_differences(data)
        return Fitted(data=data, contract=self, differences=tuple(differences))

    def _structure(self, data: Dataset) -> list[str]:
        if data.kind != self.kind:  # nothing else can be compared: shape and dtype differ with it
            return [f"kind: the model takes {self.kind} inputs, the data gives {data.kind} inputs"]
        found: list[str] = []
        if _dtype(data) != self.dtype:
            found.append(f"dtype: the model takes {self.dtype}, the data gives {_dtype(data)}")
        if tuple(data.input_shape) != self.shape:
            found.append(f"shape: the model takes {self.shape}, the data gives {data.input_shape} an example")
        names, want = tuple(data.feature_names), self.feature_names
        generic = _is_index_names(names, "x") or _is_index_names(want, "x")
        if want and names and names != want and len(names) == len(want) and not generic:  # lengths: shape
            found.append(f"features: the model takes {_first_mismatch(self.feature_names, names)}")
        classes = tuple(data.class_names)
        if len(classes) != len(self.class_names):
            found.append(
                f"classes: the model predicts {len(self.class_names)} classes, the data has {len(classes)}"
            )
        elif classes != self.class_names and not any(map(_is_index_names, (classes, self.class_names))):
            found.append(f"classes: the model's are {_first_mismatch(self.class_names, classes)}")
        return found

    def _transformed(self, data: Dataset) -> Dataset:
        """Tables re-standardised with this contract's statistics, when the data's own differ."""
        if self.transform != "standardise" or data.standardisation is None:
            return data
        own_mean, own_sd = data.standardisation
        mean, sd = self._statistics
        if np.array_equal(own_mean, mean) and np.array_equal(own_sd, sd):
            return data

        def restandardise(split: Split) -> Split:
            raw = split.x.astype(np.float64) * own_sd + own_mean
            return replace(split, x=((raw - mean) / sd).astype(np.float32))

        return replace(
            data,
            train=restandardise(data.train),
            val=restandardise(data.val),
            test=restandardise(data.test),
            standardisation=(mean, sd),
        )

    def _scale_differences(self, data: Dataset) -> list[str]:
        if self.scale is None:  # texts: a tokenizer makes the inputs, there is no scale to compare
            return []
        mean, sd = _scale(data.test.x)
        want_mean, want_sd = self.scale
        ratio = sd / want_sd if want_sd > 0 else float("inf") if sd > 0 else 1.0
        shifted = abs(mean - want_mean) > MEAN_SHIFT_LIMIT * want_sd
        if 1 / SD_RATIO_LIMIT <= ratio <= SD_RATIO_LIMIT and not shifted:
            return []
        return [
            f"scale: after the model's transform its training inputs had mean {want_mean:.3g} and sd "
            f"{want_sd:.3g}, these have mean {mean:.3g} and sd {sd:.3g} (sd ratio {ratio:.3g}): the data "
            "is scaled another way"
        ]


def _first_mismatch(want: tuple[str, ...], got: tuple[str, ...]) -> str:
    at = next(i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b)
    return f"'{want[at]}' at position {at}, the data has '{got[at]}' there"


@dataclass(frozen=True)
class Fitted:
    """Data as a version's contract makes inputs, and what did not fit (empty when everything did)."""

    data: Dataset
    contract: InputContract
    differences: tuple[str, ...]

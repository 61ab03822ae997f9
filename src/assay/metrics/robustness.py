"""Corruption robustness: accuracy under common corruptions at 5 severities, and against a baseline.

Image corruptions (N, C, H, W) in [0, 1], after Hendrycks & Dietterich (2019) with the severities
rescaled for 28x28 grayscale (their ImageNet values blur and pixelate a 28-pixel image away entirely):

    gaussian_noise   x + N(0, σ²), σ ∈ (0.08, 0.12, 0.18, 0.26, 0.38)
    shot_noise       Poisson(λx)/λ, λ ∈ (60, 25, 12, 5, 3)
    impulse_noise    salt and pepper on a share (0.03, 0.06, 0.09, 0.17, 0.27) of the pixels
    gaussian_blur    Gaussian filter, σ ∈ (0.5, 0.75, 1.0, 1.25, 1.5) pixels (SciPy, mode "reflect")
    contrast         (x − mean)·c + mean per image, c ∈ (0.4, 0.3, 0.2, 0.1, 0.05)
    brightness       x + b, b ∈ (0.1, 0.2, 0.3, 0.4, 0.5)
    pixelate         box-downsample to ⌈s·H⌉ pixels, s ∈ (0.6, 0.5, 0.4, 0.3, 0.25), nearest upsample
    jpeg             JPEG round trip (Pillow) at quality (25, 18, 15, 10, 7)
    rotate           ±(3, 6, 9, 12, 15) degrees, sign drawn per image, bilinear, zero fill
    translate        (1, 2, 3, 4, 5) pixels in a direction drawn per image, zero fill

Table shifts (N, F) on standardised features: ``gaussian_noise`` (σ ∈ (0.1, 0.2, 0.4, 0.6, 1.0) standard
deviations), ``missing`` (a share (0.05, 0.1, 0.2, 0.3, 0.5) of the cells set to the training mean, 0, as
a mean imputer would) and ``scaling`` (every feature times (1.1, 1.25, 1.5, 2, 3): a unit change).
Every result is clipped to the input range (images) and is a new array; the input is never changed.

Metrics (per corruption and overall; E = error = 1 − accuracy):

    corruption_accuracy[c@s]  accuracy at corruption c, severity s (Wilson interval)
    corruption_mca[c], corruption_mca
                              mean corruption accuracy over the severities (and corruptions)
    corruption_ce[c], corruption_mce
                              corruption error relative to a baseline model: Σ_s E_f(c,s) / Σ_s E_b(c,s)
    corruption_relative_ce[c], corruption_relative_mce
                              degradation relative to the baseline's (Hendrycks & Dietterich's rCE):
                              Σ_s (E_f(c,s) − E_f(clean)) / Σ_s (E_b(c,s) − E_b(clean))

(All prefixed ``corruption_``: the calibration family already has an ``mce``, maximum calibration error.)

Intervals are seeded percentile bootstraps over the examples; with a baseline they are paired (the same
resampled examples for both models), as the baseline was scored on the very same corrupted inputs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy import ndimage

from assay import catalogue
from assay.catalogue import SEVERITIES, corruption_accuracy, corruption_mca
from assay.errors import UsageError
from assay.measurement import Measurement
from assay.stats import bootstrap_ci

FAMILY = "robustness"
CorruptFn = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    name: str
    levels: tuple[float, ...]  # the parameter at severities 1..5
    fn: CorruptFn
    parameter: str  # what ``levels`` are, for the report

    @property
    def kind(self) -> str:
        """The kind of data it applies to, "image" or "table" (:data:`assay.catalogue.CORRUPTIONS`)."""
        return catalogue.CORRUPTIONS[self.name]


def _gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, sigma, x.shape).astype(np.float32)


def _shot_noise(x: np.ndarray, lam: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.poisson(np.clip(x, 0, None) * lam) / lam).astype(np.float32)


def _impulse_noise(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    out = x.copy()
    u = rng.random(x.shape)
    out[u < amount / 2] = 0.0
    out[(u >= amount / 2) & (u < amount)] = 1.0
    return out


def _gaussian_blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(
        ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="reflect"), dtype=np.float32
    )


def _contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * c + mean


def _brightness(x: np.ndarray, b: float, rng: np.random.Generator) -> np.ndarray:
    return x + np.float32(b)


def _pixelate(x: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[2:]
    small_h, small_w = max(1, math.ceil(s * h)), max(1, math.ceil(s * w))
    rows = np.minimum((np.arange(h) * small_h) // h, small_h - 1)  # which block each pixel falls in
    cols = np.minimum((np.arange(w) * small_w) // w, small_w - 1)
    row_starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])  # blocks are runs of equal index
    col_starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
    sums = np.add.reduceat(np.add.reduceat(x.astype(np.float64), row_starts, axis=2), col_starts, axis=3)
    counts = np.bincount(rows, minlength=small_h)[:, None] * np.bincount(cols, minlength=small_w)[None, :]
    return (sums / counts)[:, :, rows[:, None], cols[None, :]].astype(np.float32)


def _jpeg_round_trip(pixels: np.ndarray, quality: int, mode: str) -> np.ndarray:
    """One JPEG encode and decode with Pillow of an (H, W) or (H, W, 3) uint8 image, as float32 in [0, 1]."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255.0


_MOSAIC_TILES = 4096  # images per grayscale mosaic: 64 x 64 tiles of 32 x 32 pixels for 28 x 28 inputs


def _jpeg_grayscale(pixels: np.ndarray, quality: int) -> np.ndarray:
    """Grayscale JPEG round trips of (N, H, W) uint8 images, many per encode.

    A grayscale JPEG quantises each 8x8 block on its own (the DC coefficient is coded as a difference
    from the previous block, losslessly) and an encoder fills a partial edge block by repeating the last
    row and column. So the images, edge-padded to whole blocks and laid out as tiles of one mosaic,
    decode to exactly the per-image round trips (a test checks it), at one encode per mosaic instead
    of one per image.
    """
    n, h, w = pixels.shape
    th, tw = -(-h // 8) * 8, -(-w // 8) * 8
    out = np.empty((n, h, w), dtype=np.float32)
    for start in range(0, n, _MOSAIC_TILES):
        chunk = pixels[start : start + _MOSAIC_TILES]
        k = chunk.shape[0]
        cols = math.ceil(math.sqrt(k))
        rows = math.ceil(k / cols)
        tiles = np.zeros((rows * cols, th, tw), dtype=np.uint8)
        tiles[:k] = np.pad(chunk, ((0, 0), (0, th - h), (0, tw - w)), mode="edge")
        mosaic = tiles.reshape(rows, cols, th, tw).transpose(0, 2, 1, 3).reshape(rows * th, cols * tw)
        decoded = _jpeg_round_trip(mosaic, quality, "L")
        back = decoded.reshape(rows, th, cols, tw).transpose(0, 2, 1, 3).reshape(rows * cols, th, tw)
        out[start : start + k] = back[:k, :h, :w]
    return out


def _jpeg(x: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    pixels = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    if x.shape[1] == 1:
        return _jpeg_grayscale(pixels[:, 0], int(quality))[:, None]
    if x.shape[1] != 3:
        raise UsageError(f"JPEG needs 1 or 3 channels; got {x.shape[1]}.")
    # Colour JPEG subsamples chroma over 16x16 blocks and smooths across them when decoding: one image
    # per encode, so that tiles never bleed into each other.
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = _jpeg_round_trip(pixels[i].transpose(1, 2, 0), int(quality), "RGB").transpose(2, 0, 1)
    return out


def _rotate(x: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(x)
    signs = rng.choice([-1.0, 1.0], size=x.shape[0])
    for sign in (-1.0, 1.0):
        chosen = signs == sign
        if chosen.any():
            out[chosen] = ndimage.rotate(
                x[chosen], sign * degrees, axes=(3, 2), reshape=False, order=1, mode="constant", cval=0.0
            )
    return out


_DIRECTIONS = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)])


def _translate(x: np.ndarray, pixels: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros_like(x)
    h, w = x.shape[2:]
    k = int(pixels)
    choice = rng.integers(0, len(_DIRECTIONS), size=x.shape[0])
    for d, (dy, dx) in enumerate(_DIRECTIONS * k):
        chosen = np.flatnonzero(choice == d)
        if chosen.size == 0:
            continue
        src_y, dst_y = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        src_x, dst_x = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[chosen, :, dst_y, dst_x] = x[chosen, :, src_y, src_x]
    return out


def _table_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, sigma, x.shape).astype(np.float32)


def _table_missing(x: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    out = x.copy()
    out[rng.random(x.shape) < share] = 0.0  # the training mean of a standardised feature
    return out


def _table_scaling(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    return x * np.float32(factor)


# In the catalogue's order: a corruption's seed stream is its position (tests/contract checks the order).
CORRUPTIONS: dict[str, Corruption] = {
    c.name: c
    for c in (
        Corruption("gaussian_noise", (0.08, 0.12, 0.18, 0.26, 0.38), _gaussian_noise, "sigma"),
        Corruption("shot_noise", (60, 25, 12, 5, 3), _shot_noise, "photons per unit intensity"),
        Corruption("impulse_noise", (0.03, 0.06, 0.09, 0.17, 0.27), _impulse_noise, "share"),
        Corruption("gaussian_blur", (0.5, 0.75, 1.0, 1.25, 1.5), _gaussian_blur, "sigma (px)"),
        Corruption("contrast", (0.4, 0.3, 0.2, 0.1, 0.05), _contrast, "contrast factor"),
        Corruption("brightness", (0.1, 0.2, 0.3, 0.4, 0.5), _brightness, "added intensity"),
        Corruption("pixelate", (0.6, 0.5, 0.4, 0.3, 0.25), _pixelate, "resolution factor"),
        Corruption("jpeg", (25, 18, 15, 10, 7), _jpeg, "JPEG quality"),
        Corruption("rotate", (3, 6, 9, 12, 15), _rotate, "degrees"),
        Corruption("translate", (1, 2, 3, 4, 5), _translate, "pixels"),
        Corruption("table_gaussian_noise", (0.1, 0.2, 0.4, 0.6, 1.0), _table_noise, "sigma (sd)"),
        Corruption("table_missing", (0.05, 0.1, 0.2, 0.3, 0.5), _table_missing, "share of cells"),
        Corruption("table_scaling", (1.1, 1.25, 1.5, 2.0, 3.0), _table_scaling, "factor"),
    )
}


def names_for(kind: str) -> list[str]:
    """The corruptions that apply to ``kind`` ("image" or "table") data."""
    return [name for name, c in CORRUPTIONS.items() if c.kind == kind]


def corrupt(
    x: np.ndarray,
    name: str,
    severity: int,
    *,
    seed: int = 0,
    input_range: tuple[float, float] | None = (0.0, 1.0),
) -> np.ndarray:
    """A corrupted copy of ``x`` at ``severity`` 1..5, seeded; images are clipped to ``input_range``."""
    if name not in CORRUPTIONS:
        raise UsageError(f"Unknown corruption '{name}'. Known: {', '.join(CORRUPTIONS)}.")
    if severity not in SEVERITIES:
        raise UsageError(f"'severity' must be one of {SEVERITIES}. Got {severity}.")
    c = CORRUPTIONS[name]
    x = np.asarray(x, dtype=np.float32)
    expected = 4 if c.kind == "image" else 2
    if x.ndim != expected:
        raise UsageError(f"'{name}' corrupts {c.kind}s of {expected} dimensions; got shape {x.shape}.")
    # The same draws at every severity (common random numbers): severity 4 is severity 3 made worse, so
    # accuracy curves over severity are smooth and the missing-value masks are nested.
    rng = np.random.default_rng([seed, list(CORRUPTIONS).index(name)])
    out = c.fn(x.copy(), float(c.levels[severity - 1]), rng)
    if c.kind == "image" and input_range is not None:
        out = np.clip(out, *input_range)
    return np.asarray(out, dtype=np.float32)


class Described(Protocol):
    """What a report says of a corruption: its parameter at severities 1..5 and what the parameter is."""

    @property
    def levels(self) -> tuple[float, ...]: ...
    @property
    def parameter(self) -> str: ...


@dataclass(frozen=True)
class CorruptionResult:
    """Per-example correctness of one model: clean, and per corruption a (5, N) array (severity 1..5)."""

    clean: np.ndarray  # (N,) bool
    corrupted: dict[str, np.ndarray]


def evaluate_corruptions(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    names: Sequence[str] | None = None,
    *,
    seed: int = 0,
    input_range: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 2000,
) -> CorruptionResult:
    """Run ``predict`` (inputs -> predicted labels) on the clean and every corrupted copy of ``x``."""
    kind = "image" if np.ndim(x) == 4 else "table"
    wanted = names_for(kind) if names is None else list(names)

    def labels_of(inputs: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [predict(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
        )

    y = np.asarray(y)
    clean = labels_of(np.asarray(x, dtype=np.float32)) == y
    corrupted = {
        name: np.stack(
            [labels_of(corrupt(x, name, s, seed=seed, input_range=input_range)) == y for s in SEVERITIES]
        )
        for name in wanted
    }
    return CorruptionResult(clean=clean, corrupted=corrupted)


def per_example(result: CorruptionResult) -> dict[str, np.ndarray]:
    """The per-example values whose mean is each accuracy measurement of :func:`corruption_measurements`:
    correct or not per (corruption, severity), the share of severities survived per corruption and
    over every corruption."""
    out: dict[str, np.ndarray] = {}
    for name, correct in result.corrupted.items():
        out |= {corruption_accuracy(name, s): row for s, row in zip(SEVERITIES, correct, strict=True)}
        out[corruption_mca(name)] = correct.mean(axis=0)
    out[corruption_mca()] = np.stack(list(result.corrupted.values())).mean(axis=(0, 1))
    return out


def _bootstrap_measurement(
    name: str,
    values: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    higher_is_better: bool,
    estimator: str,
    n_boot: int,
    seed: int,
    details: dict[str, Any],
) -> Measurement:
    result = bootstrap_ci(values, n, n_boot=n_boot, seed=seed, vectorized=True)
    finite = result.samples[np.isfinite(result.samples)]
    if not math.isfinite(result.estimate):
        return Measurement.skipped(name, FAMILY, "undefined: the baseline loses no accuracy under it")
    low, high = np.quantile(finite, [0.025, 0.975]) if finite.size else (math.nan, math.nan)
    return Measurement(
        name=name,
        family=FAMILY,
        value=result.estimate,
        ci_low=float(low),
        ci_high=float(high),
        n=n,
        higher_is_better=higher_is_better,
        estimator=estimator,
        details={"interval": "percentile bootstrap", "n_boot": n_boot, "seed": seed, **details},
    )


def _mean_rows(per_example: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda rows: np.asarray(per_example[rows].mean(axis=1))


def _ratio_rows(num: np.ndarray, den: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def ratio(rows: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(num[rows].sum(axis=1) / den[rows].sum(axis=1))

    return ratio


def _mean_of_ratios(nums: list[np.ndarray], dens: list[np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    parts = [_ratio_rows(a, b) for a, b in zip(nums, dens, strict=True)]
    return lambda rows: np.mean(np.stack([p(rows) for p in parts]), axis=0)


def corruption_measurements(
    result: CorruptionResult,
    baseline: CorruptionResult | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    details: dict[str, Any] | None = None,
    described: Mapping[str, Described] | None = None,
) -> list[Measurement]:
    """Accuracy per (corruption, severity), mCA per corruption and overall; with ``baseline`` (scored on
    the same corrupted inputs) also CE, mCE, relative CE and relative mCE, paired-bootstrapped.
    ``described``: where the corruptions' levels are read (default :data:`CORRUPTIONS`; the text
    perturbations pass theirs)."""
    extra = {"severities": list(SEVERITIES), **(details or {})}
    n = int(result.clean.size)
    values = per_example(result)
    out: list[Measurement] = []
    for name in result.corrupted:
        c = (described or CORRUPTIONS)[name]
        for s in SEVERITIES:
            out.append(
                Measurement.proportion(
                    corruption_accuracy(name, s),
                    FAMILY,
                    int(values[corruption_accuracy(name, s)].sum()),
                    n,
                    higher_is_better=True,
                    estimator=f"accuracy under {name}, severity {s} ({c.parameter} {c.levels[s - 1]:g})",
                    details={"corruption": name, "severity": s},
                )
            )
        out.append(
            _bootstrap_measurement(
                corruption_mca(name),
                _mean_rows(values[corruption_mca(name)]),
                n,
                higher_is_better=True,
                estimator=f"mean accuracy over the 5 severities of {name}",
                n_boot=n_boot,
                seed=seed,
                details={"corruption": name, "levels": list(c.levels), "parameter": c.parameter, **extra},
            )
        )
    out.append(
        _bootstrap_measurement(
            corruption_mca(),
            _mean_rows(values[corruption_mca()]),
            n,
            higher_is_better=True,
            estimator=f"mean accuracy over {len(result.corrupted)} corruptions x 5 severities",
            n_boot=n_boot,
            seed=seed,
            details={"corruptions": list(result.corrupted), **extra},
        )
    )
    if baseline is not None:
        out.extend(_baseline_measurements(result, baseline, n_boot=n_boot, seed=seed, extra=extra))
    else:
        reason = "no baseline model: CE is relative to one (assay trust uses the version's parent)"
        out.extend(
            Measurement.skipped(name, FAMILY, reason)
            for name in ("corruption_mce", "corruption_relative_mce")
        )
    return out


def _baseline_measurements(
    result: CorruptionResult, baseline: CorruptionResult, *, n_boot: int, seed: int, extra: dict[str, Any]
) -> list[Measurement]:
    if baseline.clean.shape != result.clean.shape or set(baseline.corrupted) != set(result.corrupted):
        raise UsageError("The baseline must be scored on the same examples and corruptions as the candidate.")
    names = list(result.corrupted)
    # Per example: summed errors over the severities, and the same minus 5 clean errors (for rCE).
    err = {name: (~result.corrupted[name]).sum(axis=0).astype(np.float64) for name in names}
    err_b = {name: (~baseline.corrupted[name]).sum(axis=0).astype(np.float64) for name in names}
    rel = {name: err[name] - len(SEVERITIES) * (~result.clean) for name in names}
    rel_b = {name: err_b[name] - len(SEVERITIES) * (~baseline.clean) for name in names}
    n = int(result.clean.size)
    pairing = {"baseline": "scored on the same corrupted inputs; paired bootstrap", **extra}

    def lower_is_better(
        name: str, stat: Callable[[np.ndarray], np.ndarray], estimator: str, details: dict[str, Any]
    ) -> Measurement:
        return _bootstrap_measurement(
            name, stat, n, higher_is_better=False, estimator=estimator, n_boot=n_boot, seed=seed,
            details={**details, **pairing},
        )  # fmt: skip

    out = []
    for name in names:
        out.append(
            lower_is_better(
                f"corruption_ce[{name}]",
                _ratio_rows(err[name], err_b[name]),
                f"sum over severities of error, over the baseline's, {name}",
                {"corruption": name},
            )
        )
        out.append(
            lower_is_better(
                f"corruption_relative_ce[{name}]",
                _ratio_rows(rel[name], rel_b[name]),
                f"sum over severities of (error - clean error), over the baseline's, {name}",
                {"corruption": name},
            )
        )
    out.append(
        lower_is_better(
            "corruption_mce",
            _mean_of_ratios([err[k] for k in names], [err_b[k] for k in names]),
            "mean over corruptions of CE (errors relative to the baseline's)",
            {},
        )
    )
    out.append(
        lower_is_better(
            "corruption_relative_mce",
            _mean_of_ratios([rel[k] for k in names], [rel_b[k] for k in names]),
            "mean over corruptions of relative CE (degradation relative to the baseline's)",
            {},
        )
    )
    return out

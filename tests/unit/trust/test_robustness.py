"""Corruption robustness: every corruption is seeded, leaves its input alone, stays in range and grows
with severity; blur, pixelate, translate and JPEG equal independent constructions; mCA, CE and relative
CE equal their definitions computed by hand; a real model loses accuracy as noise grows."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from assay.errors import UsageError
from assay.metrics import robustness as rb
from assay.stats import bootstrap_indices
from tests.conftest import needs_fashion_mnist
from tests.unit.trust.conftest import SmallModel

IMAGES = np.random.default_rng(0).random((6, 1, 28, 28), dtype=np.float32)
TABLE = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)


@pytest.mark.parametrize("name", rb.names_for("image"))
def test_image_corruptions_are_seeded_pure_in_range_and_grow_with_severity(name: str) -> None:
    x = IMAGES.copy()
    outs = [rb.corrupt(x, name, s, seed=3) for s in rb.SEVERITIES]
    np.testing.assert_array_equal(x, IMAGES)  # input untouched
    np.testing.assert_array_equal(outs[2], rb.corrupt(x, name, 3, seed=3))  # seeded
    for out in outs:
        assert out.shape == x.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    change = [float(np.abs(o - x).mean()) for o in outs]
    assert change[0] > 0 and change[-1] > change[0], change


@pytest.mark.parametrize("name", rb.names_for("table"))
def test_table_shifts_grow_with_severity(name: str) -> None:
    change = [float(np.abs(rb.corrupt(TABLE, name, s) - TABLE).mean()) for s in rb.SEVERITIES]
    assert all(b > a for a, b in itertools.pairwise(change))


def test_blur_equals_an_explicit_gaussian_kernel() -> None:
    sigma = rb.CORRUPTIONS["gaussian_blur"].levels[2]
    radius = int(4 * sigma + 0.5)  # SciPy's truncate=4
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(IMAGES[0, 0].astype(np.float64), radius, mode="symmetric")  # SciPy's "reflect"
    rows = np.stack([np.convolve(r, taps, mode="valid") for r in padded])
    ref = np.stack([np.convolve(c, taps, mode="valid") for c in rows.T]).T
    np.testing.assert_allclose(rb.corrupt(IMAGES, "gaussian_blur", 3)[0, 0], ref, atol=1e-5)


def test_pixelate_equals_block_means_and_translate_shifts() -> None:
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) / 16
    blocks = rb._pixelate(x, 0.5, np.random.default_rng(0))
    expected = x.reshape(2, 2, 2, 2).mean(axis=(1, 3)).repeat(2, 0).repeat(2, 1)
    np.testing.assert_allclose(blocks[0, 0], expected, rtol=1e-6)
    shifted = rb.corrupt(IMAGES, "translate", 2, seed=0)
    matches = 0
    for i in range(len(IMAGES)):
        for dy, dx in rb._DIRECTIONS * 2:
            ref = np.zeros((28, 28), np.float32)
            ref[max(dy, 0) : 28 + min(dy, 0), max(dx, 0) : 28 + min(dx, 0)] = IMAGES[
                i, 0, max(-dy, 0) : 28 - max(dy, 0), max(-dx, 0) : 28 - max(dx, 0)
            ]
            matches += np.array_equal(shifted[i, 0], ref)
    assert matches == len(IMAGES)


def _pillow_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """One image (H, W) or (H, W, 3) in [0, 1] through Pillow's JPEG on its own."""
    buffer = io.BytesIO()
    mode = "L" if image.ndim == 2 else "RGB"
    Image.fromarray(np.round(image * 255).astype(np.uint8), mode=mode).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer), dtype=np.float32) / 255


@pytest.mark.parametrize("size", [28, 13])
def test_jpeg_mosaic_equals_one_pillow_round_trip_per_image(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Smooth images (real-looking blocks) and noise, edge blocks partial (28 and 13 are not multiples of 8),
    # and 7 tiles per mosaic so that 30 images span several mosaics with a partly empty last one.
    rng = np.random.default_rng(2)
    ramps = np.linspace(0, 1, size, dtype=np.float32)[None, None, :, None] * rng.random((15, 1, 1, 1))
    x = np.concatenate([ramps.repeat(size, axis=3), rng.random((15, 1, size, size), dtype=np.float32)])
    monkeypatch.setattr(rb, "_MOSAIC_TILES", 7)
    for severity in (1, 5):
        quality = int(rb.CORRUPTIONS["jpeg"].levels[severity - 1])
        out = rb.corrupt(x, "jpeg", severity)
        for i in range(len(x)):
            np.testing.assert_array_equal(out[i, 0], _pillow_jpeg(x[i, 0], quality), err_msg=f"image {i}")
    colour = rng.random((2, 3, 12, 12), dtype=np.float32)  # RGB: one encode per image
    out = rb.corrupt(colour, "jpeg", 2)
    np.testing.assert_array_equal(out[1], _pillow_jpeg(colour[1].transpose(1, 2, 0), 18).transpose(2, 0, 1))


def test_bad_arguments() -> None:
    with pytest.raises(UsageError, match="Known"):
        rb.corrupt(IMAGES, "fog", 1)
    with pytest.raises(UsageError, match="severity"):
        rb.corrupt(IMAGES, "contrast", 6)
    with pytest.raises(UsageError, match="dimensions"):
        rb.corrupt(TABLE, "contrast", 1)


def _result(rng: np.random.Generator, n: int, p_clean: float, drops: list[float]) -> rb.CorruptionResult:
    clean = rng.random(n) < p_clean
    corrupted = {
        name: np.stack([clean & (rng.random(n) > d * s / 5) for s in rb.SEVERITIES])
        for name, d in zip(("a", "b"), drops, strict=True)
    }
    return rb.CorruptionResult(clean=clean, corrupted=corrupted)


def test_mca_ce_and_relative_ce_equal_their_definitions(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b"):
        monkeypatch.setitem(rb.CORRUPTIONS, name, rb.Corruption(name, (1, 2, 3, 4, 5), rb._brightness, "p"))
    rng = np.random.default_rng(0)
    cand, base = _result(rng, 400, 0.9, [0.3, 0.6]), _result(rng, 400, 0.92, [0.5, 0.5])
    ms = {m.name: m for m in rb.corruption_measurements(cand, base, n_boot=200)}
    acc = {k: v.mean(axis=1) for k, v in cand.corrupted.items()}
    acc_b = {k: v.mean(axis=1) for k, v in base.corrupted.items()}
    e_clean, e_clean_b = 1 - cand.clean.mean(), 1 - base.clean.mean()
    assert ms["corruption_accuracy[a@3]"].value == pytest.approx(acc["a"][2])
    assert ms["corruption_mca[b]"].value == pytest.approx(acc["b"].mean())
    assert ms["corruption_mca"].value == pytest.approx(np.mean([acc["a"].mean(), acc["b"].mean()]))
    ce = {k: (1 - acc[k]).sum() / (1 - acc_b[k]).sum() for k in acc}
    rce = {k: (1 - acc[k] - e_clean).sum() / (1 - acc_b[k] - e_clean_b).sum() for k in acc}
    assert ms["corruption_ce[a]"].value == pytest.approx(ce["a"])
    assert ms["corruption_relative_ce[b]"].value == pytest.approx(rce["b"])
    assert ms["corruption_mce"].value == pytest.approx(np.mean(list(ce.values())))
    assert ms["corruption_relative_mce"].value == pytest.approx(np.mean(list(rce.values())))
    # The interval is a paired bootstrap: a replicate is the statistic on the same resampled examples.
    rows = bootstrap_indices(400, 200, 0)
    r = rows[0]
    by_hand = (~cand.corrupted["a"][:, r]).sum() / (~base.corrupted["a"][:, r]).sum()
    num = (~cand.corrupted["a"]).sum(0).astype(float)
    den = (~base.corrupted["a"]).sum(0).astype(float)
    assert rb._ratio_rows(num, den)(rows[:1])[0] == pytest.approx(by_hand)
    m = ms["corruption_relative_mce"]
    assert m.ci_low is not None and m.ci_high is not None and m.ci_low < (m.value or 0) < m.ci_high


def test_a_model_against_itself_has_ce_one() -> None:
    rng = np.random.default_rng(2)
    result = _result(rng, 300, 0.9, [0.4, 0.4])
    for name in ("a", "b"):
        rb.CORRUPTIONS.setdefault(name, rb.Corruption(name, (1, 2, 3, 4, 5), rb._brightness, "p"))
    try:
        ms = {m.name: m for m in rb.corruption_measurements(result, result, n_boot=100)}
    finally:
        for name in ("a", "b"):
            rb.CORRUPTIONS.pop(name)
    assert ms["corruption_mce"].value == pytest.approx(1.0) and ms[
        "corruption_relative_mce"
    ].value == pytest.approx(1.0)
    assert ms["corruption_mce"].ci_low == pytest.approx(1.0) and ms[
        "corruption_mce"
    ].ci_high == pytest.approx(1.0)


@needs_fashion_mnist
def test_a_real_model_degrades_with_noise_severity(small_model: SmallModel) -> None:
    x, y = small_model.x_test[:500], small_model.y_test[:500]

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return small_model.model(torch.from_numpy(batch)).argmax(1).numpy()

    result = rb.evaluate_corruptions(predict, x, y, ["gaussian_noise", "contrast"])
    ms = {m.name: m for m in rb.corruption_measurements(result, n_boot=100)}
    clean = result.clean.mean()
    assert (ms["corruption_accuracy[gaussian_noise@5]"].value or 1) < (
        ms["corruption_accuracy[gaussian_noise@1]"].value or 0
    )
    assert (ms["corruption_mca"].value or 1) < clean - 0.05

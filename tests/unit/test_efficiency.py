from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assay.metrics.efficiency import measure_efficiency, peak_memory_mib
from assay.models import build_model, count_parameters, default_spec, save_model
from assay.models.io import WEIGHTS
from assay.models.predictor import TorchPredictor


def predictor(channels: list[int], hidden: int) -> TorchPredictor:
    return TorchPredictor(
        build_model(default_spec("cnn", (1, 28, 28), 10, {"channels": channels, "hidden": hidden}))
    )


def test_measurements_are_complete_and_consistent(tmp_path: Path) -> None:
    p = predictor([8, 16], 32)
    save_model(p.model, tmp_path / "m")
    example = np.random.default_rng(0).random((1, 28, 28), dtype=np.float32)
    found = measure_efficiency(
        p, example, parameters=count_parameters(p.model), weights_path=tmp_path / "m" / WEIGHTS,
        throughput_batch=32, warmup=2, repeats=20,
    )  # fmt: skip
    by = {m.name: m for m in found}
    assert set(by) == {"parameters", "size_on_disk", "latency_p50_b1", "latency_p95_b1", "latency_p99_b1",
                       "latency_p50_batch", "throughput", "peak_memory"}  # fmt: skip
    assert by["parameters"].value == count_parameters(p.model)
    assert by["size_on_disk"].value == (tmp_path / "m" / WEIGHTS).stat().st_size
    p50, p95, p99 = (by[f"latency_p{q}_b1"] for q in (50, 95, 99))
    assert p50.value is not None and p95.value is not None and p99.value is not None
    assert 0 < p50.value <= p95.value <= p99.value
    samples = np.array(p50.details["samples"])
    assert len(samples) == 20 and p50.value == pytest.approx(np.percentile(samples, 50), rel=1e-4)
    assert len(by["peak_memory"].details["samples"]) == 5 and by["peak_memory"].unit == "MiB"
    for m in (p50, p95, by["throughput"], by["peak_memory"]):
        assert m.ci_low is not None and m.ci_high is not None and m.ci_low <= m.value <= m.ci_high  # type: ignore[operator]
        assert m.details["threads"] >= 1 and m.unit in ("ms", "examples/s", "MiB")
    # Throughput is the batch divided by the batch latency, from the same calls.
    batch_ms = np.array(by["latency_p50_batch"].details["samples"])
    np.testing.assert_allclose(
        np.array(by["throughput"].details["samples"]), 32 / (batch_ms / 1e3), rtol=1e-4
    )
    assert by["throughput"].higher_is_better and not p50.higher_is_better


def test_missing_weights_file_is_skipped_not_an_error() -> None:
    found = measure_efficiency(predictor([4], 8), np.zeros((1, 28, 28), np.float32), warmup=1, repeats=10)
    size = next(m for m in found if m.name == "size_on_disk")
    assert size.status == "skipped" and "no weights file" in size.details["reason"]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_does_not_vanish_after_a_larger_model() -> None:
    """A smaller model measured right after a larger one must not read ~0 (freed heap is handed back).

    Without malloc_trim the smaller model reuses the larger one's freed pages and reads 0.0 MiB.
    Only the ordering of medians is asserted: the absolute figures depend on the machine.
    """
    x = np.random.default_rng(0).random((256, 1, 28, 28), dtype=np.float32)
    big, small = predictor([32, 64], 128), predictor([16, 32], 64)
    for p in (big, small):  # as in measure_efficiency: first calls build kernel caches, not activations
        p.logits_and_features(x)
    readings: dict[str, list[float]] = {"big": [], "small": []}
    for _ in range(3):
        for name, p in (("big", big), ("small", small)):
            value = peak_memory_mib(lambda p=p: p.logits_and_features(x))  # type: ignore[misc]
            assert value is not None
            readings[name].append(value)
    assert min(readings["small"]) > 5  # the activations of 256 images: tens of MiB, never ~0
    assert np.median(readings["big"]) > np.median(readings["small"])

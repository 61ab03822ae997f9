"""Efficiency of a model on this machine: parameters, size on disk, latency, throughput, peak memory.

Method (DESIGN.md section 4): warm-up calls first (a count and a minimum time), then repeated timed
calls; latency at batch 1 and at a throughput batch, reported as percentiles with seeded bootstrap
intervals over the timed calls; the raw timings travel in ``details["samples"]`` so the gate can compare
two models' distributions. Thread count and batch sizes are recorded in every measurement. Timings are
only comparable on the same machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assay.measurement import Measurement
from assay.models.predictor import Predictor
from assay.stats import bootstrap_ci

FAMILY = "efficiency"
MEMORY_READINGS = 5


WARMUP_SECONDS = 0.5


def _timings_ms(fn: Callable[[], object], warmup: int, repeats: int) -> np.ndarray:
    """``repeats`` timed calls after at least ``warmup`` calls and WARMUP_SECONDS of warm-up.

    A count alone is not enough for small models: ten calls take a few milliseconds, less than thread
    pools, allocator and kernel caches need to settle, and the model measured first in a process would
    look slower than the ones after it.
    """
    start, calls = time.perf_counter(), 0
    while calls < warmup or time.perf_counter() - start < WARMUP_SECONDS:
        fn()
        calls += 1
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - start) * 1e3
    return out


def _percentile_measurement(
    name: str,
    samples: np.ndarray,
    q: float,
    unit: str,
    context: dict[str, Any],
    seed: int,
    higher_is_better: bool = False,
    of: str = "timed calls after warm-up",
) -> Measurement:
    result = bootstrap_ci(
        lambda idx: float(np.percentile(samples[idx], q)), len(samples), n_boot=1000, seed=seed
    )
    return Measurement(
        name=name,
        family=FAMILY,
        value=float(np.percentile(samples, q)),
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        n=len(samples),
        unit=unit,
        higher_is_better=higher_is_better,
        estimator=f"p{q:g} of {len(samples)} {of}, percentile bootstrap 95% CI",
        details={**context, "samples": [round(float(s), 6) for s in samples], "statistic": f"p{q:g}"},
    )


def _vm_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _release_free_heap() -> None:
    """Hand memory that earlier work freed back to the OS (glibc keeps it in its arenas otherwise).

    Without this, a model measured after a larger one reuses the larger one's freed pages, its resident
    set never grows, and its peak reads as ~0 MiB.
    """
    # Not glibc: nothing to release, and the reading may then under-estimate after larger work.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory_mib(fn: Callable[[], object]) -> float | None:
    """Peak resident memory added while ``fn`` runs, in MiB (Linux: reset VmHWM via clear_refs)."""
    _release_free_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    before = _vm_kib("VmRSS")
    fn()
    peak = _vm_kib("VmHWM")
    return None if before is None or peak is None else max(peak - before, 0) / 1024


def measure_efficiency(
    predictor: Predictor,
    example: np.ndarray,
    *,
    parameters: int | None = None,
    weights_path: Path | None = None,
    throughput_batch: int = 256,
    warmup: int = 10,
    repeats: int = 100,
    seed: int = 0,
) -> list[Measurement]:
    """``example`` is one input without the batch dimension; batches are made by repeating it."""
    threads = torch.get_num_threads()
    context = {"threads": threads, "backend": predictor.name}
    out: list[Measurement] = []
    if parameters is not None:
        out.append(
            Measurement(
                "parameters",
                FAMILY,
                float(parameters),
                unit="count",
                higher_is_better=False,
                estimator="trainable and frozen parameters",
            )
        )
    if weights_path is not None and weights_path.is_file():
        out.append(
            Measurement(
                "size_on_disk",
                FAMILY,
                float(weights_path.stat().st_size),
                unit="bytes",
                higher_is_better=False,
                estimator=f"size of {weights_path.name}",
            )
        )
    else:
        out.append(
            Measurement.skipped("size_on_disk", FAMILY, "no weights file (predictions or in-memory model)")
        )
    single = np.ascontiguousarray(example[None])
    batch = np.ascontiguousarray(np.repeat(single, throughput_batch, axis=0))
    b1 = _timings_ms(lambda: predictor.logits_and_features(single), warmup, repeats)
    ctx1 = {**context, "batch_size": 1}
    for q in (50, 95, 99):
        out.append(_percentile_measurement(f"latency_p{q}_b1", b1, q, "ms", ctx1, seed))
    bt = _timings_ms(lambda: predictor.logits_and_features(batch), max(2, warmup // 5), max(10, repeats // 5))
    ctxb = {**context, "batch_size": throughput_batch}
    out.append(_percentile_measurement("latency_p50_batch", bt, 50, "ms", ctxb, seed))
    out.append(
        _percentile_measurement(
            "throughput", throughput_batch / (bt / 1e3), 50, "examples/s", ctxb, seed, True
        )
    )
    # Several readings, so the gate compares distributions rather than two single noisy numbers.
    peaks = [peak_memory_mib(lambda: predictor.logits_and_features(batch)) for _ in range(MEMORY_READINGS)]
    if any(p is None for p in peaks):
        out.append(Measurement.skipped("peak_memory", FAMILY, "peak RSS not readable (needs Linux /proc)"))
    else:
        out.append(
            _percentile_measurement(
                "peak_memory", np.array(peaks, dtype=float), 50, "MiB", ctxb, seed,
                of=f"readings of the peak RSS added by one forward pass at batch {throughput_batch}",
            )
        )  # fmt: skip
    return out

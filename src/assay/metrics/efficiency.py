"""Efficiency of a model on this machine: parameters, size on disk, latency, throughput, peak memory.

Method (DESIGN.md section 4): warm-up calls first (a count and a minimum time), then repeated timed
calls; latency at batch 1 and at a throughput batch, reported as percentiles with seeded bootstrap
intervals over the timed calls; the raw timings travel in ``details["samples"]`` so the gate can compare
two models' distributions. Thread count and batch sizes are recorded in every measurement. Timings are
only comparable on the same machine. A text model is timed at batch 1 and batch ``TEXT_THROUGHPUT_BATCH``
on a text of ``TEXT_TOKENS`` tokens where its predictor can make one (``text_of_tokens``); the length is
in the measurement's details (``sequence_length``).

Timings that cannot be trusted are flagged, never dropped: ``details["flags"]`` lists, in words, what
:func:`timing_flags` and :func:`machine_load` found (empty when nothing), and ``details["timing_check"]``
and ``details["machine_load"]`` hold the figures behind them:

- outliers: timings above both ``OUTLIER_FACTOR`` times the median and ``OUTLIER_MADS`` scaled MADs above
  it (a preempted call, a page fault storm); a percentile is flagged when leaving them out moves it by more
  than ``OUTLIER_INFLUENCE`` (a p99 read off two stalls, not a p50 beside them);
- drift: the medians of ``BLOCKS`` consecutive blocks of calls differ by more than ``BLOCK_RATIO`` (the
  machine got busy, or quiet, part of the way through);
- a busy machine: other processes took more of this process's cores during the timing (warm-up included,
  from /proc/stat and /proc/self/stat) than its threads leave spare, or the load average exceeds the CPUs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from assay.catalogue import EFFICIENCY, EFFICIENCY_METRICS, LATENCY_QUANTILES, latency_b1
from assay.format import format_value, trim
from assay.measurement import Measurement
from assay.stats import bootstrap_ci

if TYPE_CHECKING:
    from assay.models.predictor import Predictor

FAMILY = EFFICIENCY  # names, directions and units are the catalogue's (assay.catalogue.EFFICIENCY_METRICS)
MEMORY_READINGS = 5


WARMUP_SECONDS = 0.5
THROUGHPUT_BATCH = 256
# Text models: batch 1 and batch 8 (the batches serving sees, and the published BERT int8 figures use) at
# a stated length in the model's tokens; 128 keeps the whole of most short texts (docs/data.md: fortunes).
TEXT_THROUGHPUT_BATCH = 8
TEXT_TOKENS = 128

# An outlier is far outside its own distribution on both scales: OUTLIER_FACTOR x the median keeps the
# jitter of a tight distribution (a few MADs of a few microseconds) from counting, OUTLIER_MADS scaled
# MADs keep the tail of a wide one from counting. A batch-1 forward whose call takes 3x its median was
# interrupted (a scheduler tick alone is 4 ms against a 0.04 ms forward), it did not compute more.
OUTLIER_FACTOR = 3.0
OUTLIER_MADS = 5.0
MAD_SCALE = 1.482602218505602  # 1 / Phi^-1(3/4): the MAD of a normal distribution to its sigma
# A percentile is flagged when its outliers move it by more than this share of its value without them.
OUTLIER_INFLUENCE = 0.1
# Consecutive blocks whose medians differ by more than BLOCK_RATIO: the conditions changed during the run.
BLOCKS = 5
BLOCK_RATIO = 1.5
# Other processes' CPU on this process's cores above what its threads leave spare, in cores, before the
# machine counts as busy (a reading of jiffies over about half a second is good to a few hundredths).
BUSY_TOLERANCE_CORES = 0.25


def _ms(x: float) -> str:
    return format_value(x, "latency", "ms")


def timing_check(samples: np.ndarray) -> dict[str, Any]:
    """The outlier threshold, the outliers and the block medians of timings in the order they were taken."""
    s = np.asarray(samples, dtype=np.float64)
    median = float(np.median(s))
    mad = MAD_SCALE * float(np.median(np.abs(s - median)))
    threshold = max(OUTLIER_FACTOR * median, median + OUTLIER_MADS * mad)
    blocks = [float(np.median(b)) for b in np.array_split(s, BLOCKS)] if s.size >= 2 * BLOCKS else []
    return {
        "rule": (
            f"outlier: above {trim(OUTLIER_FACTOR, 1)}x the median and {trim(OUTLIER_MADS, 1)} scaled MADs "
            f"above it; drift: medians of {BLOCKS} consecutive blocks more than {trim(BLOCK_RATIO, 2)}x apart"
        ),
        "median": median,
        "mad": mad,
        "threshold": threshold,
        "outliers": int(np.count_nonzero(s > threshold)),
        "block_medians": blocks,
    }


BUSY_MACHINE = "busy machine"  # how machine_load's flag begins: a condition of the measurement


def moves_the_statistic(flag: str) -> bool:
    """Whether a timing flag says the figure itself is off (outliers that move it, blocks of calls that
    disagree), not only that the machine was busy while two models were timed alike."""
    return not flag.startswith(BUSY_MACHINE)


def timing_flags(samples: np.ndarray, q: float, check: dict[str, Any]) -> list[str]:
    """What makes the ``q``-th percentile of these timings untrustworthy, in words (``[]`` when nothing).

    ``check`` is :func:`timing_check` of the same samples, in milliseconds.
    """
    s = np.asarray(samples, dtype=np.float64)
    flags = []
    inside = s[s <= check["threshold"]]
    if check["outliers"] and inside.size:
        value, without = float(np.percentile(s, q)), float(np.percentile(inside, q))
        if abs(value - without) > OUTLIER_INFLUENCE * without:
            flags.append(
                f"{check['outliers']} of {s.size} timings are outliers (above {_ms(check['threshold'])}); "
                f"without them this p{q:g} reads {_ms(without)}, not {_ms(value)}"
            )
    blocks = check["block_medians"]
    if blocks and max(blocks) > BLOCK_RATIO * min(blocks):
        flags.append(
            f"the medians of {len(blocks)} consecutive blocks of timings disagree: {_ms(min(blocks))} to "
            f"{_ms(max(blocks))} ({trim(max(blocks) / min(blocks), 1)}x)"
        )
    return flags


@dataclass(frozen=True)
class CpuReading:
    """CPU time in jiffies: busy on the CPUs this process may use (every process), and this process's."""

    busy: int
    own: int
    seconds: float  # a monotonic clock
    cores: int  # the CPUs this process may run on
    cpus: int  # the CPUs online, for the load average
    load_1m: float


def busy_jiffies(proc_stat: str, cpus: Collection[int]) -> int:
    """Busy time of the given CPUs from /proc/stat: user, nice, system, irq, softirq and steal (a
    hypervisor's other guests); idle and iowait are not busy, guest time is already in user."""
    total = 0
    for line in proc_stat.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(f) for f in fields] + [0] * 8  # old kernels have fewer columns
            total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return total


def own_jiffies(proc_self_stat: str) -> int:
    """utime + stime of this process (all its threads) from /proc/self/stat (fields 14 and 15)."""
    after_name = proc_self_stat.rsplit(")", 1)[1].split()  # the name may hold spaces and parentheses
    return int(after_name[11]) + int(after_name[12])


def read_cpu() -> CpuReading | None:
    """A reading of /proc now, or None where /proc (Linux) is not readable."""
    try:
        cpus = os.sched_getaffinity(0)
        stat = Path("/proc/stat").read_text()
        own = Path("/proc/self/stat").read_text()
        load = float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, AttributeError, ValueError, IndexError):
        return None
    return CpuReading(
        busy_jiffies(stat, cpus), own_jiffies(own), time.monotonic(), len(cpus), os.cpu_count() or 1, load
    )


def machine_load(
    before: CpuReading, after: CpuReading, threads: int, ticks_per_second: int | None = None
) -> tuple[dict[str, Any], list[str]]:
    """What other processes took of this process's cores between two readings, and the busy flag.

    Returns the figures (``others_cores``: their average CPU in cores) and ``[flag]`` or ``[]``.
    """
    tick = ticks_per_second or os.sysconf("SC_CLK_TCK")
    seconds = max(after.seconds - before.seconds, 1e-9)
    others = max(0, (after.busy - before.busy) - (after.own - before.own)) / tick / seconds
    spare = max(0, after.cores - threads)
    load = {
        "others_cores": round(others, 3),
        "cores": after.cores,
        "threads": threads,
        "seconds": round(seconds, 3),
        "load_1m": after.load_1m,
        "cpus_online": after.cpus,
    }
    reasons = []
    if others > spare + BUSY_TOLERANCE_CORES:
        reasons.append(
            f"other processes used {others:.2f} of its {after.cores} cores while it was timed "
            f"(its {threads} threads leave {spare} spare)"
        )
    if after.load_1m > after.cpus:
        reasons.append(f"load average {after.load_1m:.2f} on {after.cpus} CPUs")
    return load, ([f"{BUSY_MACHINE}: {'; '.join(reasons)}"] if reasons else [])


def _timed(
    fn: Callable[[], object], warmup: int, repeats: int, threads: int
) -> tuple[np.ndarray, dict[str, Any] | None, list[str]]:
    """:func:`_timings_ms` with the machine's load over the same time (warm-up included, for jiffies to
    resolve it): the timings, the load figures (None without /proc) and the busy flag."""
    before = read_cpu()
    samples = _timings_ms(fn, warmup, repeats)
    after = read_cpu()
    if before is None or after is None:
        return samples, None, []
    load, flags = machine_load(before, after, threads)
    return samples, load, flags


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
    context: dict[str, Any],
    seed: int,
    of: str = "timed calls after warm-up",
    checked: dict[str, Any] | None = None,
) -> Measurement:
    """The ``q``-th percentile of ``samples`` with its bootstrap interval; ``checked``, for timings: their
    ``timing_check``, ``machine_load`` and ``flags`` (see the module docstring)."""
    result = bootstrap_ci(
        lambda idx: float(np.percentile(samples[idx], q)), len(samples), n_boot=1000, seed=seed
    )
    entry = EFFICIENCY_METRICS[name]
    return Measurement(
        name=name,
        family=FAMILY,
        value=float(np.percentile(samples, q)),
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        n=len(samples),
        unit=entry.unit,
        higher_is_better=entry.higher_is_better,
        estimator=f"p{q:g} of {len(samples)} {of}, percentile bootstrap 95% CI",
        details={
            **context,
            "samples": [round(float(s), 6) for s in samples],
            "statistic": f"p{q:g}",
            **(checked or {}),
        },
    )


def checked_timings(
    samples: np.ndarray, q: float, load: dict[str, Any] | None, busy: list[str]
) -> dict[str, Any]:
    """The details that say whether the ``q``-th percentile of these timings (ms) can be trusted."""
    check = timing_check(samples)
    return {
        "timing_check": check,
        "machine_load": load,
        "flags": [*timing_flags(samples, q, check), *busy],
    }


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


def _count(name: str, value: float, estimator: str) -> Measurement:
    """An exact count (parameters, bytes): no sampling, so no interval."""
    entry = EFFICIENCY_METRICS[name]
    return Measurement(
        name,
        FAMILY,
        float(value),
        unit=entry.unit,
        higher_is_better=entry.higher_is_better,
        estimator=estimator,
    )


class FixedLengthTexts(Protocol):
    """A text model's predictor that can make a text of a given length in its own tokens."""

    def text_of_tokens(self, n: int, words: str = "") -> tuple[str, int]: ...


def _text_input(predictor: Predictor, example: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The text a text model is timed on: ``example``'s words repeated to ``TEXT_TOKENS`` tokens (at most
    the model's truncation length), so that two models with one tokenizer are timed on the same work and
    the length is stated; a model that cannot say its tokens is timed on ``example`` as it is."""
    words = str(example.reshape(-1)[0]) if example.size else ""
    if not callable(getattr(predictor, "text_of_tokens", None)):
        return example, {"sequence_length": "that of the first test example (the model gives no tokenizer)"}
    text, tokens = cast("FixedLengthTexts", predictor).text_of_tokens(TEXT_TOKENS, words)
    return np.array(text, dtype=object), {
        "sequence_length": tokens,
        "sequence": "tokens, special tokens included",
    }


def measure_efficiency(
    predictor: Predictor,
    example: np.ndarray,
    *,
    parameters: int | None = None,
    weights_path: Path | None = None,
    throughput_batch: int | None = None,
    warmup: int = 10,
    repeats: int = 100,
    seed: int = 0,
) -> list[Measurement]:
    """``example`` is one input without the batch dimension; batches are made by repeating it.

    ``throughput_batch``: by default ``THROUGHPUT_BATCH`` examples, or for a text (a 0-d string array)
    ``TEXT_THROUGHPUT_BATCH`` texts of ``TEXT_TOKENS`` tokens (:func:`_text_input`)."""
    import torch  # the thread count torch runs with; imported here so the timing tools load without it

    threads = torch.get_num_threads()
    context: dict[str, Any] = {"threads": threads, "backend": predictor.name}
    if example.dtype.kind in "OUS":
        example, shape = _text_input(predictor, example)
        context.update(shape)
        throughput_batch = throughput_batch or TEXT_THROUGHPUT_BATCH
    throughput_batch = throughput_batch or THROUGHPUT_BATCH
    out: list[Measurement] = []
    if parameters is not None:
        out.append(_count("parameters", parameters, "trainable and frozen parameters"))
    if weights_path is not None and weights_path.is_file():
        out.append(_count("size_on_disk", weights_path.stat().st_size, f"size of {weights_path.name}"))
    else:
        out.append(
            Measurement.skipped("size_on_disk", FAMILY, "no weights file (predictions or in-memory model)")
        )
    single = np.ascontiguousarray(example[None])
    batch = np.ascontiguousarray(np.repeat(single, throughput_batch, axis=0))
    b1, load1, busy1 = _timed(lambda: predictor.logits_and_features(single), warmup, repeats, threads)
    ctx1 = {**context, "batch_size": 1}
    for q in LATENCY_QUANTILES:
        checked = checked_timings(b1, q, load1, busy1)
        out.append(_percentile_measurement(latency_b1(q), b1, q, ctx1, seed, checked=checked))
    bt, loadb, busyb = _timed(
        lambda: predictor.logits_and_features(batch), max(2, warmup // 5), max(10, repeats // 5), threads
    )
    ctxb = {**context, "batch_size": throughput_batch}
    # Throughput is the batch over these same calls' timings: their median's flags are its flags.
    checked = checked_timings(bt, 50, loadb, busyb)
    out.append(_percentile_measurement("latency_p50_batch", bt, 50, ctxb, seed, checked=checked))
    out.append(
        _percentile_measurement("throughput", throughput_batch / (bt / 1e3), 50, ctxb, seed, checked=checked)
    )
    # Several readings, so the gate compares distributions rather than two single noisy numbers.
    peaks = [peak_memory_mib(lambda: predictor.logits_and_features(batch)) for _ in range(MEMORY_READINGS)]
    if any(p is None for p in peaks):
        out.append(Measurement.skipped("peak_memory", FAMILY, "peak RSS not readable (needs Linux /proc)"))
    else:
        out.append(
            _percentile_measurement(
                "peak_memory", np.array(peaks, dtype=float), 50, ctxb, seed,
                of=f"readings of the peak RSS added by one forward pass at batch {throughput_batch}",
            )
        )  # fmt: skip
    return out

"""What the machine assay runs on achieves: matrix-multiply rates per precision and read bandwidth.

The same two probes stand behind every target's figures in the catalogue (``targets.toml``), so a
projection from this machine to another compares like with like. Both use torch's threads, the threads
the timings of a model used. A few hundred milliseconds in all; measured once per process.
"""

from __future__ import annotations

import functools
import os
import re
import time
from pathlib import Path
from typing import Any

import torch

from assay.cost.projection import Machine
from assay.cost.targets import PRECISIONS

BANDWIDTH_BUFFER_MIB = 512  # well past every cache level of the machines assay runs on
MATMUL_SIZE = 1024  # large enough for the kernels' steady state, small enough to stay in the caches
REPEATS = 5


def memory_bandwidth(mib: int = BANDWIDTH_BUFFER_MIB, repeats: int = 7) -> float:
    """The machine's read bandwidth (bytes/s) with torch's threads: the best of ``repeats`` sums of a
    float32 buffer of ``mib`` MiB, each of which reads the whole buffer once from memory."""
    buffer = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    buffer.sum()  # pages touched before timing
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - begin)
    return buffer.numel() * 4 / best


def _best_seconds(fn: Any) -> float:
    fn()  # warm-up: the kernel chosen and its buffers allocated
    best = float("inf")
    for _ in range(REPEATS):
        begin = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - begin)
    return best


def matmul_gflops(precision: str, n: int = MATMUL_SIZE) -> float:
    """The best rate of an n x n matrix product in ``precision`` (int8: ``torch._int_mm``, int32 sums)."""
    generator = torch.Generator().manual_seed(0)
    if precision == "int8":
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=generator)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=generator)
        seconds = _best_seconds(lambda: torch._int_mm(a, b))
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        a = torch.randn(n, n, generator=generator).to(dtype)
        b = torch.randn(n, n, generator=generator).to(dtype)
        seconds = _best_seconds(lambda: a @ b)
    return 2 * n**3 / seconds / 1e9


def base_clock_ghz(cpuinfo: str) -> float:
    """The first ``cpu MHz`` of /proc/cpuinfo in GHz (a VM reports the base clock there), 0 if absent."""
    found = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, flags=re.MULTILINE)
    return float(found.group(1)) / 1e3 if found else 0.0


def measure_machine() -> Machine:
    """This machine's rates with torch's present thread count, measured once per process and count (a
    Ray task runs on the threads it declared CPUs for)."""
    return _measure(torch.get_num_threads())


@functools.cache
def _measure(threads: int) -> Machine:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return Machine(
        gflops={p: matmul_gflops(p) for p in PRECISIONS},
        bandwidth_gb_s=memory_bandwidth() / 1e9,
        clock_ghz=base_clock_ghz(cpuinfo),
        threads=threads,
        basis=(
            f"best of {REPEATS} {MATMUL_SIZE}x{MATMUL_SIZE} matrix products per precision; best of 7 sums "
            f"of a {BANDWIDTH_BUFFER_MIB} MiB float32 buffer; load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs (other work lowers both, bandwidth most)"
        ),
    )

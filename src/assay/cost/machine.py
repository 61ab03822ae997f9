"""What the machine assay runs on achieves: matrix-multiply rates per precision and read bandwidth.

The same two probes stand behind every target's figures in the catalogue (``targets.toml``), so a
projection from this machine to another compares like with like. Both use torch's threads, the threads
the timings of a model used. About a second in all; measured once per process and thread count.
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
# A product large enough for the kernels' steady state, small enough to stay in the caches; a precision
# without hardware support (bf16 or int8 on an AVX2-only CPU) runs 1024 x 1024 at a few GFLOP/s, seconds a
# product, so each precision takes the largest size whose product should take under CALL_SECONDS.
MATMUL_SIZES = (256, 512, 1024)
CALL_SECONDS = 0.1
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


def _seconds(fn: Any) -> float:
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def _product(precision: str, n: int) -> Any:
    """An n x n matrix product in ``precision`` (int8: ``torch._int_mm``, int32 sums), ready to call."""
    generator = torch.Generator().manual_seed(0)
    if precision == "int8":
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=generator)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=generator)
        return lambda: torch._int_mm(a, b)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    a = torch.randn(n, n, generator=generator).to(dtype)
    b = torch.randn(n, n, generator=generator).to(dtype)
    return lambda: a @ b


def matmul_gflops(precision: str, n: int | None = None) -> tuple[float, int]:
    """The best rate (GFLOP/s) of ``REPEATS`` n x n matrix products in ``precision``, and ``n``: by
    default the largest of ``MATMUL_SIZES`` whose product takes under ``CALL_SECONDS`` here, judged from
    the size below (a product of twice the size is eight times the work)."""
    for size in [n] if n else MATMUL_SIZES:
        fn = _product(precision, size)
        fn()  # warm-up: the kernel chosen and its buffers allocated
        first = _seconds(fn)
        if n or size == MATMUL_SIZES[-1] or 8 * first > CALL_SECONDS:
            break
    best = min([first, *(_seconds(fn) for _ in range(REPEATS - 1))])
    return 2 * size**3 / best / 1e9, size


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
    rates = {p: matmul_gflops(p) for p in PRECISIONS}
    sizes = ", ".join(f"{p} {n}x{n}" for p, (_, n) in rates.items())
    return Machine(
        gflops={p: rate for p, (rate, _) in rates.items()},
        bandwidth_gb_s=memory_bandwidth() / 1e9,
        clock_ghz=base_clock_ghz(cpuinfo),
        threads=threads,
        basis=(
            f"best of {REPEATS} matrix products per precision ({sizes}); best of 7 sums "
            f"of a {BANDWIDTH_BUFFER_MIB} MiB float32 buffer; load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs (other work lowers both, bandwidth most)"
        ),
    )

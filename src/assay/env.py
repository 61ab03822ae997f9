"""The environment a run happened in: package versions, CPU flags, threads, git commit.

Recorded with every training and evaluation run so a number can always be traced to the machine,
libraries and code that produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = (
    "assay",
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "safetensors",
    "sqlalchemy",
    "onnx",
    "onnxruntime",
    "torchao",
    "ray",
)
CPU_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@cache
def cpu_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    for line in _cpuinfo_lines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    flags = all_cpu_flags()
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags], "logical_cores": os.cpu_count()}


def all_cpu_flags() -> frozenset[str]:
    """Every instruction-set flag of the first processor in ``/proc/cpuinfo`` (``flags`` on x86,
    ``Features`` on ARM); empty where there is no such file (not Linux: bf16 detection then falls back
    to torch's own check)."""
    for line in _cpuinfo_lines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


WATTS_PER_CORE = 10.0  # a server core under full load: TDP / cores for current x86 parts


def watts_per_core() -> float:
    """The power figure assay estimates a busy core's draw with where nothing measures it:
    ``ASSAY_WATTS_PER_CORE`` from the environment, else ``WATTS_PER_CORE``."""
    return float(os.environ.get("ASSAY_WATTS_PER_CORE", WATTS_PER_CORE))


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    flags = cpu_info()["flags"]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def git_commit(path: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path or Path.cwd(), capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def _torch_threads() -> int | None:
    """torch's thread count where torch is loaded: a run that never imported it ran no torch kernels."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def environment(seeds: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "cpu": {**cpu_info(), "torch_threads": _torch_threads()},
        "git_commit": git_commit(),
        "seeds": seeds or {},
    }

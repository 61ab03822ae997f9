"""What the hardware allows: FLOPs of an architecture, and the peak speedup of a number format.

A measured speedup of a variant over a reference *on the same runtime* cannot exceed what the instruction
set gives the lower precision (per-instruction throughput against fp32) times the reduction in arithmetic
(and never needs to be below 1: a call can be all overhead).
A figure above that bound (with a tolerance for timing noise) is flagged implausible, not printed as a
gain: it means a broken timing, a cache effect, or a reference that was not doing the same work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from assay.models import build_model

TOLERANCE = 1.25  # timing noise on a shared CPU: flag only clear excesses
# Between architectures the FLOP model is looser: a smaller model can fit a cache level the larger one did
# not, and its memory-bound layers speed up by more than its arithmetic shrinks.
CROSS_ARCHITECTURE_TOLERANCE = 1.6


def flops(spec: dict[str, Any], input_shape: Sequence[int]) -> int:
    """Floating-point operations of one forward pass at batch 1 (2 per multiply-add), counted by torch."""
    model = build_model(spec).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape))
    return int(counter.get_total_flops())


def peak_ratio(precision: str, cpu_flags: Sequence[str]) -> float:
    """Peak multiply-add throughput of ``precision`` over fp32 on this CPU's vector units.

    AVX-512/AVX2 fp32 FMA does 16/8 lanes per instruction. int8: VNNI (vpdpbusd) does 4x the lanes;
    without VNNI, vpmaddubsw + vpmaddwd give about 2x; AMX tiles far more. bf16: avx512_bf16 (vdpbf16ps)
    2x; without it bf16 is emulated, no faster than fp32.
    """
    flags = set(cpu_flags)
    if precision == "int8":
        if "amx_int8" in flags:
            return 16.0
        return 4.0 if flags & {"avx512_vnni", "avx_vnni"} else 2.0
    if precision == "bf16":
        if "amx_bf16" in flags:
            return 16.0
        return 2.0 if "avx512_bf16" in flags else 1.0
    return 1.0


def speedup_bound(
    *, precision: str, flops_reference: int, flops_variant: int, cpu_flags: Sequence[str]
) -> float:
    """The largest speedup over an fp32 reference on the same runtime that the hardware allows.

    With latency = overhead + work / rate, the speedup lies between 1 (all overhead) and the ratio of
    work times the rate gain (all arithmetic), so neither fewer FLOPs nor a faster format can explain more.
    """
    work = flops_reference / max(flops_variant, 1)
    tolerance = TOLERANCE if flops_reference == flops_variant else CROSS_ARCHITECTURE_TOLERANCE
    return max(1.0, work * peak_ratio(precision, cpu_flags)) * tolerance

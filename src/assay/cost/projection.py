"""A call measured on this machine, projected onto another, and what 1,000 inferences cost there.

The model (stated in every projection): a call's measured time splits into a roofline part and an
overhead part. The roofline part is the larger of its arithmetic at this machine's achieved rate for its
precision (``flops / rate``) and its memory traffic at this machine's bandwidth (``bytes / bandwidth``),
capped at the measured time; which of the two is larger says whether the call is compute-bound or
memory-bound. The rest is overhead (Python, operator dispatch, synchronisation). On a target, the
roofline part scales by the ratio of achievable rates (arithmetic for a compute-bound call, bandwidth for
a memory-bound one), the overhead by the ratio of host clocks, and the target adds its fixed cost per
call (an accelerator's copies and synchronisation). A target equal to this machine gives back the
measured time.

Example:
    >>> here = Machine(gflops={"fp32": 100.0}, bandwidth_gb_s=50.0, clock_ghz=2.0)
    >>> there = Machine(gflops={"fp32": 400.0}, bandwidth_gb_s=25.0, clock_ghz=4.0)
    >>> call = Call(seconds=0.010, flops=8e8, bytes=1e8, precision="fp32", batch=1)
    >>> p = project(call, here, there)
    >>> p.bound, round(p.roofline_s * 1e3, 3), round(p.overhead_s * 1e3, 3), round(p.seconds * 1e3, 3)
    ('compute', 2.0, 1.0, 3.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

SECONDS_PER_HOUR = 3600.0
PER = 1000  # inferences (or generated tokens) a cost is quoted for


@dataclass(frozen=True)
class Machine:
    """The rates a projection needs: achieved GFLOP/s (GOP/s for int8) per precision, GB/s, the host's
    base clock (0: unknown), a fixed cost per call in microseconds; the threads the rates were
    achieved with and their basis, in words."""

    gflops: dict[str, float]
    bandwidth_gb_s: float
    clock_ghz: float
    call_overhead_us: float = 0.0
    threads: int = 0
    basis: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Machine:
        return cls(**d)


@dataclass(frozen=True)
class Call:
    """One measured call: its time on this machine (s), its arithmetic, the bytes it reads, the
    precision it computes in and the examples it handles."""

    seconds: float
    flops: float
    bytes: float
    precision: str
    batch: int


@dataclass(frozen=True)
class Projection:
    seconds: float  # per call on the target
    bound: Literal["compute", "memory"]
    roofline_s: float  # the roofline part, on the target
    overhead_s: float  # the overhead part (host dispatch and the target's fixed cost), on the target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rate(machine: Machine, precision: str) -> float:
    """Achieved FLOP/s of ``machine`` in ``precision``; an unlisted precision computes at the fp32 rate."""
    return 1e9 * machine.gflops.get(precision, machine.gflops["fp32"])


def project(call: Call, here: Machine, there: Machine) -> Projection:
    """``call``, measured on ``here``, as it would take on ``there`` (the model in the module's docstring)."""
    compute = call.flops / rate(here, call.precision)
    memory = call.bytes / (here.bandwidth_gb_s * 1e9)
    bound: Literal["compute", "memory"] = "compute" if compute >= memory else "memory"
    roofline = min(max(compute, memory), call.seconds)
    overhead = call.seconds - roofline
    if bound == "compute":
        scale = rate(here, call.precision) / rate(there, call.precision)
    else:
        scale = here.bandwidth_gb_s / there.bandwidth_gb_s
    clock = here.clock_ghz / there.clock_ghz if here.clock_ghz and there.clock_ghz else 1.0
    fixed = (there.call_overhead_us - here.call_overhead_us) * 1e-6
    target_overhead = max(overhead * clock + fixed, 0.0)
    return Projection(roofline * scale + target_overhead, bound, roofline * scale, target_overhead)


@dataclass(frozen=True)
class PerThousand:
    """What ``PER`` inferences (or tokens) cost on a target kept busy: US dollars and watt-hours."""

    usd: float
    wh: float
    seconds: float  # busy time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_thousand(seconds_per_call: float, batch: int, usd_per_hour: float, watts: float) -> PerThousand:
    """``PER`` items handled ``batch`` to a call of ``seconds_per_call``: the busy time, what that time
    costs at ``usd_per_hour``, and the energy at ``watts``."""
    busy = PER / batch * seconds_per_call
    return PerThousand(busy / SECONDS_PER_HOUR * usd_per_hour, busy * watts / SECONDS_PER_HOUR, busy)

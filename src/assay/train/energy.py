"""Energy and carbon of a block of work.

Measured from the RAPL counters (``/sys/class/powercap/*-rapl:*/energy_uj``, package domains) when they are
readable; otherwise estimated as process CPU time x a per-core power figure and labelled ``estimated``.
The estimate's constants are stated in the reading and can be set through the environment:

- ``ASSAY_WATTS_PER_CORE`` (default 10 W: a server core under full load, TDP / cores for current x86 parts)
- ``ASSAY_GRID_G_PER_KWH`` (default 400 g CO2e/kWh, roughly the world average electricity mix)
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from assay.env import watts_per_core

RAPL_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class EnergyReading:
    joules: float
    method: Literal["measured", "estimated"]
    source: str
    wall_seconds: float
    cpu_seconds: float
    co2_grams: float
    grid_g_per_kwh: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rapl_domains() -> list[Path]:
    """Top-level package domains (intel-rapl:0, intel-rapl:1, ...): sub-zones would count twice."""
    return sorted(
        p for p in RAPL_ROOT.glob("*-rapl:*") if p.name.count(":") == 1 and (p / "energy_uj").is_file()
    )


def _read_rapl(domains: list[Path]) -> list[int] | None:
    try:
        return [int((d / "energy_uj").read_text()) for d in domains]
    except (OSError, ValueError):
        return None


class EnergyMeter:
    """``with EnergyMeter() as meter: ...`` then ``meter.reading``."""

    def __init__(self) -> None:
        self.reading: EnergyReading | None = None

    def __enter__(self) -> EnergyMeter:
        self._domains = _rapl_domains()
        self._rapl_start = _read_rapl(self._domains) if self._domains else None
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.reading = self.now()

    def now(self) -> EnergyReading:
        """The reading from entering the block until now (a resumable run records it at each epoch)."""
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        grid = float(os.environ.get("ASSAY_GRID_G_PER_KWH", 400.0))
        end = _read_rapl(self._domains) if self._rapl_start is not None else None
        if self._rapl_start is not None and end is not None:
            joules = (
                sum(_delta(d, a, b) for d, a, b in zip(self._domains, self._rapl_start, end, strict=True))
                / 1e6
            )
            method: Literal["measured", "estimated"] = "measured"
            source = "RAPL package counters (whole CPU package, not only this process)"
        else:
            watts = watts_per_core()
            joules, method = cpu * watts, "estimated"
            source = f"process CPU time x {watts:g} W per core (RAPL counters not readable)"
        return EnergyReading(joules, method, source, wall, cpu, joules / 3.6e6 * grid, grid)


def _delta(domain: Path, start: int, end: int) -> int:
    """Counter difference, allowing for one wrap-around at max_energy_range_uj."""
    if end >= start:
        return end - start
    try:
        return int((domain / "max_energy_range_uj").read_text()) - start + end
    except (OSError, ValueError):
        return 0

from __future__ import annotations

from pathlib import Path

import pytest

from assay.train import energy
from assay.train.energy import EnergyMeter


def fake_rapl(root: Path, values: dict[str, int], max_range: int = 1000) -> None:
    for name, value in values.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "energy_uj").write_text(str(value))
        (d / "max_energy_range_uj").write_text(str(max_range))


def test_measured_from_rapl_package_domains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(energy, "RAPL_ROOT", tmp_path)
    fake_rapl(tmp_path, {"intel-rapl:0": 100, "intel-rapl:1": 900, "intel-rapl:0:0": 5})
    with EnergyMeter() as meter:
        # package 0 advances by 400 uJ; package 1 wraps (900 -> 1000 -> 50 = 150 uJ); the sub-zone is ignored.
        fake_rapl(tmp_path, {"intel-rapl:0": 500, "intel-rapl:1": 50, "intel-rapl:0:0": 999})
    assert meter.reading is not None
    assert meter.reading.method == "measured"
    assert meter.reading.joules == pytest.approx((400 + 150) / 1e6)


def test_estimated_without_counters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(energy, "RAPL_ROOT", tmp_path / "absent")
    monkeypatch.setenv("ASSAY_WATTS_PER_CORE", "20")
    monkeypatch.setenv("ASSAY_GRID_G_PER_KWH", "100")
    with EnergyMeter() as meter:
        sum(i * i for i in range(300_000))
    r = meter.reading
    assert r is not None and r.method == "estimated"
    assert r.joules == pytest.approx(r.cpu_seconds * 20)
    assert r.co2_grams == pytest.approx(r.joules / 3.6e6 * 100)
    assert "20 W per core" in r.source

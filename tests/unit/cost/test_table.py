"""A search's models costed on every target: this machine's cells are its own measurements priced, the
others the projection of them, and the cheapest passing model per target never a failed one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from assay.cost import machine
from assay.cost.machine import (
    CALL_SECONDS,
    MATMUL_SIZES,
    base_clock_ghz,
    matmul_gflops,
    measure_machine,
    memory_bandwidth,
)
from assay.cost.projection import Call, Machine, per_thousand, project
from assay.cost.table import LOCAL, calls, cost_table, target_machine
from assay.cost.targets import load_catalogue
from tests.unit.cost.test_targets import CLOUD, HEAD, write

HERE = Machine(
    gflops={"fp32": 100.0, "bf16": 200.0, "int8": 400.0}, bandwidth_gb_s=50.0, clock_ghz=3.0, threads=2
)


def point(
    key: str, status: str, accuracy: float, b1_ms: float, batch_ms: float, **extra: Any
) -> dict[str, Any]:
    return {
        "key": key,
        "version": f"m@{key}",
        "status": status,
        "precision": extra.get("precision", "fp32"),
        "flops": 2_000_000,
        "metrics": {
            "accuracy": {"value": accuracy, "ci_low": accuracy - 0.01, "ci_high": accuracy + 0.01},
            "size_on_disk": {"value": 400_000.0},
            "latency_p50_b1": {"value": b1_ms, "batch_size": 1},
            "latency_p50_batch": {"value": batch_ms, "batch_size": 256},
        },
    }


POINTS = [
    point("root", "root", 0.90, 0.50, 40.0),
    point("fast", "passed", 0.90, 0.20, 30.0),
    point("cheaper_but_failed", "failed", 0.80, 0.05, 10.0, precision="int8"),
    point("slow", "passed", 0.91, 0.80, 50.0, precision="bf16"),
]


@pytest.fixture
def catalogue(tmp_path: Path):  # type: ignore[no-untyped-def]
    edge = (
        CLOUD.format(name="box")
        .replace('kind = "cloud"', 'kind = "edge"')
        .replace("hourly_usd = 0.36", "purchase_usd = 87.6\nlife_years = 1.0")
    )
    return load_catalogue(write(tmp_path, HEAD + CLOUD.format(name="vm") + edge))


def test_local_cells_are_the_measured_times_priced(catalogue) -> None:  # type: ignore[no-untyped-def]
    table = cost_table(POINTS, catalogue, HERE)
    assert [t["name"] for t in table["targets"]] == [LOCAL, "vm", "box"]
    root = table["rows"][0]["costs"][LOCAL]
    # 1,000 calls of 0.5 ms = 0.5 s; priced as "vm" at $0.36/h: $0.00005; 2 threads x 10 W: 10 J.
    assert root["b1"]["method"] == "measured" and root["b1"]["ms_per_call"] == pytest.approx(0.5)
    assert root["b1"]["usd"] == pytest.approx(0.5 / 3600 * 0.36)
    assert root["b1"]["wh"] == pytest.approx(0.5 * 20 / 3600)
    # The throughput batch: 1,000 / 256 calls of 40 ms.
    assert root["batch"]["usd"] == pytest.approx(1000 / 256 * 0.040 / 3600 * 0.36)


def test_other_targets_are_the_projection_of_the_measured_calls(catalogue) -> None:  # type: ignore[no-untyped-def]
    table = cost_table(POINTS, catalogue, HERE)
    vm, box = catalogue.target("vm"), catalogue.target("box")
    # By hand for "fast" at batch 1 on "vm": 2e6 FLOP at 100 GFLOP/s = 0.02 ms; 4e5 bytes at 50 GB/s =
    # 0.008 ms: compute-bound; 0.18 ms overhead. On vm: 0.02 x 100/100 + 0.18 x 3.0/3.0 = 0.2 ms.
    cell = table["rows"][1]["costs"]["vm"]["b1"]
    assert cell["method"] == "projected" and cell["bound"] == "compute"
    assert cell["ms_per_call"] == pytest.approx(0.2)
    # "box" is an edge device: $87.6 over a year of hours is $0.01/h, plus 10 W at $0.2/kWh = $0.002/h.
    assert box.usd_per_hour(0.2) == pytest.approx(0.012)
    call = Call(0.030, 2e6 * 256, 4e5, "fp32", 256)
    expected = per_thousand(project(call, HERE, target_machine(box)).seconds, 256, 0.012, 10.0)
    got = table["rows"][1]["costs"]["box"]["batch"]
    assert got["usd"] == pytest.approx(expected.usd) and got["wh"] == pytest.approx(expected.wh)
    assert vm.name == "vm"


def test_cheapest_passing_model_is_never_a_failed_one(catalogue) -> None:  # type: ignore[no-untyped-def]
    table = cost_table(POINTS, catalogue, HERE)
    for target in (LOCAL, "vm", "box"):
        assert table["cheapest"][target] == {"b1": "fast", "batch": "fast"}
    # The failed row is kept, and on the frontier of accuracy against cost it is, being cheapest.
    assert [r["key"] for r in table["rows"]][2] == "cheaper_but_failed"
    assert set(table["frontier"][LOCAL]["b1"]) == {"fast", "cheaper_but_failed", "slow"}
    assert table["assumptions"] and table["per"] == 1000


def test_a_point_without_a_batch_size_is_costed_at_batch_1_only() -> None:
    old = point("root", "root", 0.9, 0.5, 40.0)
    del old["metrics"]["latency_p50_batch"]["batch_size"]
    assert set(calls(old)) == {"b1"}
    assert calls(old)["b1"] == Call(0.0005, 2e6, 4e5, "fp32", 1)


@pytest.mark.parametrize(("gflops", "size"), [(100.0, 1024), (15.0, 512), (2.0, 256)])
def test_each_precision_takes_the_largest_product_that_stays_quick(
    monkeypatch: pytest.MonkeyPatch, gflops: float, size: int
) -> None:
    # A kernel of a known rate: an n x n product takes 2 n^3 / rate. At 100 GFLOP/s 1024 takes 21 ms; at
    # 15 GFLOP/s 512 takes 18 ms and 1024 would take 143; at 2 GFLOP/s (a precision without hardware
    # support) 256 takes 17 ms and 512 would take 134.
    monkeypatch.setattr(machine, "_product", lambda precision, n: lambda: n)  # the product answers its size
    monkeypatch.setattr(machine, "_seconds", lambda fn: 2 * fn() ** 3 / (gflops * 1e9))
    rate, n = matmul_gflops("bf16")
    assert n == size and rate == pytest.approx(gflops)
    assert n == MATMUL_SIZES[-1] or 2 * (2 * n) ** 3 / (gflops * 1e9) > CALL_SECONDS  # twice n: too slow
    assert matmul_gflops("bf16", n=128) == (pytest.approx(gflops), 128)  # a stated size is kept


def test_probes_measure_this_machine() -> None:
    # Arithmetic against the FLOPs of the product: a rate too high means the timing did not cover the work
    # (an upper bound no CPU assay runs on reaches: 64 FLOP/cycle x 6 GHz x 256 cores).
    for precision in ("fp32", "bf16", "int8"):
        rate, n = matmul_gflops(precision, n=128)
        assert n == 128 and 0.05 < rate < 64 * 6 * 256
    rate, n = matmul_gflops("fp32")  # sized here
    assert n in MATMUL_SIZES and 0.05 < rate < 64 * 6 * 256
    assert 1e8 < memory_bandwidth(mib=64, repeats=2) < 1e13
    assert base_clock_ghz("processor\t: 0\ncpu MHz\t\t: 2596.124\n") == pytest.approx(2.596124)
    assert base_clock_ghz("no clock here") == 0.0
    assert measure_machine() is measure_machine()  # once per process

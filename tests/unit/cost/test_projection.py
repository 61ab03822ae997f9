"""The projection's arithmetic against figures worked out by hand, and its limiting cases."""

from __future__ import annotations

import pytest

from assay.cost.projection import Call, Machine, per_thousand, project

HERE = Machine(gflops={"fp32": 100.0, "bf16": 250.0, "int8": 400.0}, bandwidth_gb_s=50.0, clock_ghz=2.5)
CPU = Machine(gflops={"fp32": 200.0, "bf16": 1000.0, "int8": 1600.0}, bandwidth_gb_s=20.0, clock_ghz=2.0)
GPU = Machine(
    gflops={"fp32": 8000.0, "bf16": 8000.0, "int8": 100_000.0}, bandwidth_gb_s=300.0, clock_ghz=2.5,
    call_overhead_us=30.0,
)  # fmt: skip


def test_compute_bound_call_scales_by_arithmetic_and_overhead_by_clock() -> None:
    # 1.5e9 FLOP at 100 GFLOP/s = 15 ms of arithmetic; 1e8 bytes at 50 GB/s = 2 ms of reads: compute-bound.
    # Measured 20 ms -> 15 ms roofline + 5 ms overhead. On CPU: 15 x 100/200 = 7.5 ms; 5 x 2.5/2.0 = 6.25 ms.
    p = project(Call(0.020, 1.5e9, 1e8, "fp32", 1), HERE, CPU)
    assert p.bound == "compute"
    assert p.roofline_s == pytest.approx(0.0075)
    assert p.overhead_s == pytest.approx(0.00625)
    assert p.seconds == pytest.approx(0.01375)


def test_memory_bound_call_scales_by_bandwidth() -> None:
    # 1e8 FLOP = 1 ms; 4e8 bytes = 8 ms of reads: memory-bound. Measured 10 ms -> 8 ms + 2 ms overhead.
    # On CPU: 8 x 50/20 = 20 ms; 2 x 2.5/2.0 = 2.5 ms.
    p = project(Call(0.010, 1e8, 4e8, "fp32", 1), HERE, CPU)
    assert p.bound == "memory"
    assert p.seconds == pytest.approx(0.0225)


def test_precision_picks_its_own_rate() -> None:
    # int8: 4e9 OP at 400 GOP/s = 10 ms (measured 10 ms, no overhead); on CPU 4e9 / 1600e9 = 2.5 ms.
    p = project(Call(0.010, 4e9, 1e6, "int8", 8), HERE, CPU)
    assert p.seconds == pytest.approx(0.0025) and p.overhead_s == 0.0
    # A precision the machines do not list computes at their fp32 rate: 1e9 / 100e9 -> 1e9 / 200e9.
    p = project(Call(0.010, 1e9, 1e6, "fp16", 1), HERE, CPU)
    assert p.roofline_s == pytest.approx(0.005)


def test_roofline_part_is_capped_at_the_measured_time() -> None:
    # 3e9 FLOP would take 30 ms at the achieved rate, but the call took 10 ms (the probe underrates this
    # machine for this shape): all 10 ms are roofline, none overhead; on CPU 10 x 100/200 = 5 ms.
    p = project(Call(0.010, 3e9, 1e6, "fp32", 1), HERE, CPU)
    assert p.overhead_s == 0.0 and p.seconds == pytest.approx(0.005)


def test_the_same_machine_gives_back_the_measured_time() -> None:
    for call in (
        Call(0.020, 1.5e9, 1e8, "fp32", 1),
        Call(0.010, 1e8, 4e8, "bf16", 4),
        Call(0.001, 0, 0, "fp32", 1),
    ):
        assert project(call, HERE, HERE).seconds == pytest.approx(call.seconds)


def test_an_accelerator_adds_its_fixed_cost_per_call() -> None:
    # All overhead (no FLOPs, no bytes): 1 ms x 2.5/2.5 + 30 us.
    p = project(Call(0.001, 0.0, 0.0, "fp32", 1), HERE, GPU)
    assert p.seconds == pytest.approx(0.00103) and p.roofline_s == 0.0


def test_cost_per_thousand_by_hand() -> None:
    # 1,000 inferences at 2 ms a call, one each: 2 s busy; at $0.36/h -> $0.0002; at 20 W -> 40 J = 0.0111 Wh.
    c = per_thousand(0.002, 1, usd_per_hour=0.36, watts=20.0)
    assert c.seconds == pytest.approx(2.0)
    assert c.usd == pytest.approx(0.0002)
    assert c.wh == pytest.approx(40 / 3600)
    # At batch 250, 40 ms a call: 4 calls, 0.16 s busy.
    c = per_thousand(0.040, 250, usd_per_hour=0.36, watts=20.0)
    assert c.seconds == pytest.approx(0.16) and c.usd == pytest.approx(0.16 / 3600 * 0.36)

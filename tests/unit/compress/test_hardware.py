"""FLOP counts against a hand count; the peak-ratio table; the implausible-speedup flag."""

from __future__ import annotations

import pytest

from assay.compress.hardware import CROSS_ARCHITECTURE_TOLERANCE, TOLERANCE, flops, peak_ratio, speedup_bound
from assay.compress.search import plausibility_flags
from assay.models import default_spec


def test_flops_of_the_cnn_match_a_hand_count() -> None:
    spec = default_spec("cnn", (1, 28, 28), 10, {"channels": [8, 16], "hidden": 32})
    macs = 28 * 28 * 8 * 1 * 9 + 14 * 14 * 16 * 8 * 9 + (16 * 7 * 7) * 32 + 32 * 10  # 3x3 convs, padding 1
    assert flops(spec, (1, 28, 28)) == 2 * macs


def test_flops_of_the_mlp_match_a_hand_count() -> None:
    spec = default_spec("mlp", (64,), 10, {"hidden": [32, 16]})
    assert flops(spec, (64,)) == 2 * (64 * 32 + 32 * 16 + 16 * 10)


@pytest.mark.parametrize(
    ("precision", "flags", "ratio"),
    [
        ("int8", ["avx2"], 2.0),
        ("int8", ["avx2", "avx512f", "avx512_vnni"], 4.0),
        ("int8", ["avx2", "avx_vnni"], 4.0),
        ("int8", ["amx_int8", "avx512_vnni"], 16.0),
        ("bf16", ["avx2"], 1.0),
        ("bf16", ["avx512_bf16"], 2.0),
        ("fp32", ["amx_int8"], 1.0),
    ],
)
def test_peak_ratio(precision: str, flags: list[str], ratio: float) -> None:
    assert peak_ratio(precision, flags) == ratio


def test_bound_is_never_below_one_and_scales_with_work() -> None:
    fp32 = {"precision": "fp32", "cpu_flags": []}
    assert speedup_bound(flops_reference=100, flops_variant=100, **fp32) == TOLERANCE  # type: ignore[arg-type]
    assert speedup_bound(flops_reference=100, flops_variant=400, **fp32) == CROSS_ARCHITECTURE_TOLERANCE  # type: ignore[arg-type]
    assert (
        speedup_bound(precision="int8", flops_reference=400, flops_variant=100, cpu_flags=["avx2"])
        == 8 * CROSS_ARCHITECTURE_TOLERANCE
    )


def _point(key: str, backend: str, precision: str, latency: float, flops: int = 1000) -> dict[str, object]:
    return {"key": key, "backend": backend, "precision": precision, "flops": flops,
            "metrics": {"latency_p50_b1": {"value": latency}}}  # fmt: skip


def test_int8_faster_than_the_isa_allows_is_flagged() -> None:
    reference = _point("onnx_fp32", "onnxruntime", "fp32", 0.30)
    eager = _point("root", "torch", "fp32", 3.0)  # another runtime: not a reference for an ORT variant
    plausible = _point("int8", "onnxruntime", "int8", 0.15)  # 2x on AVX2: at the bound
    too_fast = _point("int8x", "onnxruntime", "int8", 0.10)  # 3x on AVX2, no VNNI: impossible
    points = [eager, reference, plausible, too_fast]
    assert plausibility_flags(plausible, points, ["avx2"]) == []
    flags = plausibility_flags(too_fast, points, ["avx2"])
    assert len(flags) == 1 and "implausible: 3.0x faster than onnx_fp32" in flags[0]
    assert plausibility_flags(too_fast, points, ["avx2", "avx512_vnni"]) == []  # 4x peak with VNNI


def test_one_reference_per_variant_so_a_slow_reference_does_not_flag() -> None:
    """The bound is against the earliest fp32 point of the runtime (the root) or the same architecture:
    a later, noisily slow fp32 point (here a magnitude-pruned model of the root's size) is no reference."""
    root = {**_point("root", "torch", "fp32", 0.5, flops=1000), "spec": {"w": 1}}
    slow = {**_point("magnitude50", "torch", "fp32", 1.2, flops=1000), "spec": {"w": 1}}
    pruned = {**_point("pruned50", "torch", "fp32", 0.2, flops=500), "spec": {"w": 0.5}}
    points = [root, slow, pruned]
    assert plausibility_flags(pruned, points, ["avx2"]) == []  # 2.5x against the root: at the bound
    quick = {**_point("pruned50x", "torch", "fp32", 0.1, flops=500), "spec": {"w": 0.5}}
    # Same architecture, same format, twice as fast as pruned50: beyond noise, flagged against it.
    assert "2.0x faster than pruned50" in plausibility_flags(quick, [*points, quick], ["avx2"])[0]

"""The matrix products of one SmolLM2-135M decode step at batch 1, on PyTorch's int8 kernel and assay's w8a8.

    python benchmarks/w8a8_kernel.py [--threads 2] [--rows 1] [--repeats 7]

A step multiplies one activation row by 30 layers of seven matrices (q, k, v, o: 576 wide; gate, up,
down: 1,536) and the 49,152 x 576 head; ``30 fused``: the same bytes in four products a layer, q, k, v
and gate, up stacked as assay's w8a8 variant runs them. Each layer's matrices are distinct random int8
tensors, so they stream from memory as a real step's do (134 MB in all; a loop over one matrix would run
from the cache). Rows: ``aten::_weight_int8pack_mm`` (int8 weights, bf16 activations,
:mod:`assay.llm.int8`) and ``assay::w8a8_linear`` (int8 weights times int8 activations in blocks of 32,
:mod:`assay.llm.w8a8`), the best of ``--repeats`` passes, with the bytes of weights read per second,
beside the machine's measured read bandwidth.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from assay.cost.machine import memory_bandwidth
from assay.env import cpu_info
from assay.llm.kernels import load_kernels
from assay.llm.w8a8 import pack

LAYER = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]  # (out, in)
FUSED = [
    (960, 576),
    (576, 576),
    (3072, 576),
    (576, 1536),
]  # q+k+v, o, gate+up, down (FusedW8A8)
HEAD = (49152, 576)


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def timings(matrices: list[tuple[int, int]], rows: int, repeats: int) -> dict[str, float]:
    """Seconds of one pass over ``matrices`` on each kernel (the best of ``repeats``)."""
    weights = [torch.randint(-127, 128, shape, dtype=torch.int8) for shape in matrices]
    scales = [torch.rand(shape[0]) for shape in matrices]
    x = {k: torch.randn(rows, k) for k in {shape[1] for shape in matrices}}
    xb = {k: v.bfloat16() for k, v in x.items()}
    packed = [pack(w) for w in weights]
    bf16_scales = [s.bfloat16() for s in scales]

    def int8pack() -> None:
        for w, s in zip(weights, bf16_scales, strict=True):
            torch.ops.aten._weight_int8pack_mm(xb[w.shape[1]], w, s)

    def w8a8() -> None:
        for w, p, s in zip(weights, packed, scales, strict=True):
            torch.ops.assay.w8a8_linear(x[w.shape[1]], p, s)

    return {
        "_weight_int8pack_mm": best_seconds(int8pack, repeats),
        "assay::w8a8_linear": best_seconds(w8a8, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1, help="activation rows (the batch)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = cpu_info()
    print(f"hardware: {cpu['model']}, {args.threads} threads, flags {' '.join(cpu['flags'])}")
    print(f"memory read bandwidth: {memory_bandwidth() / 1e9:.1f} GB/s (best sum of a 512 MiB buffer)")
    load_kernels()
    torch.manual_seed(0)
    print(f"{'matrices':<10} {'kernel':<22} {'ms':>7} {'GB/s':>6}   ({args.rows} activation rows)")
    for label, matrices in {"30 layers": LAYER * 30, "30 fused": FUSED * 30, "head": [HEAD]}.items():
        size = sum(out * width for out, width in matrices)
        for name, seconds in timings(matrices, args.rows, args.repeats).items():
            print(f"{label:<10} {name:<22} {seconds * 1e3:>7.2f} {size / seconds / 1e9:>6.1f}")


if __name__ == "__main__":
    main()

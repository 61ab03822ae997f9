"""The w8a8 kernel (assay.llm.w8a8) against a float64 reference of its stated arithmetic, on each of its
instruction-set paths (the build for this machine, AVX2, plain C++), and the layer built on it (the model
swap is tested beside the int8 one's, in test_int8.py).

The reference rounds the activations as the kernel says (scale = max|block| / 127 in float32, x / scale
rounded half to even: torch's float32 division and rounding give the same integers as C++'s), takes each
block's integer dot product exactly (float64 holds them: below 2^24) and sums the blocks in float64.
The kernel sums ``nb`` block terms and multiplies twice in float32, so each output is within
``(nb + 2) * 2^-24`` of the sum of its terms' absolute values; the tolerance is twice that. A wrong block
scale, sign, row or packing offset moves an output by a whole term."""

from __future__ import annotations

import platform

import pytest
import torch
from torch import nn

from assay.llm.int8 import quantize_rows
from assay.llm.kernels import load_kernels
from assay.llm.w8a8 import BLOCK, W8A8Linear, pack

X86 = platform.machine() in ("x86_64", "AMD64")
MARCHES = ["native", *(["x86-64-v3", "x86-64"] if X86 else [])]  # this machine's build, AVX2, plain C++


def reference(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's output in float64, and the bound on its float32 rounding (per output)."""
    blocks = x.reshape(x.shape[0], -1, BLOCK)
    d = blocks.abs().amax(-1, keepdim=True) / 127.0
    xq = torch.where(d > 0, torch.round(blocks / torch.where(d > 0, d, 1.0)), 0.0)
    dots = torch.einsum("mbi,nbi->mnb", xq.double(), q.reshape(q.shape[0], -1, BLOCK).double())
    terms = dots * d.double().squeeze(-1)[:, None, :]
    want = terms.sum(-1) * scales.double()
    bound = 2 * (terms.shape[-1] + 2) * 2.0**-24 * terms.abs().sum(-1) * scales.double()
    return want, bound


@pytest.mark.parametrize("march", MARCHES)
@pytest.mark.parametrize(
    ("rows", "width", "out"),
    [(1, 32, 1), (3, 96, 5), (2, 576, 103), (4, 608, 8), (1, 1536, 12)],  # tails of 32, groups of < 4 rows
)
def test_the_kernel_computes_its_stated_arithmetic(march: str, rows: int, width: int, out: int) -> None:
    op = getattr(torch.ops, load_kernels(march)).w8a8_linear
    torch.manual_seed(width + out)
    x = torch.randn(rows, width) * torch.logspace(-2, 1, width)  # blocks of very different scales
    x[0, :BLOCK] = 0.0  # a block of zeros: scale 0, every q 0
    q = torch.randint(-127, 128, (out, width), dtype=torch.int8)
    scales = torch.rand(out) + 0.01
    got = op(x, pack(q), scales).double()
    want, bound = reference(x, q, scales)
    assert got.shape == (rows, out)
    assert bool(((got - want).abs() <= bound).all()), float(((got - want).abs() / bound).max())


def test_pack_lays_each_group_out_front_to_back() -> None:
    q = torch.arange(5 * 96).reshape(5, 96).remainder(251).sub(125).to(torch.int8)
    packed = pack(q)
    assert packed.shape == (2, 4 * 96)
    # row j of a chunk starting at `start` (64 long, then a tail of 32) sits at 4 * start + j * length
    for row in range(5):
        group, j = divmod(row, 4)
        assert torch.equal(packed[group, j * 64 : (j + 1) * 64], q[row, :64])
        assert torch.equal(packed[group, 256 + j * 32 : 256 + (j + 1) * 32], q[row, 64:])
    assert not packed[1, 64:256].any()  # the padding rows of the last group are zero


@pytest.mark.parametrize("bias", [False, True])
def test_a_w8a8_layer_is_the_kernel_on_its_quantized_weights(bias: bool) -> None:
    torch.manual_seed(1)
    linear = nn.Linear(96, 10, bias=bias)
    layer = W8A8Linear(linear)
    x = torch.randn(2, 3, 96)
    q, scales = quantize_rows(linear.weight)
    want, bound = reference(x.reshape(6, 96), q, scales)
    if bias:
        want = want + linear.bias.detach().double()
    got = layer(x).double().reshape(6, 10)
    assert bool(((got - want).abs() <= bound + 2.0**-23 * want.abs()).all())
    with pytest.raises(ValueError, match="multiple of 32"):
        W8A8Linear(nn.Linear(40, 3))


def test_the_op_compiles_and_refuses_a_matrix_it_was_not_packed_for() -> None:
    torch.manual_seed(2)
    layer = W8A8Linear(nn.Linear(64, 8))
    x = torch.randn(3, 64)
    compiled = torch.compile(lambda t: layer(t * 2.0) + 1.0, dynamic=False)
    torch.testing.assert_close(compiled(x), layer(x * 2.0) + 1.0, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="packed must be int8"):
        torch.ops.assay.w8a8_linear(x, layer.weight[:, :128], layer.scales)


class _Siblings(nn.Module):
    """a and b read the block's input; c another tensor; d and f one tensor, changed in place between
    them; e reads the block's input beside a and b, but twice."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a, self.b, self.c, self.d, self.e, self.f = (nn.Linear(64, out) for out in (8, 6, 4, 12, 4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * 1.0
        a, b, c, e = self.a(h), self.b(h), self.c(h + 1.0), self.e(h)
        h2 = h.clone()
        d = self.d(h2)
        h2.mul_(2.0)
        return torch.cat([a, b, c, e, d, self.f(h2), self.e(h2)], dim=-1)


def test_layers_that_read_one_input_are_fused_and_give_the_same_bits() -> None:
    """Only the layers the probe saw read one tensor, unchanged, once each are fused; the outputs are the
    unfused layers' to the bit (each output row is its own weights times the same rounded activations)."""
    from assay.llm.w8a8 import FusedW8A8, W8A8Part, quantize_w8a8

    unfused = quantize_w8a8(_Siblings())
    fused = quantize_w8a8(_Siblings(), probe=lambda m: m(torch.randn(2, 64)))
    assert isinstance(fused.a, W8A8Part) and isinstance(fused.b, W8A8Part)
    assert [type(getattr(fused, n)) for n in "cdef"] == [W8A8Linear] * 4  # alone; changed; twice; changed
    group = fused.get_submodule("fused_a_b")
    assert isinstance(group, FusedW8A8) and group.weight.shape == (2 + 2, 4 * 64)  # 8 + 6 rows, 4 a group
    assert torch.equal(group.weight, torch.cat([unfused.a.weight, unfused.b.weight]))
    x = torch.randn(3, 5, 64) * torch.logspace(-2, 1, 64)
    with torch.no_grad():
        assert torch.equal(fused(x), unfused(x))
        assert group._memo is None  # the product is freed once its last part took it
        # a part called alone, or with another input than its sibling's, computes its own product
        assert torch.equal(fused.b(x), unfused.b(x))
        assert torch.equal(fused.a(x), unfused.a(x)) and torch.equal(fused.b(x + 1), unfused.b(x + 1))


def test_a_language_model_in_w8a8_calls_the_kernel_four_times_a_layer_exported_too() -> None:
    """On the Llama architecture the probe fuses q, k, v and gate, up: one call each and one for o and
    down, the same logits to the bit; torch.export traces the shared product as one call too."""
    from assay.llm import causal
    from assay.llm.w8a8 import FusedW8A8, quantize_w8a8
    from tests.unit.llm.causal_fixtures import tiny_llama

    model = causal.with_precision(tiny_llama(300, seed=0), "w8a8_block32")
    unfused = quantize_w8a8(tiny_llama(300, seed=0))
    layers = model.model.layers
    assert all(isinstance(layer.self_attn.fused_q_proj_k_proj_v_proj, FusedW8A8) for layer in layers)
    assert all(isinstance(layer.mlp.fused_gate_proj_up_proj, FusedW8A8) for layer in layers)
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, unfused(ids).logits)
        program = torch.export.export(model, (ids,), {"use_cache": False}, strict=True)
    calls = [n for n in program.graph.nodes if n.target == torch.ops.assay.w8a8_linear.default]
    assert len(calls) == 4 * len(layers) + 1  # and the head

"""assay's decode attention (assay.llm.attention, decode_attention.cpp) against a float64 reference of its
stated arithmetic on each instruction-set path, and inside a model against transformers' own attention.

The bound: each score is a float32 dot product of ``D`` terms times the scale, off by at most
``(D + 2) * u * scale * sum_d |q[d] k[j, d]|`` (``u = 2^-24``); subtracting the maximum and the
exponential add ``u * |s[j] - max s|`` and two more ``u``. A relative error ``delta`` in every weight moves
the output by at most ``2 * delta * max|v|``, and summing ``n`` weighted values in float32 by
``(n + 2) * u * max|v|``. The tolerance is twice that. A wrong head, KV group, position or mask moves an
output by a whole term."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from assay.llm.kernels import load_kernels
from tests.unit.llm.test_w8a8 import MARCHES

U = 2.0**-24


def reference(q, k, v, mask, scale):  # type: ignore[no-untyped-def]
    """The output in float64, and its bound per (batch, head)."""
    group = q.shape[1] // k.shape[1]
    k64, v64 = k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
    products = q.double().transpose(2, 3) * k64.transpose(2, 3)  # (B, H, D, L)
    scores = products.sum(2) * scale  # (B, H, L)
    seen = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask[:, :, 0].expand_as(scores)
    scores = scores.masked_fill(~seen, -torch.inf)
    weights = torch.softmax(scores, -1).nan_to_num(0.0)  # a head that sees nothing: zeros
    out = (weights[..., None] * v64).sum(2)  # (B, H, D)
    top = scores.amax(-1, keepdim=True)
    delta = (q.shape[3] + 2) * U * scale * products.abs().sum(2) + U * (scores - top).abs() + 2 * U
    delta = delta.masked_fill(~seen, 0.0).amax(-1)
    bound = (2 * delta + (seen.sum(-1) + 2) * U) * v64.abs().amax((2, 3))
    return out[:, None].transpose(1, 2).reshape(q.shape[0], 1, q.shape[1], -1), 2 * bound


@pytest.mark.parametrize("march", MARCHES)
@pytest.mark.parametrize(
    ("batch", "heads", "kv_heads", "positions", "dim", "masked"),
    [
        (1, 9, 3, 40, 64, "causal"),
        (3, 4, 4, 17, 24, "random"),
        (2, 6, 2, 33, 64, "none"),
        (2, 2, 1, 8, 8, "one"),
    ],
)
def test_the_kernel_computes_its_stated_arithmetic(
    march: str, batch: int, heads: int, kv_heads: int, positions: int, dim: int, masked: str
) -> None:
    op = getattr(torch.ops, load_kernels(march)).decode_attention
    torch.manual_seed(positions + dim)
    q, k, v = (
        torch.randn(batch, h, n, dim) * 3
        for h, n in ((heads, 1), (kv_heads, positions), (kv_heads, positions))
    )
    mask = {
        "causal": (torch.arange(positions) < positions - 7).expand(batch, 1, 1, positions),  # unfilled tail
        "random": torch.rand(batch, 1, 1, positions) < 0.6,
        "none": None,
        "one": torch.tensor([True] + [False] * (positions - 1)).reshape(1, 1, 1, -1),  # broadcast batch
    }[masked]
    if masked == "random":
        mask[0] = False  # the first sequence sees nothing: zeros
    got = op(q, k, v, mask, dim**-0.5)
    want, bound = reference(q, k, v, mask, dim**-0.5)
    assert got.shape == (batch, 1, heads, dim)
    error = (got.double() - want).abs().amax(-1)[:, 0]  # (B, H)
    assert bool((error <= bound).all()), float((error / bound).max())
    if masked == "random":
        assert not got[0].any()


class _Ops(TorchDispatchMode):
    """The names of the operators called under it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_a_model_decodes_on_it_as_on_transformers_attention() -> None:
    """A float32 model's step (one query token) runs on the operator, once a layer, its logits within
    rounding of SDPA's; the prefill (several query tokens) goes to SDPA itself: its logits are SDPA's to the
    bit. The attention's own error is a few u of max|v| (above); through two layers and the head the
    logits stay well within 1e-4 of their largest."""
    from assay.llm.attention import register
    from tests.unit.llm.causal_fixtures import tiny_llama

    model = tiny_llama(300, seed=0).eval()
    ids = torch.tensor([[5, 17, 42, 7, 99, 3, 8, 120]])
    runs = {}
    for attention in ("sdpa", register()):
        model.set_attn_implementation(attention)
        with torch.no_grad(), _Ops() as prefill_ops:
            prefill = model(ids, use_cache=True)
        with torch.no_grad(), _Ops() as step_ops:
            step = model(ids[:, -1:] + 1, cache=prefill.past_key_values).logits
        runs[attention] = (prefill.logits, step, prefill_ops.names, step_ops.names)
    (want_prefill, want_step, _, _), (prefill, step, prefill_ops, step_ops) = runs["sdpa"], runs["assay"]
    assert torch.equal(prefill, want_prefill)
    assert "assay.decode_attention" not in prefill_ops
    assert step_ops.count("assay.decode_attention") == len(model.model.layers)
    np.testing.assert_allclose(
        step.numpy(), want_step.numpy(), rtol=0, atol=1e-4 * float(want_step.abs().max())
    )

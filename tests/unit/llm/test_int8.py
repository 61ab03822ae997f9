"""Int8 weight-only layers with bf16 activations (assay.llm.int8) against a float64 reference of the same
arithmetic: ``x`` rounded to bf16 times the int8 weights times their bf16 scales.

Tolerance: the kernel accumulates in float32 and rounds the output to bf16 (8 bits of mantissa), so each
output is within 2^-8 of its own size, plus float32 accumulation error far below that; 2^-7 relative,
and 2^-7 of the largest output absolute, leave a factor of two. A wrong scale, transposition or row is
off by the size of the output itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from assay.llm.int8 import Int8WeightLinear, quantize_int8_weights

TOL = 2.0**-7


@pytest.mark.parametrize("bias", [False, True])
def test_an_int8_layer_computes_the_dequantized_product(bias: bool) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(96, 40, bias=bias)
    layer = Int8WeightLinear(linear)
    assert layer.weight.dtype == torch.int8 and layer.weight.shape == (40, 96)
    assert int(layer.weight.abs().max()) == 127  # each row's largest weight takes the whole range
    x = torch.randn(3, 5, 96)
    got = layer(x).double()
    weights = layer.weight.double() * layer.scales.double()[:, None]
    want = x.bfloat16().double() @ weights.T
    if bias:
        want = want + linear.bias.detach().bfloat16().double()
    assert got.shape == (3, 5, 40)
    torch.testing.assert_close(got, want, rtol=TOL, atol=TOL * float(want.abs().max()))
    # and close to the float layer: rounding to int8 moves a weight by at most half a step, and the bf16
    # scale (within 2^-8 of the step: 8 significant bits) moves a weight of up to 127 steps by 127 * 2^-8 more
    step = (linear.weight.detach().abs().amax(1) / 127).double()
    error = (weights - linear.weight.detach().double()).abs() / step[:, None]
    assert float(error.max()) <= 0.5 + 127 * 2.0**-8 + 1e-6


def test_a_model_gets_int8_linears_an_untied_head_and_bf16_elsewhere() -> None:
    from tests.unit.llm.causal_fixtures import tiny_llama
    from tests.unit.models.test_adapter_hf import tiny_tokenizer

    tokenizer = tiny_tokenizer(max_length=256)
    reference = tiny_llama(len(tokenizer), seed=0, tie=True)
    model = quantize_int8_weights(tiny_llama(len(tokenizer), seed=0, tie=True))
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert isinstance(model.lm_head, Int8WeightLinear) and not model.config.tie_word_embeddings
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    ids = torch.tensor([tokenizer("the cat sat on the mat and it was fun")["input_ids"]])
    with torch.no_grad():
        want, got = reference(ids).logits, model(ids).logits.float()
    # the same model to int8 and bf16 rounding: the logits move by a small part of their spread
    assert float((got - want).abs().max()) < 0.05 * float(want.std())

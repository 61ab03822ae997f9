"""Int8 weight-only layers with bf16 activations (assay.llm.int8) against a float64 reference of the same
arithmetic: ``x`` rounded to bf16 times the int8 weights times their bf16 scales.

Tolerance: the kernel accumulates in float32 and rounds the output to bf16 (8 bits of mantissa), so each
output is within 2^-8 of its own size, plus float32 accumulation error far below that; 2^-7 relative,
and 2^-7 of the largest output absolute, leave a factor of two. A wrong scale, transposition or row is
off by the size of the output itself. The model swap is tested here for both int8 variants (the w8a8
kernel itself in test_w8a8.py)."""

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


@pytest.mark.parametrize("precision", ["int8_weight_only_bf16", "w8a8_block32"])
def test_a_model_gets_quantized_linears_and_an_untied_head(precision: str) -> None:
    """Every linear layer is swapped (the head untied from the embedding and quantized too); the rest is
    bf16 (int8 weights with bf16 activations) or float32 (w8a8: int8 weights and activations)."""
    from assay.llm.w8a8 import W8A8Linear, quantize_w8a8
    from tests.unit.llm.causal_fixtures import tiny_llama
    from tests.unit.models.test_adapter_hf import tiny_tokenizer

    quantize, layer, rest = {
        "int8_weight_only_bf16": (quantize_int8_weights, Int8WeightLinear, torch.bfloat16),
        "w8a8_block32": (quantize_w8a8, W8A8Linear, torch.float32),
    }[precision]
    tokenizer = tiny_tokenizer(max_length=256)
    reference = tiny_llama(len(tokenizer), seed=0, tie=True)
    model = quantize(tiny_llama(len(tokenizer), seed=0, tie=True))
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert isinstance(model.lm_head, layer) and not model.config.tie_word_embeddings
    assert model.model.embed_tokens.weight.dtype == rest
    ids = torch.tensor([tokenizer("the cat sat on the mat and it was fun")["input_ids"]])
    with torch.no_grad():
        want, got = reference(ids).logits, model(ids).logits.float()
    # the same model rounded to int8 (weights; w8a8's activations too: half a step of 1/127 of each row's
    # and block's largest value) and bf16: the logits move by a small part of their spread
    assert float((got - want).abs().max()) < 0.05 * float(want.std())

"""Decoding (assay.llm.decoding): the greedy decoder makes the tokens transformers' own greedy
``generate`` makes, in every cache mode but the compiled one (compiling takes a minute; the benchmark
runs it), the step exported and compiled by AOTInductor included; TTFT, TPOT and ITL are the stated
functions of the step times; the KV-cache bytes are what the cache holds after a prefill; the roofline
is bandwidth over bytes. No timing is asserted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from assay.llm import causal
from assay.llm.decoding import (
    DecodeTiming,
    GreedyDecoder,
    Roofline,
    kv_cache_bytes,
    weight_bytes_read,
)
from tests.unit.llm.causal_fixtures import tiny_llama
from tests.unit.models.test_adapter_hf import tiny_tokenizer


def language_model(precision: str = "fp32", tie: bool = False) -> causal.LanguageModel:
    tokenizer = tiny_tokenizer(max_length=256)
    model = causal.with_precision(tiny_llama(len(tokenizer), seed=0, tie=tie), precision)
    return causal.LanguageModel(model, tokenizer, {"precision": precision, "spec": {"context_length": 256}})


@pytest.mark.parametrize("attention", ["sdpa", "eager", "assay"])
@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize("precision", ["fp32", "int8_weight_only_bf16", "w8a8_block32"])
def test_the_decoder_makes_the_tokens_greedy_generate_makes(
    mode: str, precision: str, attention: str
) -> None:
    """Whichever attention the decoder runs, its tokens are those of generate with PyTorch's SDPA."""
    assert_generate_tokens(mode, precision, attention)


@pytest.mark.parametrize(("precision", "attention"), [("fp32", "eager"), ("w8a8_block32", "assay")])
def test_the_aot_compiled_step_makes_the_tokens_greedy_generate_makes(precision: str, attention: str) -> None:
    """The exported step (about 10 s of AOTInductor compilation each), through aten alone and through
    assay's own ops (the fused w8a8 products and the decode attention): its cache is the one the prefill
    wrote, and its position counter follows the steps."""
    decoder, timing = assert_generate_tokens("aot", precision, attention)
    # each step writes its own position: the prompt's and every step's but the last token's rows are
    # filled, the rest of the static cache is not (a step stuck at one position fills one row)
    keys = decoder._static[2].layers[0].keys  # (batch, heads, max_context, head_dim)
    filled = keys.abs().sum(dim=(0, 1, 3)) > 0
    written = timing.prompt_tokens + timing.tokens - 1
    assert filled[:written].all() and not filled[written:].any()


def assert_generate_tokens(mode: str, precision: str, attention: str) -> tuple[GreedyDecoder, DecodeTiming]:
    lm = language_model(precision)
    prompts = [
        lm.tokenizer("the cat sat on the mat")["input_ids"],
        lm.tokenizer("a very good film and")["input_ids"],
    ]
    width = min(len(p) for p in prompts)
    prompts = [p[:width] for p in prompts]
    decoder = GreedyDecoder(lm, mode, max_context=64, attention=attention)
    decoder.run(prompts, 30)  # a static cache is reset between runs, not filled on from the last
    timing = decoder.run(prompts, 12)
    assert lm.model.config._attn_implementation == attention
    lm.model.set_attn_implementation("sdpa")
    with torch.no_grad():
        want = lm.model.generate(
            torch.tensor(prompts), attention_mask=torch.ones(2, width, dtype=torch.long), do_sample=False,
            max_new_tokens=12, min_new_tokens=12, pad_token_id=0,
        )[:, width:]  # fmt: skip
    assert timing.generated is not None
    np.testing.assert_array_equal(timing.generated, want.numpy())
    assert timing.batch == 2 and timing.tokens == 12 and len(timing.itl) == 11
    return decoder, timing


def test_the_timing_figures_are_the_stated_functions_of_the_steps() -> None:
    itl = np.array([0.02, 0.03, 0.025, 0.5])
    t = DecodeTiming(prompt_tokens=8, ttft=0.1, itl=itl, batch=4)
    d = t.to_dict()
    assert d["tpot_ms"] == pytest.approx(1e3 * itl.mean())
    assert d["itl_p99_ms"] == pytest.approx(1e3 * np.percentile(itl, 99))
    assert d["tokens_per_second"] == pytest.approx(4 / itl.mean())
    line = Roofline(bytes_per_token=10**8, bandwidth=2e10, tokens_per_second=100.0)
    assert line.limit == pytest.approx(200.0) and line.share == pytest.approx(0.5)


@pytest.mark.parametrize("precision", ["fp32", "int8_weight_only_bf16"])
def test_the_kv_cache_bytes_are_what_the_cache_holds(precision: str) -> None:
    lm = language_model(precision)
    ids = torch.tensor([lm.tokenizer("the cat sat on the mat and it was fun")["input_ids"]])
    with torch.no_grad():
        cache = lm.model(input_ids=ids, use_cache=True).past_key_values
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert kv_cache_bytes(lm, ids.shape[1]) == held


def test_a_step_reads_one_row_of_an_untied_embedding_and_all_of_a_tied_one() -> None:
    tied = language_model("fp32", tie=True).model
    table = tied.model.embed_tokens.weight
    assert weight_bytes_read(tied) == causal.weight_bytes(tied)  # the head reads the whole table
    untied = language_model("fp32", tie=False).model
    embedding = untied.model.embed_tokens.weight
    assert weight_bytes_read(untied) == causal.weight_bytes(untied) - embedding.nbytes + embedding[0].nbytes
    assert table.nbytes == embedding.nbytes


def test_an_fp8_kv_cache_holds_a_byte_a_value_within_e4m3s_rounding() -> None:
    """The fp8 cache (transformers' QuantizedCache, fp8 backend) on the tiny llama: the first token is the
    full cache's (the prefill attends to its keys unquantized), the cache holds one byte a value, as
    kv_cache_bytes says, and each stored value is the full cache's within e4m3's rounding: half a unit in
    the last of 3 mantissa bits (2^-4 of the value) for normal numbers, half the subnormal step
    (2^-10 of the scale) below them."""
    lm = language_model("fp32")
    prompt = [lm.tokenizer("the cat sat on the mat and it was")["input_ids"]]
    fp8 = GreedyDecoder(lm, "dynamic", max_context=64, kv="fp8")
    full = GreedyDecoder(lm, "dynamic", max_context=64)
    got, want = fp8.run(prompt, 6).generated, full.run(prompt, 6).generated
    assert got is not None and want is not None and got[0, 0] == want[0, 0]

    ids = torch.tensor(prompt)
    cache = fp8._cache(1)
    with torch.no_grad():
        lm.model(input_ids=ids, cache=cache, use_cache=True)
        exact = lm.model(input_ids=ids, use_cache=True).past_key_values
    stored = 0
    for layer, reference in zip(cache.layers, exact.layers, strict=True):
        for (quantized, scale), values in ((layer._quantized_keys, reference.keys),
                                           (layer._quantized_values, reference.values)):  # fmt: skip
            assert quantized.dtype == torch.float8_e4m3fn
            stored += quantized.nbytes
            error = (quantized.float() * scale - values).abs()
            # the float32 product that dequantizes adds 2^-24 of the value at most: 2^-20 covers it
            assert bool((error <= values.abs() * (2**-4 + 2**-20) + scale * 2**-10).all())
    assert stored == kv_cache_bytes(lm, ids.shape[1], kv="fp8") == kv_cache_bytes(lm, ids.shape[1]) // 4
    with pytest.raises(ValueError, match="fp8 in dynamic mode only"):
        GreedyDecoder(lm, "static", kv="fp8")

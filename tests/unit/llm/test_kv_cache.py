"""Scoring through an fp8 KV cache (assay.llm.kv_cache) on a tiny random Llama: one forward pass over the
tokens after the prompt gives the logits that decoding them one token a step through transformers'
``QuantizedCache(backend="fp8")`` gives; the prompt's own logits are the full model's, and the later ones
are not (the cache is in the path). Documents, multiple-choice items and a variant's name follow it.

Tolerance: the one-pass and the stepwise logits differ only by float32 rounding of the same sums taken
in another order (a hidden size of 32, two layers), so 1e-5 of the logits' scale; the fp8 cache itself
moves them by about 1e-3 (e4m3 keeps 3 mantissa bits), far above that."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from assay.errors import UsageError
from assay.llm import causal
from assay.llm.kv_cache import cached_logits, new_cache, prompt_tokens
from assay.llm.perplexity import score_documents
from assay.llm.tasks import Item, Task, score_task
from tests.unit.llm.causal_fixtures import tiny_llama
from tests.unit.models.test_adapter_hf import TEXTS, tiny_tokenizer

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, object]:
    tokenizer = tiny_tokenizer(max_length=256)
    return tiny_llama(len(tokenizer), seed=0), tokenizer


def stepwise_logits(model: torch.nn.Module, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    """Decoding as a server does: the prompt as a prefill, then one token a step through the fp8 cache."""
    cache = new_cache(model.config, "fp8")
    with torch.no_grad():
        rows = [model(input_ids=ids[:, :prompt], cache=cache, use_cache=True).logits]
        for t in range(prompt, ids.shape[1]):
            rows.append(model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True).logits)
    return torch.cat(rows, dim=1)


def test_one_pass_through_the_fp8_cache_gives_the_logits_of_decoding_a_token_a_step(setup) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = setup
    ids = torch.tensor([tokenizer(TEXTS[5])["input_ids"]])
    prompt = 6
    with torch.no_grad():
        got, full = cached_logits(model, ids, "fp8", prompt), model(input_ids=ids).logits
    want = stepwise_logits(model, ids, prompt)
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= TOLERANCE * scale
    assert float((got[:, :prompt] - full[:, :prompt]).abs().max()) <= TOLERANCE * scale  # the prefill's own
    assert float((got[:, prompt:] - full[:, prompt:]).abs().max()) > 100 * TOLERANCE * scale  # quantized
    with torch.no_grad():  # the full cache is one forward pass
        assert torch.equal(cached_logits(model, ids, "model", prompt), full)


def test_documents_score_as_they_decode_their_first_half_as_the_prompt(setup) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = setup
    texts = [t for t in TEXTS if len(tokenizer(t)["input_ids"]) >= 4]
    fp8 = score_documents(model, tokenizer, texts, max_length=128, kv="fp8")
    full = score_documents(model, tokenizer, texts, max_length=128)
    for i, text in enumerate(texts):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        logits = stepwise_logits(model, ids, prompt_tokens(ids.shape[1]))[0, :-1]
        nll = -float(torch.log_softmax(logits.double(), -1).gather(1, ids[0, 1:, None]).sum())
        assert fp8.nll[i] == pytest.approx(nll, rel=TOLERANCE)
    assert fp8.tokens.tolist() == full.tokens.tolist()  # every token scored once, as the full cache scores
    assert not np.allclose(fp8.nll, full.nll, rtol=1e-6)
    # A document past the window goes in windows, each decoded through its own cache: every token once.
    long = " ".join(TEXTS[3:6] * 3)
    windowed = score_documents(model, tokenizer, [long], max_length=24, stride=12, kv="fp8")
    assert windowed.tokens[0] == len(tokenizer(long)["input_ids"]) - 1
    reference = score_documents(model, tokenizer, [long], max_length=24, stride=12)
    assert windowed.nll[0] != reference.nll[0]
    assert windowed.nll[0] == pytest.approx(reference.nll[0], rel=0.01)  # e4m3 moves a log-prob ~1e-3


def test_a_choice_attends_to_its_context_through_the_fp8_cache(setup) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = setup
    task = Task("t", (Item("q", "the cat sat on the", (" mat and it was good", " dog and the plot"), 0),))
    got = score_task(model, tokenizer, task, kv="fp8").logits[0]
    context_ids = tokenizer("the cat sat on the")["input_ids"]
    context = len(context_ids)
    for k, choice in enumerate(task.items[0].choices):
        # this tokenizer ends every text with [SEP], so the choice's own tokens follow the context's
        ids = torch.tensor([context_ids + tokenizer(choice, add_special_tokens=False)["input_ids"]])
        logits = stepwise_logits(model, ids, context)[0, :-1]
        picked = torch.log_softmax(logits.double(), -1).gather(1, ids[0, 1:, None])[context - 1 :]
        assert got[k] == pytest.approx(float(picked.sum()), rel=TOLERANCE)
    assert not np.allclose(got, score_task(model, tokenizer, task).logits[0], rtol=1e-6)


def test_a_variant_is_named_by_its_precision_and_its_cache() -> None:
    for name, parsed in [("kv_fp8", ("fp32", "fp8")), ("bf16", ("bf16", "model")),
                         ("int8_weight_only_bf16+kv_fp8", ("int8_weight_only_bf16", "fp8"))]:  # fmt: skip
        assert causal.parse_variant(name) == parsed and causal.variant_name(*parsed) == name
    for bad, match in [("int3", "Unknown variant 'int3'"), ("bf16+int8_dynamic", "Unknown variant"),
                       ("gguf_q4_0+kv_fp8", "llama.cpp")]:  # fmt: skip
        with pytest.raises(UsageError, match=match):
            causal.parse_variant(bad)

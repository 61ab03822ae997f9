"""The KV cache a language model decodes with, and scoring through it.

A variant's ``kv`` says how the cache keeps keys and values: ``model``, as the model computes them, or
``fp8``, in 8-bit floating point by transformers' own ``QuantizedCache(backend="fp8")`` (e4m3, one scale
per layer for keys and one for values, set by the prefill; later values past it saturate at e4m3's
largest). Decoding (:mod:`assay.llm.decoding`), generation (:mod:`assay.llm.generation`) and scoring
(:mod:`assay.llm.perplexity`, :mod:`assay.llm.tasks`) all take their cache from :func:`new_cache`, so a
variant is gated on the numbers it decodes with.

Scoring through an fp8 cache follows decoding exactly. The prompt runs as a prefill, attending to its own
keys unquantized, and sets the scales; every later token attends to the dequantized cache, its own key
included (the cache quantizes a token's key before returning it). Since quantizing with a fixed scale is
elementwise, the tokens after the prompt can go in one forward pass: under the causal mask, token t sees
the dequantized keys 0..t, as it would decoding one token a step (a test checks the two agree). A
document's prompt is its first half, up to :data:`PROMPT_TOKENS`; a multiple-choice item's is its
context, as in serving.

Example:
    >>> prompt_tokens(10), prompt_tokens(200)
    (5, 32)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

KV_PRECISIONS = ("model", "fp8")
PROMPT_TOKENS = 32  # a scored document's prefill, at most: the decode benchmark's prompt length


def check_kv(kv: str) -> str:
    if kv not in KV_PRECISIONS:
        raise ValueError(f"kv {kv!r}: one of {', '.join(KV_PRECISIONS)}")
    return kv


def new_cache(config: Any, kv: str = "model") -> Any:
    """An empty growing cache for a model of ``config``: transformers' ``DynamicCache``, or its
    ``QuantizedCache`` with the fp8 backend."""
    from transformers import DynamicCache, QuantizedCache

    if check_kv(kv) == "fp8":
        return QuantizedCache(backend="fp8", config=config)
    return DynamicCache(config=config)


def prompt_tokens(length: int) -> int:
    """How many of a scored document's ``length`` tokens run as its prompt: half, up to
    :data:`PROMPT_TOKENS`, so at least half of every document attends to the cache."""
    return max(1, min(PROMPT_TOKENS, length // 2))


def cached_logits(model: nn.Module, ids: torch.Tensor, kv: str, prompt: int) -> torch.Tensor:
    """The logits of every position of ``ids`` (``(1, L)``), decoded through a ``kv`` cache: the first
    ``prompt`` tokens as a prefill, the rest attending to the cache. With ``kv="model"`` that is one
    forward pass; in an fp8 cache, the rest attend to the quantized keys and values."""
    if check_kv(kv) == "model" or prompt >= ids.shape[1]:
        return model(input_ids=ids).logits
    cache = new_cache(model.config, kv)
    head = model(input_ids=ids[:, :prompt], cache=cache, use_cache=True).logits
    positions = torch.arange(prompt, ids.shape[1])
    tail = model(input_ids=ids[:, prompt:], cache=cache, use_cache=True, cache_position=positions).logits
    return torch.cat([head, tail], dim=1)

"""A decode step's attention on assay's own operator (``torch.ops.assay.decode_attention``,
``decode_attention.cpp``), as an attention implementation transformers' models take by name.

A step of a decoder attends one new token per sequence to its KV cache: a few thousand multiply-adds a
head. Compiled by inductor, transformers' ``eager`` attention became a reduction loop that recomputed the
query's rotary embedding for every key position (about 0.7 ms of a 6 ms SmolLM2-135M step), and its
``sdpa`` ran no faster (docs/llm.md). The operator is opaque to the compiler, so the rotated query is
computed once, and it reads only the positions the mask lets a head see. Everything else (a prefill,
bf16, training with dropout, masks it was not made for) goes to PyTorch's SDPA as transformers calls it,
with the same boolean masks.

Example:
    >>> from assay.llm.attention import register
    >>> register()
    'assay'
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from assay.llm.kernels import load_kernels

NAME = "assay"


def decode_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: query (batch, heads, 1, head_dim) float32 over keys and values
    (batch, kv_heads, positions, head_dim) on assay's operator; anything else on SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    step = (
        query.shape[2] == 1
        and query.dtype == key.dtype == value.dtype == torch.float32
        and not (dropout and module.training)
        and (attention_mask is None or (attention_mask.dtype == torch.bool and attention_mask.dim() == 4))
        and all(kwargs.get(extra) is None for extra in ("softcap", "s_aux", "position_bias"))
    )
    if not step:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    return torch.ops.assay.decode_attention(query, key, value, attention_mask, scale), None


def register() -> str:
    """Build the operator (once a machine) and register it with transformers as ``"assay"``, with SDPA's
    boolean masks; the name, for ``model.set_attn_implementation``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    load_kernels()
    AttentionInterface.register(NAME, decode_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME

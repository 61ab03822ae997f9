"""A tiny random Llama saved as ``save_pretrained`` writes a causal LM, with a tokenizer and a chat
template: what the language-model tests import and gate without a network."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

from assay.models.adapters import hf
from tests.unit.models.test_adapter_hf import tiny_tokenizer

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


def tiny_llama(vocabulary: int, seed: int, *, layers: int = 2, tie: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocabulary, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=tie,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def save_tiny_llama(folder: Path, seed: int = 0, *, tie: bool = False) -> LlamaForCausalLM:
    """The model and its tokenizer (with a chat template) in ``folder``."""
    tokenizer = tiny_tokenizer(max_length=256)
    tokenizer.chat_template = CHAT_TEMPLATE
    model = tiny_llama(len(tokenizer), seed, tie=tie)
    with hf.offline():
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    return model


def tiny_mixtral(vocabulary: int, seed: int) -> MixtralForCausalLM:
    """A mixture of experts of the same size: 2 layers routing each token to 2 of 4 experts."""
    torch.manual_seed(seed)
    config = MixtralConfig(
        vocab_size=vocabulary, hidden_size=32, intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_local_experts=4,
        num_experts_per_tok=2,
    )  # fmt: skip
    return MixtralForCausalLM(config).eval()


def save_tiny_mixtral(folder: Path, seed: int = 0) -> MixtralForCausalLM:
    """:func:`tiny_mixtral` and its tokenizer (with a chat template) in ``folder``."""
    tokenizer = tiny_tokenizer(max_length=256)
    tokenizer.chat_template = CHAT_TEMPLATE
    model = tiny_mixtral(len(tokenizer), seed)
    with hf.offline():
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    return model

"""Int8 weight-only linear layers with bf16 activations, on PyTorch's own CPU kernel for them.

A decode step at batch 1 multiplies one activation row by every weight matrix: it is bound by the bytes
of weights it reads. int8 weights read a quarter of float32's. torchao's ``Int8WeightOnlyConfig`` keeps
float32 activations and, on a CPU in torchao 0.18, dequantizes in the matmul, which measured slower than
float32 itself (see docs/llm.md). PyTorch has a CPU kernel made for this case,
``aten::_weight_int8pack_mm`` (int8 weights with one scale per output channel times bf16 activations; the
kernel gpt-fast's int8 path runs), which reads the int8 weights once at close to the memory bandwidth. This
module swaps every ``nn.Linear`` of a model for :class:`Int8WeightLinear` over that kernel and puts the
rest of the model (embeddings, norms, the KV cache) in bf16.

Quantization is symmetric per output channel: ``scale = max|w| / 127``, ``q = round(w / scale)``. An
output tied to the input embedding (``tie_word_embeddings``) is untied: the head becomes int8, the
embedding table stays bf16 and only one row of it is read a token.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row: ``(q, scale)`` with ``weight ~= q * scale[:, None]`` (float32)."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127.0
    return torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


class Int8WeightLinear(nn.Module):
    """``y = x @ (q * scale).T + bias`` with ``q`` int8 (out, in) and one bf16 scale per output."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight, scale = quantize_rows(linear.weight)
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scale.to(torch.bfloat16))
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16))
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.scales)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights, bf16 scales"


def quantize_int8_weights(model: nn.Module) -> nn.Module:
    """``model`` with every linear layer int8 (:class:`Int8WeightLinear`) and the rest in bf16, in place."""
    return replace_linears(model, Int8WeightLinear).to(torch.bfloat16).eval()


def replace_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module | None]) -> nn.Module:
    """``model`` with each ``nn.Linear`` replaced by ``make(linear)`` (kept where that is None), in place.

    An output head tied to the input embedding (``tie_word_embeddings``) is untied first: the head gets
    its own quantized weights, and the embedding table, of which a step reads one row, keeps its own."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "tie_word_embeddings", False):
        config.tie_word_embeddings = False
    _swap(model, make)
    return model


def _swap(module: nn.Module, make: Callable[[nn.Linear], nn.Module | None]) -> None:
    for name, child in module.named_children():
        replacement = make(child) if isinstance(child, nn.Linear) else None
        if replacement is not None:
            setattr(module, name, replacement)
        else:
            _swap(child, make)

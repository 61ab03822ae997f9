"""llama.cpp's GGUF quantization types as variants gated for quality: every linear and embedding weight
rounded through the type's reference quantizer and back.

The ``gguf`` package (llama.cpp's own Python library) implements the reference quantizers of the legacy
block types: Q8_0, Q5_1, Q5_0, Q4_1 and Q4_0, blocks of 32 weights with a float16 scale (and a minimum
for the ``_1`` types). A weight round-tripped through one holds exactly the values llama.cpp would
compute with, so the paired gate measures what the type costs in quality. The model then runs in float32
in assay: its speed is llama.cpp's, not assay's, so the search leaves these variants untimed and reports
their weight bytes as the type stores them (:func:`stored_bytes`). ``llama-quantize``'s own mixes keep a
few tensors (an untied output head) at a higher type; here every weight takes the one type, so a gate
passed here is, if anything, passed with less to spare.

Example:
    >>> GGUF_PRECISIONS[0]
    'gguf_q8_0'
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

TYPES = {
    "gguf_q8_0": "Q8_0",
    "gguf_q5_1": "Q5_1",
    "gguf_q5_0": "Q5_0",
    "gguf_q4_1": "Q4_1",
    "gguf_q4_0": "Q4_0",
}
GGUF_PRECISIONS = tuple(TYPES)


def _rounded(module: nn.Module) -> list[torch.Tensor]:
    """The weights a type rounds: linear and embedding weights whose rows hold whole blocks, once each
    (a tied head is its embedding)."""
    seen: set[int] = set()
    out = []
    for m in module.modules():
        if (
            isinstance(m, nn.Linear | nn.Embedding)
            and m.weight.shape[-1] % 32 == 0
            and id(m.weight) not in seen
        ):
            seen.add(id(m.weight))
            out.append(m.weight)
    return out


@torch.no_grad()
def round_trip(model: nn.Module, precision: str) -> nn.Module:
    """``model`` (float32) with its weights rounded through the GGUF type of ``precision``, in place."""
    from gguf import GGMLQuantizationType, quants

    qtype = GGMLQuantizationType[TYPES[precision]]
    for weight in _rounded(model):
        w = weight.detach().cpu().numpy().astype(np.float32)
        weight.copy_(torch.from_numpy(quants.dequantize(quants.quantize(w, qtype), qtype)))
    return model.eval()


def stored_bytes(model: nn.Module, precision: str) -> int:
    """Bytes of the weights as the type stores them: the rounded ones at the type's bytes per block, the
    rest (norms, odd shapes) as they are held."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[TYPES[precision]]]
    rounded = {id(w) for w in _rounded(model)}
    total, seen = 0, set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel() * size // block if id(p) in rounded else p.numel() * p.element_size()
    return total

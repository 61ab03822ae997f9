"""llama.cpp's GGUF block types as variants: the rounding against Q8_0 and Q4_0 written out from
ggml's reference quantizers, the bytes against the types' block sizes, and the variant loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("transformers")

from assay.llm.causal import with_precision
from assay.llm.gguf_types import GGUF_PRECISIONS, round_trip, stored_bytes
from tests.unit.llm.causal_fixtures import tiny_llama


def q8_0(x: np.ndarray) -> np.ndarray:
    """ggml's quantize_row_q8_0_ref and back: per block of 32, d = max|x| / 127 (stored as float16),
    q = round(x / d)."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / 127
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.round(blocks * inv)  # ggml rounds half away from zero; ties do not occur in random floats
    return (q * d.astype(np.float16).astype(np.float32)).reshape(x.shape)


def q4_0(x: np.ndarray) -> np.ndarray:
    """ggml's quantize_row_q4_0_ref and back: d = (the signed value of largest magnitude) / -8,
    q = min(15, trunc(x / d + 8.5)), x' = (q - 8) * d."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    idx = np.abs(blocks).argmax(axis=1)
    d = (blocks[np.arange(len(blocks)), idx] / -8)[:, None]
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(15, np.trunc(blocks * inv + 8.5))
    return ((q - 8) * d.astype(np.float16).astype(np.float32)).reshape(x.shape)


@pytest.mark.parametrize(("precision", "reference"), [("gguf_q8_0", q8_0), ("gguf_q4_0", q4_0)])
def test_weights_round_trip_as_ggml_reference_quantizers_compute(precision: str, reference) -> None:  # type: ignore[no-untyped-def]
    model = tiny_llama(96, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    round_trip(model, precision)
    after = dict(model.named_parameters())
    proj = "model.layers.0.self_attn.q_proj.weight"
    want = reference(before[proj].numpy())
    # float16 scales times small integers: the products agree to float32 rounding
    np.testing.assert_allclose(after[proj].detach().numpy(), want, rtol=1e-6, atol=1e-7)
    assert not torch.equal(after[proj], before[proj])
    norm = "model.layers.0.input_layernorm.weight"
    assert torch.equal(after[norm], before[norm])  # norms stay as they are


def test_stored_bytes_are_the_types_block_sizes() -> None:
    model = tiny_llama(96, seed=0)
    rounded = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear | torch.nn.Embedding)
    )
    rest = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    # Q8_0: 34 bytes per 32 weights (a float16 scale and 32 int8); Q4_0: 18 (the scale, 16 bytes of nibbles)
    assert stored_bytes(model, "gguf_q8_0") == rounded * 34 // 32 + rest * 4
    assert stored_bytes(model, "gguf_q4_0") == rounded * 18 // 32 + rest * 4


def test_every_type_loads_as_a_precision_and_coarser_types_move_the_logits_more() -> None:
    ids = torch.arange(5, 37)[None]
    base = tiny_llama(96, seed=0)
    with torch.inference_mode():
        want = base(input_ids=ids).logits
        errors = {}
        for precision in GGUF_PRECISIONS:
            got = with_precision(tiny_llama(96, seed=0), precision)(input_ids=ids).logits
            errors[precision] = float((got - want).abs().mean())
    assert errors["gguf_q8_0"] < errors["gguf_q5_0"] < errors["gguf_q4_0"]
    assert errors["gguf_q5_1"] < errors["gguf_q4_1"]


def test_the_smollm2_files_own_tensors_are_fixed_points_of_their_types() -> None:
    """llama.cpp wrote SmolLM2's file: its Q4_1 and Q8_0 tensors, dequantized and rounded again through
    the same type, come back bit for bit, so the rounding here is llama.cpp's."""
    from gguf import GGUFReader, quants

    from assay.errors import UsageError
    from assay.llm.causal import packaged_smollm2

    try:
        path = packaged_smollm2()
    except UsageError as e:
        pytest.skip(str(e))
    seen = set()
    for tensor in GGUFReader(str(path)).tensors:
        qtype = tensor.tensor_type
        if qtype.name not in ("Q4_1", "Q8_0") or qtype.name in seen:
            continue
        seen.add(qtype.name)
        w = quants.dequantize(tensor.data, qtype).astype(np.float32)
        np.testing.assert_array_equal(quants.dequantize(quants.quantize(w, qtype), qtype), w)
    assert seen == {"Q4_1", "Q8_0"}

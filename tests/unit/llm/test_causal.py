"""Causal LMs staged and loaded (assay.llm.causal): a tiny random Llama saved by transformers comes back
with the same logits, its tokenizer and chat template; folders assay must not read are refused with the
file and the reason; each precision loads, and its weight bytes are what its tensors hold.

Tolerance: the staged fp32 model is the same weights in the same class, so its logits equal the
original's to float32 rounding (U32 relative, a few units). bf16 and int8 change the weights on purpose:
those are checked for what they store, not against the fp32 logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from assay.errors import DataError, UsageError
from assay.llm import causal
from tests.unit.llm.causal_fixtures import CHAT_TEMPLATE, save_tiny_llama
from tests.unit.models.test_adapter_hf import tiny_classifier
from tests.unit.tolerances import U32


def staged(source: Path, tmp_path: Path) -> tuple[Path, dict]:
    folder = tmp_path / "staged"
    return folder, causal.stage(source, folder)


@pytest.mark.parametrize("tie", [False, True])
def test_a_saved_causal_lm_comes_back_with_its_logits_tokenizer_and_template(
    tmp_path: Path, tie: bool
) -> None:
    original = save_tiny_llama(tmp_path / "llama", tie=tie)
    folder, fields = staged(tmp_path / "llama", tmp_path)
    assert fields["architecture"] == "LlamaForCausalLM"
    assert fields["spec"] == {
        "arch": "causal_lm", "task": "causal-lm", "architecture": "LlamaForCausalLM", "model_type": "llama",
        "layers": 2, "hidden_size": 32, "attention_heads": 4, "kv_heads": 2,
        "vocab_size": original.config.vocab_size, "context_length": 256,
    }  # fmt: skip
    model = causal.load(folder, fields)
    assert model.chat_template == CHAT_TEMPLATE and fields["tokenizer"]["chat_template_sha256"]
    ids = model.tokenizer("the cat sat on the mat", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want, got = original(ids).logits.numpy(), model.model(ids).logits.numpy()
    np.testing.assert_allclose(got, want, rtol=8 * U32, atol=8 * U32 * np.abs(want).max())
    unique = {p.data_ptr(): p.numel() for p in original.parameters()}
    assert causal.weight_bytes(model.model) == 4 * sum(unique.values())  # tied weights counted once
    assert fields["tokenizer"]["files"].keys() >= {"tokenizer.json", "tokenizer_config.json"}


def test_the_precisions_store_their_weights_in_fewer_bytes(tmp_path: Path) -> None:
    save_tiny_llama(tmp_path / "llama")
    folder, fields = staged(tmp_path / "llama", tmp_path)
    fp32 = causal.load(folder, fields)
    linear = sum(m.weight.numel() for m in fp32.model.modules() if isinstance(m, torch.nn.Linear))
    total = causal.weight_bytes(fp32.model)
    bf16 = causal.load(folder, {**fields, "precision": "bf16"})
    assert causal.weight_bytes(bf16.model) == total // 2
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    int8 = causal.load(folder, {**fields, "precision": "int8_weight_only"})
    saved = causal.weight_bytes(fp32.model) - causal.weight_bytes(int8.model)
    # each linear weight from 4 bytes to 1, plus a scale and a zero point per output row (at most 8 bytes)
    rows = sum(m.weight.shape[0] for m in fp32.model.modules() if isinstance(m, torch.nn.Linear))
    assert 3 * linear - 8 * rows <= saved < 3 * linear
    ids = fp32.tokenizer("the cat sat", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(int8.model(ids).logits).all()
    with pytest.raises(UsageError, match="Unknown precision 'int3'"):
        causal.load(folder, {**fields, "precision": "int3"})


def _edit_config(folder: Path, **changes: object) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"auto_map": {"AutoModelForCausalLM": "modeling.Evil"}}, "remote code"),
        ({"architectures": ["LlamaForEvil"]}, "not a causal language model"),
        (
            {"architectures": ["MistralForCausalLM"]},
            "not a class transformers .* provides for model_type 'llama'",
        ),
        ({"architectures": ["LlamaForCausalLM", "LlamaModel"]}, "exactly one"),
    ],
)
def test_folders_assay_must_not_read_are_refused(tmp_path: Path, change: dict, match: str) -> None:
    save_tiny_llama(tmp_path / "llama")
    _edit_config(tmp_path / "llama", **change)
    with pytest.raises(DataError, match=match):
        staged(tmp_path / "llama", tmp_path)
    assert not (tmp_path / "staged" / "model.safetensors").exists()


def test_a_classifier_or_a_folder_without_tokenizer_is_refused_with_what_to_do(tmp_path: Path) -> None:
    tiny_classifier(tmp_path / "bert")
    with pytest.raises(DataError, match=r"not a causal language model.*assay models import"):
        staged(tmp_path / "bert", tmp_path)
    save_tiny_llama(tmp_path / "llama")
    (tmp_path / "llama" / "tokenizer.json").unlink()
    with pytest.raises(DataError, match="missing tokenizer"):
        causal.stage(tmp_path / "llama", tmp_path / "other")
    with pytest.raises(DataError, match="no such file"):
        causal.stage(tmp_path / "absent.gguf", tmp_path / "third")


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(DataError, match=r"model\.gguf: not a readable GGUF file"):
        causal.stage(bad, tmp_path / "staged")
    assert not (tmp_path / "staged").exists()

"""Per-document NLL of a causal LM on a tiny random Llama (built here, no network), against transformers'
own loss: a document within the context equals ``loss * (n - 1)`` of ``model(ids, labels=ids)``; a longer
one, scored in sliding windows, equals the windowed loop of Hugging Face's perplexity guide (labels
masked with -100 so each token counts once). Perplexity and bits per byte are the stated ratios of sums,
and two models pair on the documents.

Tolerance: transformers averages float32 log-probabilities where assay sums them in float64; the two
differ by float32 rounding of a sum of a few hundred terms of size ~log(vocabulary), so 1e-5 relative."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from transformers import LlamaForCausalLM

from assay.compare import compare_per_example
from assay.errors import DataError, UsageError
from assay.llm.perplexity import score_documents
from tests.unit.llm.causal_fixtures import tiny_llama
from tests.unit.models.test_adapter_hf import TEXTS, tiny_tokenizer

RTOL = 1e-5


@pytest.fixture(scope="module")
def setup() -> tuple[LlamaForCausalLM, object]:
    tokenizer = tiny_tokenizer(max_length=256)
    return tiny_llama(len(tokenizer), seed=0), tokenizer


def guide_nll(model: LlamaForCausalLM, ids: torch.Tensor, max_length: int, stride: int) -> float:
    """Hugging Face's perplexity guide: windows of max_length moving by stride, earlier tokens masked."""
    total, prev_end = 0.0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        window = ids[begin:end][None, :]
        labels = window.clone()
        labels[:, : -(end - prev_end)] = -100
        with torch.no_grad():
            loss = model(input_ids=window, labels=labels).loss
        total += float(loss) * int((labels[0, 1:] != -100).sum())
        prev_end = end
        if end == len(ids):
            break
    return total


def test_a_document_within_the_context_scores_as_transformers_loss(setup) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = setup
    scores = score_documents(model, tokenizer, TEXTS, max_length=128)
    for i, text in enumerate(TEXTS):
        ids = torch.tensor(tokenizer(text)["input_ids"])[None, :]
        with torch.no_grad():
            loss = float(model(input_ids=ids, labels=ids).loss)
        assert scores.tokens[i] == ids.shape[1] - 1
        assert scores.nll[i] == pytest.approx(loss * (ids.shape[1] - 1), rel=RTOL)
        assert scores.bytes[i] == len(text.encode("utf-8"))


@pytest.mark.parametrize("max_length,stride", [(8, 4), (8, 7), (5, 1)])
def test_a_long_document_is_scored_in_windows_once_per_token(setup, max_length: int, stride: int) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = setup
    text = " ".join(TEXTS)  # about 45 tokens: several windows
    ids = torch.tensor(tokenizer(text)["input_ids"])
    scores = score_documents(model, tokenizer, [text], max_length=max_length, stride=stride)
    assert scores.tokens[0] == len(ids) - 1
    assert scores.nll[0] == pytest.approx(guide_nll(model, ids, max_length, stride), rel=RTOL)
    whole = score_documents(model, tokenizer, [text], max_length=256).nll[0]
    assert abs(scores.nll[0] - whole) > 10 * RTOL * whole  # less context: another score, not the same one


def test_the_statistics_are_ratios_of_sums_with_intervals(setup) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = setup
    scores = score_documents(model, tokenizer, TEXTS * 3, max_length=64)
    by_name = {m.name: m for m in scores.measurements(n_boot=200, seed=0)}
    nats = scores.nll.sum() / scores.tokens.sum()
    assert by_name["nll_per_token"].value == pytest.approx(nats, rel=1e-12)
    assert by_name["perplexity"].value == pytest.approx(math.exp(nats), rel=1e-12)
    assert by_name["bits_per_byte"].value == pytest.approx(
        scores.nll.sum() / math.log(2) / scores.bytes.sum()
    )
    for m in by_name.values():
        assert m.ci_low < m.value < m.ci_high and m.n == len(TEXTS) * 3 and m.unit
    assert by_name["perplexity"].unit == "perplexity" and by_name["bits_per_byte"].unit == "bits/byte"


def test_two_models_pair_on_the_documents(setup) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = setup
    texts = TEXTS * 3
    ids = [f"doc-{i}" for i in range(len(texts))]
    a = score_documents(model, tokenizer, texts, ids=ids, max_length=64)
    b = score_documents(tiny_llama(len(tokenizer), seed=1), tokenizer, texts, ids=ids, max_length=64)
    ea = a.per_example(a.measurements(n_boot=200))["nll_per_token"]
    eb = b.per_example(b.measurements(n_boot=200))["nll_per_token"]
    paired = compare_per_example(ea, eb, n_boot=200, seed=0).comparison
    want = b.nll.sum() / b.tokens.sum() - a.nll.sum() / a.tokens.sum()
    assert paired.delta == pytest.approx(want, rel=1e-9) and want != 0
    assert paired.delta_ci_low <= paired.delta <= paired.delta_ci_high
    same = compare_per_example(ea, ea, n_boot=200, seed=0).comparison
    assert same.delta == 0 and same.delta_ci_low == same.delta_ci_high == 0


def test_bad_documents_and_windows_are_refused(setup) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = setup
    with pytest.raises(UsageError, match="stride below its length"):
        score_documents(model, tokenizer, TEXTS, max_length=8, stride=8)
    with pytest.raises(DataError, match="document 1: a language model scores strings"):
        score_documents(model, tokenizer, ["fine", 3])  # type: ignore[list-item]
    with pytest.raises(UsageError, match="2 ids for 3 documents"):
        score_documents(model, tokenizer, TEXTS[:3], ids=["a", "b"])
    np.testing.assert_array_equal(score_documents(model, tokenizer, ["i saw it"]).ids, ["0"])


def test_short_and_long_documents_together_score_as_each_alone(
    setup: tuple[LlamaForCausalLM, object],
) -> None:
    """Short documents go in padded batches, long ones in windows: the order and the sums stay each
    document's own."""
    model, tokenizer = setup
    texts = [TEXTS[5] * 3, TEXTS[0], TEXTS[8] * 2, TEXTS[2], TEXTS[3]]
    together = score_documents(model, tokenizer, texts, max_length=16, stride=8)
    alone = [score_documents(model, tokenizer, [t], max_length=16, stride=8) for t in texts]
    np.testing.assert_allclose(together.nll, [a.nll[0] for a in alone], rtol=RTOL)
    np.testing.assert_array_equal(together.tokens, [a.tokens[0] for a in alone])
    assert together.tokens[0] > 16  # the first is scored in windows

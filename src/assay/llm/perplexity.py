"""Per-document negative log-likelihood of a causal language model, and what is computed from it:
perplexity, nats per token and bits per byte, each with a bootstrap interval over documents, and the
per-document evidence that pairs two models scored on the same documents
(:func:`assay.compare.compare_per_example`).

A document is tokenized whole (with the tokenizer's special tokens, as the model was trained), and every
token but the first is scored given the tokens before it. A document longer than the context
``max_length`` is scored in overlapping windows of ``max_length`` tokens that move by ``stride`` tokens:
each window scores only the tokens no earlier window scored, so every token is scored once, with at least
``max_length - stride`` tokens of context once the first window is passed (the sliding-window evaluation
of Hugging Face's perplexity guide). The statistics are ratios of sums over documents (total NLL over
total tokens or bytes), not means of per-document ratios, so a long document weighs by its length; the
bootstrap resamples documents, which keeps the dependence between a document's tokens.

With an fp8 KV cache (``kv="fp8"``, :mod:`assay.llm.kv_cache`) each document, or window, is scored as it
would be decoded: its first half (up to 32 tokens) as the prompt, every later token attending to the
quantized cache. Such documents go one at a time, since the cache's scales are set by each one's prompt.

Bits per byte divide by the UTF-8 bytes of the text rather than by tokens, so models with different
tokenizers compare on the same footing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from assay.catalogue import LANGUAGE_MODEL_METRICS, LANGUAGE_MODELING
from assay.compare import PerExample
from assay.errors import DataError, UsageError
from assay.llm.kv_cache import cached_logits, prompt_tokens
from assay.measurement import Measurement
from assay.stats import bootstrap_ci

BATCH_DOCUMENTS = 16  # documents within one window scored in one forward pass
FAMILY = LANGUAGE_MODELING  # names, directions and units: assay.catalogue.LANGUAGE_MODEL_METRICS


@dataclass(frozen=True)
class DocumentScores:
    """Per document: the summed NLL of its scored tokens (nats), how many tokens were scored, and its
    length in UTF-8 bytes."""

    ids: np.ndarray
    nll: np.ndarray
    tokens: np.ndarray
    bytes: np.ndarray

    def _ratio(self, rows: np.ndarray, denominator: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """sum(nll) / sum(denominator) over each row of document indices, times ``scale``."""
        return scale * self.nll[rows].sum(axis=-1) / denominator[rows].sum(axis=-1)

    def replicates(self, name: str, rows: np.ndarray) -> np.ndarray:
        """``name`` (``nll_per_token``, ``perplexity``, ``bits_per_byte``) on each row of ``rows``."""
        if name == "nll_per_token":
            return self._ratio(rows, self.tokens)
        if name == "perplexity":
            return np.exp(self._ratio(rows, self.tokens))
        if name == "bits_per_byte":
            return self._ratio(rows, self.bytes, 1.0 / math.log(2.0))
        raise UsageError(f"Unknown language-modelling statistic {name!r}; choose one of {', '.join(UNITS)}.")

    def measurements(self, *, n_boot: int = 1000, seed: int = 0) -> list[Measurement]:
        """Each statistic with its 95% percentile-bootstrap interval over documents."""
        n = len(self.ids)
        details = {"documents": n, "tokens": int(self.tokens.sum()), "bytes": int(self.bytes.sum())}
        out = []
        for name, unit in UNITS.items():
            result = bootstrap_ci(
                partial(self.replicates, name), n, n_boot=n_boot, seed=seed, vectorized=True
            )
            out.append(
                Measurement(
                    name=name,
                    family=FAMILY,
                    value=result.estimate,
                    ci_low=result.ci_low,
                    ci_high=result.ci_high,
                    n=n,
                    unit=unit,
                    higher_is_better=False,
                    estimator=ESTIMATORS[name],
                    details=details,
                )
            )
        return out

    def per_example(self, measurements: Sequence[Measurement]) -> dict[str, PerExample]:
        """The evidence behind ``measurements`` (from :meth:`measurements`), by name, for paired rules."""
        return {
            m.name: PerExample(m, self.ids, partial(self.replicates, m.name))
            for m in measurements
            if m.name in UNITS
        }


UNITS = {name: str(entry.unit) for name, entry in LANGUAGE_MODEL_METRICS.items() if entry.unit is not None}
ESTIMATORS = {
    "nll_per_token": "total NLL over total scored tokens; percentile bootstrap over documents",
    "perplexity": "exp(total NLL / total scored tokens); percentile bootstrap over documents",
    "bits_per_byte": "total NLL / ln 2 / total UTF-8 bytes; percentile bootstrap over documents",
}


@torch.inference_mode()
def score_documents(
    model: nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    max_length: int = 1024,
    stride: int | None = None,
    on_document: Callable[[], object] | None = None,
    kv: str = "model",
) -> DocumentScores:
    """The NLL of every document of ``texts`` under ``model`` (a transformers causal LM in eval mode),
    windows of ``max_length`` tokens moving by ``stride`` (default half of it) for longer documents,
    decoded through a ``kv`` cache (:mod:`assay.llm.kv_cache`). ``on_document`` is called after each
    document (a progress bar's step)."""
    stride = stride or max(1, max_length // 2)
    if max_length < 2 or not 0 < stride < max_length:
        raise UsageError(
            f"max_length {max_length} and stride {stride}: a window needs at least 2 tokens and a stride "
            "below its length, so that each window's first scored token has context."
        )
    if ids is not None and len(ids) != len(texts):
        raise UsageError(f"{len(ids)} ids for {len(texts)} documents.")
    encoded = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"document {i}: a language model scores strings, got {type(text).__name__}.")
        ids_i = list(tokenizer(text, add_special_tokens=True)["input_ids"])  # type: ignore[operator]
        if len(ids_i) < 2:
            raise DataError(f"document {i} has {len(ids_i)} token(s); scoring needs at least 2.")
        encoded.append(ids_i)
    nll = np.zeros(len(texts))
    tokens = np.array([len(e) - 1 for e in encoded], dtype=np.int64)
    short = [i for i, e in enumerate(encoded) if len(e) <= max_length]
    # Documents within one window go in padded batches of similar length (sorted, so little padding);
    # longer ones are scored alone in sliding windows.
    short.sort(key=lambda i: len(encoded[i]))
    for start in range(0, len(short), BATCH_DOCUMENTS):
        rows = short[start : start + BATCH_DOCUMENTS]
        logprobs, _ = next_token_logprobs(model, [encoded[i] for i in rows], kv)
        nll[rows] = -logprobs.sum(dim=1).numpy()
        if on_document is not None:
            for _ in rows:
                on_document()
    for i in (i for i, e in enumerate(encoded) if len(e) > max_length):
        nll[i], scored = _document_nll(model, torch.tensor(encoded[i]), max_length, stride, kv)
        assert scored == tokens[i]  # every token but the first, once
        if on_document is not None:
            on_document()
    sizes = [len(text.encode("utf-8")) for text in texts]
    return DocumentScores(
        ids=np.asarray(ids if ids is not None else [str(i) for i in range(len(texts))]).astype(str),
        nll=nll,
        tokens=tokens,
        bytes=np.asarray(sizes, dtype=np.int64),
    )


def right_padded(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The token ids of ``sequences`` as one batch, right-padded with 0, and its attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(list(sequence))
        mask[row, : len(sequence)] = 1
    return ids, mask


def next_token_logprobs(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    kv: str = "model",
    prompts: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``lp[k, t] = log P(sequences[k][t + 1] | sequences[k][: t + 1])`` (float64) for a right-padded batch
    of the sequences, and the mask of the entries that are real tokens (the attention mask hides the
    padding from every real one). In an fp8 KV cache, sequence k is decoded with its first
    ``prompts[k]`` tokens as the prompt (default :func:`assay.llm.kv_cache.prompt_tokens`), one
    sequence at a time."""
    ids, mask = right_padded(sequences)
    if kv == "model":
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        return _picked(logits, ids[:, 1:]) * mask[:, 1:], mask[:, 1:]
    picked = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.float64)
    for k, sequence in enumerate(sequences):
        row = ids[k : k + 1, : len(sequence)]
        prompt = prompt_tokens(len(sequence)) if prompts is None else prompts[k]
        picked[k, : len(sequence) - 1] = _picked(cached_logits(model, row, kv, prompt)[:, :-1], row[:, 1:])[0]
    return picked, mask[:, 1:]


def _picked(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)`` at ``targets`` (``(B, L, V)`` and ``(B, L)``), in float64."""
    return torch.log_softmax(logits.float(), dim=-1).gather(2, targets[..., None])[..., 0].double()


def mean_token_nll(logits: torch.Tensor, ids: torch.Tensor, chunk: int = 256) -> float | None:
    """Mean NLL (nats) of ``ids[1:]`` given ``logits[:-1]``, for one sequence (``(L, V)`` and ``(L,)``);
    None under 2 tokens. Rows go ``chunk`` at a time: a long prompt's float32 log-softmax over the whole
    vocabulary would be a copy of L x V floats."""
    n = int(ids.shape[0])
    if n < 2:
        return None
    total = 0.0
    for start in range(0, n - 1, chunk):
        rows = logits[start : min(start + chunk, n - 1)].float()
        picked = torch.log_softmax(rows, dim=-1).gather(1, ids[start + 1 : start + 1 + rows.shape[0], None])
        total -= float(picked.double().sum())
    return total / (n - 1)


def _document_nll(
    model: nn.Module, ids: torch.Tensor, max_length: int, stride: int, kv: str
) -> tuple[float, int]:
    """Summed NLL (nats) and number of scored tokens of one document: positions 1..n-1, each once, each
    window decoded through a ``kv`` cache."""
    n, total, scored, scored_to = len(ids), 0.0, 0, 1  # ``scored_to``: the first position not yet scored
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        window = ids[begin:end]
        logits = cached_logits(model, window[None, :], kv, prompt_tokens(len(window)))[0].float()
        log_probs = torch.log_softmax(logits[:-1], dim=-1)  # row r predicts position begin + r + 1
        first = scored_to - begin - 1  # the row that predicts ``scored_to``
        picked = log_probs[first:].gather(1, window[first + 1 :, None])[:, 0]
        total -= float(picked.double().sum())
        scored += int(picked.shape[0])
        scored_to = end
        if end == n:
            break
    return total, scored

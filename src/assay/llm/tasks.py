"""Multiple-choice tasks for language models: each item a context and its choices, the model's answer the
choice it gives the highest log-likelihood as a continuation of the context (lm-evaluation-harness's
``acc``), scored per item so that two models pair on the items.

A task is a JSONL file, one item a line::

    {"id": "q17", "context": "A penny saved is", "choices": [" a penny earned.", " a stitch."], "answer": 0}

``id`` (unique), ``context``, ``choices`` (two or more strings, each scored as it is written after the
context, so a choice that continues a sentence begins with its space) and ``answer`` (the index of the
right choice). :func:`cloze_task` builds one from real text; the built-in ``fortune-cloze`` is built from
the test quotes of Debian's fortunes: the first half of each quote (by words) is the context, its own
second half the right choice, and the second halves of three other quotes of the same category the wrong
ones. It measures whether the model tells how a real sentence goes on from how another one does.

Scoring follows lm-eval's ``loglikelihood`` requests: the context and the context plus the choice are
tokenized whole, the choice's tokens are those past the context's, and the choice scores the sum of
their log-probabilities (no length normalisation). The outputs are the per-choice log-likelihoods as
logits, so accuracy, exact McNemar and the rest of assay's metrics apply unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assay.errors import DataError
from assay.llm.choices import choice_outputs
from assay.llm.jsonl import check_unique_ids, read_objects
from assay.outputs import Outputs

if TYPE_CHECKING:  # reading a task, or lm-eval's samples (assay.llm.lmeval), needs no torch
    from torch import nn


@dataclass(frozen=True)
class Item:
    id: str
    context: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class Task:
    """A named list of items."""

    name: str
    items: tuple[Item, ...]

    def write(self, path: str | Path) -> Path:
        """The task as JSONL (the format :func:`read_task` reads)."""
        path = Path(path)
        lines = [
            json.dumps({"id": i.id, "context": i.context, "choices": list(i.choices), "answer": i.answer})
            for i in self.items
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


def read_task(path: str | Path) -> Task:
    """A task from its JSONL file; a line that does not hold a valid item is refused with its number."""
    path = Path(path)
    rows = read_objects(path, "an item")
    items = [_item(raw, where) for where, raw in rows]
    check_unique_ids((where, item.id) for (where, _), item in zip(rows, items, strict=True))
    return Task(path.stem, tuple(items))


def _item(raw: dict[str, object], where: str) -> Item:
    missing = [k for k in ("id", "context", "choices", "answer") if k not in raw]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)}.")
    choices, answer = raw["choices"], raw["answer"]
    if not (
        isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) and c for c in choices)
    ):
        raise DataError(f"{where}: choices must be a list of two or more non-empty strings.")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise DataError(f"{where}: answer {answer!r} must be the index of one of the {len(choices)} choices.")
    if not isinstance(raw["context"], str):
        raise DataError(f"{where}: context must be a string.")
    return Item(str(raw["id"]), raw["context"], tuple(choices), answer)


def cloze_task(
    name: str,
    texts: Sequence[str],
    ids: Sequence[str],
    groups: Sequence[int] | None = None,
    *,
    n_choices: int = 4,
    min_words: int = 8,
    seed: int = 0,
) -> Task:
    """Each text of ``min_words`` words or more as an item: its first half the context, its second half
    the answer among ``n_choices`` second halves, the others drawn (seeded) from texts of the same group
    where ``groups`` are given and that group has enough, else from all."""
    words = [" ".join(str(t).split()).split(" ") for t in texts]
    usable = [i for i, w in enumerate(words) if len(w) >= min_words]
    if len(usable) < n_choices:
        raise DataError(
            f"{name}: {len(usable)} texts of {min_words} words or more; a task needs {n_choices}."
        )
    halves = {i: (" ".join(words[i][: len(words[i]) // 2]), " " + " ".join(words[i][len(words[i]) // 2 :]))
              for i in usable}  # fmt: skip
    group_of = np.asarray(groups if groups is not None else np.zeros(len(texts)), dtype=np.int64)
    rng = np.random.default_rng(seed)
    items = []
    for i in usable:
        same = [j for j in usable if j != i and group_of[j] == group_of[i]]
        pool = same if len(same) >= n_choices - 1 else [j for j in usable if j != i]
        others = rng.choice(len(pool), size=n_choices - 1, replace=False)
        choices = [halves[pool[k]][1] for k in others]
        answer = int(rng.integers(n_choices))
        choices.insert(answer, halves[i][1])
        items.append(Item(str(ids[i]), halves[i][0], tuple(choices), answer))
    return Task(name, tuple(items))


def score_task(
    model: nn.Module, tokenizer: object, task: Task, *, progress: object = None, kv: str = "model"
) -> Outputs:
    """Each item's choices scored by their summed log-likelihood after the context (one forward pass per
    item, its choices as one padded batch; in an fp8 KV cache, the context is the prompt and the choice
    attends to the quantized cache); the outputs hold them as logits."""
    import torch

    scores = []
    for item in task.items:
        with torch.inference_mode():
            scores.append(choice_loglikelihoods(model, tokenizer, item.context, item.choices, kv))
        if callable(progress):
            progress()
    return choice_outputs(
        [item.id for item in task.items], [item.answer for item in task.items], scores, task.name
    )


def choice_loglikelihoods(
    model: nn.Module, tokenizer: object, context: str, choices: Sequence[str], kv: str = "model"
) -> np.ndarray:
    """The summed log-probability (nats) of each choice's tokens after ``context``."""
    import torch

    from assay.llm.perplexity import next_token_logprobs  # torch, only where a model runs

    encode = tokenizer  # a transformers tokenizer: called on a string, it gives input_ids
    context_ids = list(encode(context, add_special_tokens=True)["input_ids"])  # type: ignore[operator]
    sequences, starts = [], []
    for choice in choices:
        whole = list(encode(context + choice, add_special_tokens=True)["input_ids"])  # type: ignore[operator]
        start = len(context_ids)
        if whole[:start] != context_ids or start >= len(whole):
            # the choice's first token merged with the context's last: score the choice's own tokens
            whole = context_ids + list(encode(choice, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
        sequences.append(whole)
        starts.append(start)
    with torch.inference_mode():  # scores, never gradients, whoever calls
        logprobs, _ = next_token_logprobs(model, sequences, kv, prompts=starts)
    out = np.empty(len(sequences))
    for k, (s, start) in enumerate(zip(sequences, starts, strict=True)):
        out[k] = float(logprobs[k, start - 1 : len(s) - 1].sum())  # entry t predicts token t + 1
    return out

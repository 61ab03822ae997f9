"""Generation tasks: the model writes its answer greedily, scored by exact match after a stated
normaliser, per item, so that two models pair on the items (exact McNemar in the gate).

A task file is JSONL, one item a line::

    {"id": "g3", "prompt": "The capital of France is", "target": "Paris"}

``normaliser`` (optional, per item): ``lenient`` (the default; SQuAD's: lower case, punctuation and the
articles a/an/the dropped, whitespace squeezed) or ``exact`` (surrounding whitespace stripped). The
answer is the generated text up to its first line break (``answer: "line"``, the default) or its first
word (``answer: "word"``).

The built-in ``last-word`` task (:func:`last_word_task`) is built from the corpus's test documents as
LAMBADA is built from books: each document without its last word is the prompt, the last word the
target, the first word of the answer the model's. It measures whether the model carries a real text's
sense to its end.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from assay.compare import PerExample
from assay.errors import DataError
from assay.llm.items import item_mean
from assay.llm.jsonl import check_unique_ids, read_objects
from assay.measurement import Measurement

if TYPE_CHECKING:
    from torch import nn

Normaliser = Literal["lenient", "exact"]
Answer = Literal["line", "word"]
METRIC = "exact_match"
MAX_NEW_TOKENS = 8
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise(text: str, how: Normaliser) -> str:
    if how == "exact":
        return text.strip()
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


@dataclass(frozen=True)
class GenerationItem:
    id: str
    prompt: str
    target: str
    normaliser: Normaliser = "lenient"
    answer: Answer = "line"


@dataclass(frozen=True)
class GenerationTask:
    name: str
    items: tuple[GenerationItem, ...]
    max_new_tokens: int = MAX_NEW_TOKENS


def read_generation_task(path: str | Path) -> GenerationTask:
    """A generation task from its JSONL file; a bad line is refused with its number."""
    path = Path(path)
    rows = read_objects(path, "an item")
    items = []
    for where, raw in rows:
        if not all(isinstance(raw.get(k), str) for k in ("prompt", "target")):
            raise DataError(f"{where}: an item is a JSON object with id, prompt and target (strings).")
        if "id" not in raw:
            raise DataError(f"{where}: each item needs an id of its own.")
        how, answer = raw.get("normaliser", "lenient"), raw.get("answer", "line")
        if how not in ("lenient", "exact") or answer not in ("line", "word"):
            raise DataError(f"{where}: normaliser is lenient or exact, answer is line or word.")
        items.append(GenerationItem(str(raw["id"]), str(raw["prompt"]), str(raw["target"]), how, answer))
    check_unique_ids((where, item.id) for (where, _), item in zip(rows, items, strict=True))
    return GenerationTask(path.stem, tuple(items))


def last_word_task(
    name: str, texts: Sequence[str], ids: Sequence[str], *, min_words: int = 6
) -> GenerationTask:
    """Each text of ``min_words`` words or more whose last word has letters: the rest the prompt, the last
    word (punctuation dropped by the lenient normaliser) the target."""
    items = []
    for text, ident in zip(texts, ids, strict=True):
        words = str(text).split()
        if len(words) >= min_words and any(c.isalpha() for c in words[-1]):
            items.append(GenerationItem(str(ident), " ".join(words[:-1]), words[-1], "lenient", "word"))
    if not items:
        raise DataError(f"{name}: no text of {min_words} words or more to ask for its last word.")
    return GenerationTask(name, tuple(items), max_new_tokens=6)


def extract(generated: str, answer: Answer) -> str:
    if answer == "word":
        words = generated.split()
        return words[0] if words else ""
    return generated.split("\n", 1)[0]


def generate_answers(
    model: nn.Module,
    tokenizer: object,
    task: GenerationTask,
    on_item: Callable[[], object] | None = None,
    kv: str = "model",
) -> list[str]:
    """Each item's greedy generation (up to the task's ``max_new_tokens``) through a ``kv`` cache
    (:mod:`assay.llm.kv_cache`), decoded, before extraction."""
    import torch

    from assay.llm.kv_cache import new_cache  # torch, only where a model runs

    answers = []
    pad = getattr(tokenizer, "pad_token_id", None) or getattr(tokenizer, "eos_token_id", None) or 0
    for item in task.items:
        ids = torch.tensor([list(tokenizer(item.prompt)["input_ids"])])  # type: ignore[operator]
        with torch.inference_mode():
            out = model.generate(  # type: ignore[operator]
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=task.max_new_tokens,
                do_sample=False, pad_token_id=pad, cache=new_cache(model.config, kv),
            )  # fmt: skip
        answers.append(str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)))  # type: ignore[attr-defined]
        if on_item is not None:
            on_item()
    return answers


def hits(task: GenerationTask, answers: Sequence[str]) -> np.ndarray:
    """Per item: does the extracted answer equal the target under the item's normaliser."""
    return np.array([
        normalise(extract(a, item.answer), item.normaliser) == normalise(item.target, item.normaliser)
        for item, a in zip(task.items, answers, strict=True)
    ])  # fmt: skip


def exact_match(
    task: GenerationTask, correct: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> tuple[Measurement, PerExample]:
    """The share of items answered right, with its percentile-bootstrap interval over items, and the
    per-item evidence (0/1: the gate tests it with exact McNemar)."""
    ids = np.array([item.id for item in task.items]).astype(str)
    estimator = f"share of {task.name} items whose answer matches the target after the normaliser"
    return item_mean(
        METRIC, task.name, ids, correct.astype(bool), estimator=estimator, n_boot=n_boot, seed=seed
    )


__all__ = [
    "GenerationTask",
    "exact_match",
    "generate_answers",
    "hits",
    "last_word_task",
    "read_generation_task",
]

"""Generation tasks (assay.llm.generation): the normalisers as stated, the JSONL format refused line by
line, the last-word task built from real-looking text, the answers as greedy decoding makes them
(checked against assay's own greedy decoder, a separate loop over the KV cache), and exact match with
its interval and per-item evidence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from assay.errors import DataError
from assay.llm import causal
from assay.llm.decoding import GreedyDecoder
from assay.llm.generation import (
    GenerationItem,
    GenerationTask,
    exact_match,
    extract,
    generate_answers,
    hits,
    last_word_task,
    normalise,
    read_generation_task,
)
from tests.unit.llm.causal_fixtures import tiny_llama
from tests.unit.models.test_adapter_hf import tiny_tokenizer


def test_the_normalisers_do_what_they_say() -> None:
    assert normalise("  The Cat, sat!  ", "lenient") == "cat sat"
    assert normalise("an apple a day", "lenient") == "apple day"
    assert normalise("  Paris.\n", "exact") == "Paris."
    assert extract(" Paris is big\nmore", "line") == " Paris is big"
    assert extract("  Paris is big", "word") == "Paris"
    assert extract("   ", "word") == ""


def test_a_task_file_is_read_and_bad_lines_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "p", "target": "t", "answer": "word"}) + "\n")
    task = read_generation_task(path)
    assert task.items == (GenerationItem("a", "p", "t", "lenient", "word"),)
    for line, match in [
        ("{x", "line 2: not JSON"),
        (json.dumps({"id": "b", "prompt": "p"}), "id, prompt and target"),
        (json.dumps({"id": "a", "prompt": "p", "target": "t"}), "id of its own"),
        (json.dumps({"id": "c", "prompt": "p", "target": "t", "normaliser": "fuzzy"}), "lenient or exact"),
    ]:
        path.write_text(json.dumps({"id": "a", "prompt": "p", "target": "t"}) + "\n" + line + "\n")
        with pytest.raises(DataError, match=match):
            read_generation_task(path)


def test_the_last_word_task_asks_for_each_texts_last_word() -> None:
    texts = ["A penny saved is a penny earned.", "too short here", "Time and tide wait for no man 42"]
    task = last_word_task("lw", texts, ["x", "y", "z"])
    assert [(i.id, i.prompt, i.target) for i in task.items] == [("x", "A penny saved is a penny", "earned.")]
    assert hits(task, [" earned, and kept"]).tolist() == [True]  # first word, punctuation dropped
    assert hits(task, [" spent"]).tolist() == [False]


@pytest.mark.parametrize("kv", ["model", "fp8"])
def test_the_answers_are_the_greedy_continuations(kv: str) -> None:
    tokenizer = tiny_tokenizer(max_length=256)
    model = tiny_llama(len(tokenizer), seed=2)
    model.generation_config.eos_token_id = None
    lm = causal.LanguageModel(model, tokenizer, {"precision": "fp32", "spec": {"context_length": 256}})
    task = GenerationTask(
        "t", (GenerationItem("a", "the cat sat on", "mat"), GenerationItem("b", "a very", "good")), 5
    )
    answers = generate_answers(model, tokenizer, task, kv=kv)
    for item, answer in zip(task.items, answers, strict=True):
        ids = list(tokenizer(item.prompt)["input_ids"])
        tokens = GreedyDecoder(lm, kv=kv).run([ids], 5).generated[0].tolist()
        assert answer == tokenizer.decode(tokens, skip_special_tokens=True)


def test_exact_match_is_the_share_right_with_its_interval_and_hits() -> None:
    items = tuple(GenerationItem(str(i), "p", "t") for i in range(40))
    task = GenerationTask("t", items)
    correct = np.array([i % 4 == 0 for i in range(40)])
    measurement, evidence = exact_match(task, correct, n_boot=500)
    assert measurement.value == pytest.approx(0.25) and measurement.name == "exact_match"
    assert measurement.ci_low < 0.25 < measurement.ci_high
    assert evidence.hits is not None and evidence.hits.tolist() == correct.tolist()
    assert evidence.ids.tolist() == [str(i) for i in range(40)]

"""Multiple-choice tasks (assay.llm.tasks): the JSONL format read and refused line by line, the cloze
builder's items, and each choice's log-likelihood against transformers' own loss.

Reference: ``model(context + choice, labels=...)`` with the context's positions masked (-100) gives the
mean NLL of the choice's tokens, so minus that times their number is the choice's log-likelihood. assay
sums float64 log-softmaxes of a padded batch; the two differ by float32 rounding, 1e-5 relative."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from assay.errors import DataError
from assay.llm.tasks import Item, Task, choice_loglikelihoods, cloze_task, read_task, score_task
from tests.unit.llm.causal_fixtures import tiny_llama
from tests.unit.models.test_adapter_hf import tiny_tokenizer


def test_a_task_file_round_trips_and_bad_lines_are_refused_with_their_number(tmp_path: Path) -> None:
    task = Task(
        "t", (Item("a", "the cat", (" sat", " film"), 0), Item("b", "a very", (" good", " bad", " it"), 2))
    )
    assert read_task(task.write(tmp_path / "t.jsonl")) == task
    good = json.dumps({"id": "x", "context": "c", "choices": [" a", " b"], "answer": 1})
    for line, match in [
        ("{not json", "line 2: not JSON"),
        (json.dumps({"id": "y", "context": "c", "choices": [" a"], "answer": 0}), "two or more"),
        (json.dumps({"id": "y", "context": "c", "choices": [" a", " b"], "answer": 2}), "index of one"),
        (json.dumps({"id": "y", "context": "c", "choices": [" a", " b"], "answer": True}), "index of one"),
        (json.dumps({"id": "y", "choices": [" a", " b"], "answer": 0}), "missing context"),
        (good, "id 'x' is used twice"),
    ]:
        path = tmp_path / "bad.jsonl"
        path.write_text(good + "\n" + line + "\n")
        with pytest.raises(DataError, match=match):
            read_task(path)


def test_a_cloze_item_asks_for_the_texts_own_ending_among_others_of_its_group() -> None:
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{g}x{i}y{k}" for k in range(8 + i % 5)) for g in range(3) for i in range(10)]
    groups = [g for g in range(3) for _ in range(10)]
    texts += ["too short to ask"]
    groups += [0]
    ids = [f"d{i}" for i in range(len(texts))]
    task = cloze_task("c", texts, ids, groups, seed=int(rng.integers(100)))
    assert len(task.items) == 30 and "d30" not in {i.id for i in task.items}
    answers = np.bincount([item.answer for item in task.items], minlength=4)
    assert answers.min() > 0  # the right choice is not always in one place
    for item, text, group in zip(task.items, texts, groups, strict=False):
        words = text.split()
        assert item.context == " ".join(words[: len(words) // 2])
        assert item.context + item.choices[item.answer] == text
        assert len(set(item.choices)) == 4
        assert all(c.split()[0].startswith(f"w{group}") for c in item.choices)  # same group's endings


def test_each_choice_scores_its_log_likelihood_after_the_context() -> None:
    tokenizer = tiny_tokenizer(max_length=256)
    model = tiny_llama(len(tokenizer), seed=3)
    context, choices = "the cat sat on", [" the mat", " a very good film and it was fun", " bad"]
    got = choice_loglikelihoods(model, tokenizer, context, choices)
    want = []
    for choice in choices:
        # the tokenizer wraps every string in [CLS] ... [SEP]: the context's [SEP] is followed by the
        # choice, as assay's fallback does when the whole does not begin with the context's tokens
        ctx = tokenizer(context)["input_ids"]
        ids = ctx + tokenizer(choice, add_special_tokens=False)["input_ids"]
        labels = torch.tensor([-100] * len(ctx) + ids[len(ctx) :])
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([ids]), labels=labels[None]).loss
        want.append(-float(loss) * (len(ids) - len(ctx)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    task = Task("t", (Item("q", context, tuple(choices), 1),))
    outputs = score_task(model, tokenizer, task)
    np.testing.assert_allclose(outputs.logits[0], want, rtol=1e-5)
    assert outputs.labels.tolist() == [1] and outputs.ids.tolist() == ["q"]
    assert outputs.preds[0] == int(np.argmax(want))


def test_items_with_fewer_choices_get_probability_zero_for_the_rest() -> None:
    tokenizer = tiny_tokenizer(max_length=256)
    model = tiny_llama(len(tokenizer), seed=1)
    task = Task(
        "t", (Item("a", "the cat", (" sat", " saw"), 0), Item("b", "the dog", (" sat", " saw", " was"), 2))
    )
    outputs = score_task(model, tokenizer, task)
    assert outputs.probs.shape == (2, 3) and outputs.probs[0, 2] == 0.0
    np.testing.assert_allclose(outputs.probs.sum(axis=1), 1.0)

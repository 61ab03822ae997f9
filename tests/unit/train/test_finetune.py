"""Fine-tuning a Hugging Face text classifier, on a tiny random BERT (built here, no network) and a tiny
task whose label is a word's sentiment: it learns, an interrupted run resumed from its checkpoint ends
with the uninterrupted run's weights, the schedule is transformers' own, clipping bounds the step, a
distilled student follows its teacher's logits row by row.

Tolerance of the resume test: both runs do the same float32 operations in the same order on the same
threads, so the weights agree to the last bit; 1e-6 relative leaves room for nothing but rounding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from assay.data import Dataset, Split
from assay.errors import TrainingError, UsageError
from assay.train.checkpoint import LATEST, Checkpoint
from assay.train.finetune import (
    FinetuneConfig,
    clipped_step,
    finetune,
    open_classifier,
    parameter_groups,
    save_classifier,
    schedule_factor,
)
from assay.train.loop import Distillation, check_losses
from tests.unit.models.test_adapter_hf import tiny_classifier
from tests.unit.models.test_heads import tiny_text_data

FP32 = {"precision": "fp32", "threads": 1}


@pytest.fixture
def bert(tmp_path: Path) -> tuple[Any, Any, int]:
    tiny_classifier(tmp_path / "bert", num_labels=2)
    return open_classifier(tmp_path / "bert")


def run(
    bert: tuple[Any, Any, int],
    data: Dataset,
    checkpoint: Path | None = None,
    distillation: Distillation | None = None,
    **options: Any,
) -> Any:
    model, tokenizer, max_length = bert
    config = FinetuneConfig.parse({**FP32, **options})
    return finetune(
        model, tokenizer, data, config, max_length=max_length, checkpoint=checkpoint, progress=False,
        distillation=distillation,
    )  # fmt: skip


def test_learns_a_learnable_task_and_leaves_the_input_untouched(bert: tuple[Any, Any, int]) -> None:
    data = tiny_text_data()
    before = {k: v.clone() for k, v in bert[0].state_dict().items()}
    result = run(bert, data, epochs=6, batch_size=8, lr=1e-3, patience=6)
    # balanced classes: chance is about 50%; the words decide the label, so a model that reads them wins
    assert max(result.history["val_accuracy"]) >= 0.9
    assert result.history["val_loss"][-1] < result.history["val_loss"][0]
    logits = result.model(**bert[1](list(data.test.x), padding=True, return_tensors="pt")).logits
    assert float((logits.argmax(1).numpy() == data.test.y).mean()) >= 0.85
    assert all(torch.equal(v, bert[0].state_dict()[k]) for k, v in before.items())
    assert result.steps == 6 * 20 and result.warmup_steps == 12 and result.resumed_from == 0
    assert result.energy.wall_seconds > 0 and result.environment["seeds"] == {"train": 0}
    assert result.summary()["best_val_accuracy"] == result.history["val_accuracy"][result.best_epoch - 1]


def test_a_distilled_student_learns_its_teachers_rule_not_the_labels(bert: tuple[Any, Any, int]) -> None:
    """A planted teacher that says the opposite of every training label, weighted alone (alpha 1): a
    student that reads the teacher's logits at its own rows learns the flipped rule, so it is wrong on
    almost every validation text; a student fed the wrong rows would see targets unrelated to its texts
    and stay near chance (50%)."""
    data = tiny_text_data()
    flipped = torch.nn.functional.one_hot(torch.from_numpy(1 - data.train.y), 2).float() * 6.0
    teacher = Distillation(flipped, temperature=1.0, alpha=1.0)
    result = run(bert, data, distillation=teacher, epochs=6, batch_size=8, lr=1e-3, patience=6)
    assert min(result.history["val_accuracy"]) <= 0.1  # against the true labels: it learned the flip
    with pytest.raises(UsageError, match="one row of 2 logits per training text"):
        run(bert, data, distillation=Distillation(flipped[:-1]), epochs=1)


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(
    bert: tuple[Any, Any, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tiny_text_data()
    options = {"epochs": 2, "batch_size": 16, "lr": 1e-3, "patience": 2}
    straight = run(bert, data, **options)
    save = Checkpoint.save

    def save_then_interrupt(self: Checkpoint, *args: Any, **kwargs: Any) -> None:
        save(self, *args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C just after epoch 1 was written

    monkeypatch.setattr(Checkpoint, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(bert, data, tmp_path / "ckpt", **options)
    monkeypatch.setattr(Checkpoint, "save", save)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch-0001", LATEST]
    resumed = run(bert, data, tmp_path / "ckpt", **options)
    assert resumed.resumed_from == 1 and resumed.epochs_run == 2
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-6, atol=1e-7)
    assert resumed.history == straight.history
    # A finished run started again does no more work and returns the same weights.
    again = run(bert, data, tmp_path / "ckpt", **options)
    assert again.resumed_from == 2 and again.history == straight.history
    with pytest.raises(UsageError, match=r"config\.lr"):
        run(bert, data, tmp_path / "ckpt", **{**options, "lr": 2e-3})


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_the_schedule_is_transformers_own(kind: str) -> None:
    total, warmup = 50, 7
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    make = get_linear_schedule_with_warmup if kind == "linear" else get_cosine_schedule_with_warmup
    reference = make(optimizer, warmup, total)
    theirs = []
    for _ in range(total + 1):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    ours = [schedule_factor(step, warmup, total, kind) for step in range(total + 1)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert ours[: warmup + 1] == [s / warmup for s in range(warmup + 1)]  # linear rise to the peak
    assert all(a >= b for a, b in zip(ours[warmup:], ours[warmup + 1 :], strict=False))  # then decays
    assert ours[total] == 0.0


def test_the_loop_follows_the_schedule(bert: tuple[Any, Any, int]) -> None:
    data = tiny_text_data()
    result = run(bert, data, epochs=2, batch_size=16, lr=1e-3, warmup=0.25, schedule="cosine", patience=2)
    total, warmup = 20, 5  # 160 texts in batches of 16, 2 epochs
    expected = [1e-3 * schedule_factor(10 * e, warmup, total, "cosine") for e in (1, 2)]
    np.testing.assert_allclose(result.history["lr"], expected, rtol=1e-9, atol=1e-15)


def test_clipping_bounds_the_step() -> None:
    for max_norm, expected in ((1.0, 1.0), (10.0, 5.0), (None, 5.0)):
        p = torch.nn.Parameter(torch.zeros(2))
        p.grad = torch.tensor([3.0, 4.0])  # norm 5
        norm = clipped_step([p], torch.optim.SGD([p], lr=1.0), max_norm)
        assert float(p.detach().norm()) == pytest.approx(expected, rel=1e-6)  # SGD at lr 1 moves by -grad
        assert (norm is None) == (max_norm is None) and (norm is None or float(norm) == pytest.approx(5.0))


def test_the_loop_clips_and_records_it(bert: tuple[Any, Any, int]) -> None:
    data = tiny_text_data()
    tight = run(bert, data, epochs=1, batch_size=16, max_grad_norm=1e-6)
    loose = run(bert, data, epochs=1, batch_size=16, max_grad_norm=1e6)
    assert tight.history["clipped_share"] == [1.0] and loose.history["clipped_share"] == [0.0]
    assert tight.history["grad_norm"][0] > 1e-6
    assert run(bert, data, epochs=1, batch_size=16, max_grad_norm=None).history["grad_norm"] == []


def test_no_weight_decay_on_biases_and_layer_norms(bert: tuple[Any, Any, int]) -> None:
    model = bert[0]
    decayed, exempt = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.01 and exempt["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in exempt["params"])
    assert not any(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in decayed["params"])
    assert len(decayed["params"]) + len(exempt["params"]) == len(names)


def test_saved_folder_reads_back_with_its_truncation_length(
    bert: tuple[Any, Any, int], tmp_path: Path
) -> None:
    model, tokenizer, _ = bert
    folder = save_classifier(model, tokenizer, 12, tmp_path / "out")
    again, _, length = open_classifier(folder)
    assert length == 12 and tokenizer.model_max_length == 64  # the caller's tokenizer is untouched
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)


def test_bad_settings_and_data_are_refused(bert: tuple[Any, Any, int]) -> None:
    for options, match in (
        ({"epoch": 1}, "epoch"),
        ({"schedule": "step"}, "schedule"),
        ({"warmup": 1.5}, "warmup"),
        ({"max_grad_norm": 0}, "max_grad_norm"),
    ):
        with pytest.raises(UsageError, match=match):
            FinetuneConfig.parse(options)
    data = tiny_text_data()
    three = Dataset(
        name="three", kind="text", train=data.train, val=data.val, test=data.test,
        class_names=["a", "b", "c"], source="tests", input_range=None,
    )  # fmt: skip
    with pytest.raises(UsageError, match="2 labels and three has 3 classes"):
        run(bert, three, epochs=1)

    def pixels(n: int, prefix: str) -> Split:
        return Split(
            np.zeros((n, 1, 2, 2), np.float32), np.arange(n) % 2, np.array([f"{prefix}{i}" for i in range(n)])
        )

    images = Dataset(
        name="images", kind="image", train=pixels(4, "a"), val=pixels(2, "b"), test=pixels(2, "c"),
        class_names=["a", "b"], source="tests",
    )  # fmt: skip
    with pytest.raises(UsageError, match="holds image data"):
        run(bert, images, epochs=1)


def test_divergence_names_the_step() -> None:
    with pytest.raises(TrainingError, match="epoch 3, step 2"):
        check_losses([torch.tensor(1.0), torch.tensor(float("nan")), torch.tensor(2.0)], 3, 0.1)
    check_losses([torch.tensor(1.0)], 1, 0.1)

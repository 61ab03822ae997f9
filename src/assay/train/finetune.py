"""Fine-tuning a pretrained Hugging Face sequence classifier on a text dataset.

The recipe of BERT's paper and of transformers' Trainer, in one loop to read top to bottom:

- the texts tokenized once, up front, by the model's own tokenizer at its truncation length;
- length-bucketed batches (:mod:`assay.train.batching`), each padded to its own longest text;
- AdamW, with no weight decay on biases and LayerNorm weights (decaying a scale or a shift toward zero
  is a prior nobody means);
- a learning rate that rises linearly from 0 over the warm-up steps, then decays to 0, linearly or on a
  half cosine, updated every step (the factors are transformers' ``get_linear_schedule_with_warmup`` and
  ``get_cosine_schedule_with_warmup``);
- gradients clipped to a maximum global norm before each step;
- bf16 autocast on CPUs with native bf16, as the CNN loop does (weights and optimizer state stay fp32);
- validation each epoch, early stopping on validation loss, the best epoch's weights returned;
- optionally, knowledge distillation: the loss mixes the labels' cross-entropy with the KL divergence to a
  teacher's softened logits on the same training texts (:class:`assay.train.loop.Distillation`, the CNN's),
  which is how a shallower student is trained from the model it replaces (the compression search's
  ``drop_layers``).

Resumable: with a checkpoint folder, each finished epoch is written there (weights as safetensors, the
optimizer's and scheduler's state, the random generators, the history); a run started again with the
same folder, model, data and settings continues after the last finished epoch and ends with the weights
an uninterrupted run ends with (:mod:`assay.train.checkpoint`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from assay.config import validation_message
from assay.data import Dataset, Split
from assay.env import environment
from assay.errors import UsageError
from assay.models.adapters import hf
from assay.train.batching import length_buckets
from assay.train.checkpoint import Checkpoint, RunState, combined
from assay.train.energy import EnergyMeter
from assay.train.loop import (
    Distillation,
    Trained,
    autocast,
    check_losses,
    check_val_loss,
    progress_bar,
    resolve_precision,
    seed_everything,
)

EVAL_BATCH = 64  # texts per validation forward pass


class FinetuneConfig(BaseModel):
    """The defaults are BERT's fine-tuning recipe at the small end (Devlin et al. 2019, appendix A.3)."""

    model_config = ConfigDict(extra="forbid")  # a typo ("epoch = 1") must not silently train 3 epochs

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup: float = Field(0.1, ge=0, lt=1)  # share of all steps with a linear warm-up
    schedule: Literal["linear", "cosine"] = "linear"
    max_grad_norm: float | None = Field(1.0, gt=0)  # None: no clipping
    patience: int = Field(2, ge=1)  # epochs without a lower validation loss before stopping
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    seed: int = 0
    threads: int | None = Field(None, ge=1)

    @classmethod
    def parse(cls, options: dict[str, Any]) -> FinetuneConfig:
        """``options`` checked, or a UsageError naming the first bad one."""
        try:
            return cls.model_validate(options)
        except ValidationError as e:
            raise UsageError(validation_message("Bad fine-tuning option", e)) from None


@dataclass(kw_only=True)
class FinetuneResult(Trained):
    model: nn.Module
    steps: int
    warmup_steps: int
    resumed_from: int  # the last finished epoch found in the checkpoint (0: a fresh start)

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "steps": self.steps,
            "warmup_steps": self.warmup_steps,
            "resumed_from_epoch": self.resumed_from,
        }


def schedule_factor(step: int, warmup_steps: int, total_steps: int, kind: str) -> float:
    """The learning rate at ``step`` (0-based, before the step) as a share of the peak: a linear rise
    over ``warmup_steps``, then a linear or half-cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return max(0.0, 1.0 - progress)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's groups: weight decay on weights, none on biases and on normalisation layers' parameters."""
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    exempt = {
        id(p)
        for module in model.modules()
        for name, p in module.named_parameters(recurse=False)
        if isinstance(module, norms) or name == "bias"
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if id(p) not in exempt], "weight_decay": weight_decay},
        {"params": [p for p in trainable if id(p) in exempt], "weight_decay": 0.0},
    ]


def clipped_step(
    parameters: Sequence[nn.Parameter], optimizer: torch.optim.Optimizer, max_norm: float | None
) -> torch.Tensor | None:
    """One optimizer step after scaling the gradients to a global L2 norm of at most ``max_norm``;
    returns the norm before clipping (None without clipping)."""
    norm = None if max_norm is None else nn.utils.clip_grad_norm_(parameters, max_norm)
    optimizer.step()
    return norm


@dataclass(frozen=True)
class Tokenized:
    """A split's texts as token ids, once: one row of ids per text (unpadded), and the labels."""

    ids: list[list[int]]
    extra: dict[str, list[list[int]]]  # token_type_ids and the like, where the tokenizer gives them
    labels: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(row) for row in self.ids], dtype=np.int64)


def tokenize(tokenizer: Any, split: Split, max_length: int) -> Tokenized:
    texts = [str(t) for t in np.asarray(split.x, dtype=object).reshape(-1)]
    encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
    extra = {k: list(v) for k, v in encoded.items() if k not in ("input_ids", "attention_mask")}
    return Tokenized(list(encoded["input_ids"]), extra, np.asarray(split.y, dtype=np.int64))


def collate(tokens: Tokenized, rows: Iterable[int], pad_id: int, left: bool) -> dict[str, torch.Tensor]:
    """The rows padded to the longest of them (on the tokenizer's side) with an attention mask."""
    rows = list(rows)
    width = max(len(tokens.ids[i]) for i in rows)
    arrays = {"input_ids": np.full((len(rows), width), pad_id, dtype=np.int64)}
    arrays["attention_mask"] = np.zeros((len(rows), width), dtype=np.int64)
    for key in tokens.extra:
        arrays[key] = np.zeros((len(rows), width), dtype=np.int64)
    for r, i in enumerate(rows):
        n = len(tokens.ids[i])
        span = slice(width - n, width) if left else slice(0, n)
        arrays["input_ids"][r, span] = tokens.ids[i]
        arrays["attention_mask"][r, span] = 1
        for key, values in tokens.extra.items():
            arrays[key][r, span] = values[i]
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


class Batches:
    """Padded batches of a tokenized split, in the tokenizer's padding convention."""

    def __init__(self, tokenizer: Any, tokens: Tokenized) -> None:
        if tokenizer.pad_token_id is None:
            raise UsageError(
                f"The tokenizer ({type(tokenizer).__name__}) has no padding token; batches of texts of "
                "different lengths cannot be padded. Set tokenizer.pad_token and save it again."
            )
        self.tokens, self.pad_id = tokens, int(tokenizer.pad_token_id)
        self.left = getattr(tokenizer, "padding_side", "right") == "left"

    def __call__(self, rows: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        inputs = collate(self.tokens, rows.tolist(), self.pad_id, self.left)
        return inputs, torch.from_numpy(self.tokens.labels[rows])


def _logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    logits: torch.Tensor = model(**inputs).logits
    return logits.float()


@torch.no_grad()
def validation_loss(model: nn.Module, batches: Batches, precision: str) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on a tokenized split, in batches sorted by length."""
    model.eval()
    order = np.argsort(batches.tokens.lengths, kind="stable")
    total, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
    for start in range(0, order.shape[0], EVAL_BATCH):
        inputs, labels = batches(order[start : start + EVAL_BATCH])
        with autocast(precision):
            logits = _logits(model, inputs)
        total += nn.functional.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    n = max(1, order.shape[0])
    return float(total) / n, int(correct) / n


def finetune(
    model: nn.Module,
    tokenizer: Any,
    data: Dataset,
    config: FinetuneConfig,
    *,
    max_length: int,
    checkpoint: Path | None = None,
    progress: bool = True,
    description: str = "fine-tuning",
    distillation: Distillation | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``model`` (a ``*ForSequenceClassification``) on ``data.train``'s texts,
    selecting on ``data.val``; the caller's model stays as is.

    ``checkpoint``: a folder where each finished epoch is kept; a run with the same folder resumes after
    the last one (and refuses a folder written for another model, data or settings). ``distillation``:
    a teacher's logits on ``data.train`` (in its order) to learn from besides the labels.
    """
    if data.kind != "text":
        raise UsageError(f"{data.name} holds {data.kind} data; fine-tuning a text classifier takes texts.")
    n_labels = int(getattr(getattr(model, "config", None), "num_labels", data.n_classes))
    if n_labels != data.n_classes:
        raise UsageError(
            f"The model has {n_labels} labels and {data.name} has {data.n_classes} classes; fine-tune it "
            "on data with the classes it was made for."
        )
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    precision = resolve_precision(config.precision)
    model = copy.deepcopy(model).float()
    train_batches = Batches(tokenizer, tokenize(tokenizer, data.train, max_length))
    val_batches = Batches(tokenizer, tokenize(tokenizer, data.val, max_length))
    lengths = train_batches.tokens.lengths
    steps_per_epoch = len(length_buckets(lengths, config.batch_size, seed=config.seed, epoch=0))
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = math.ceil(config.warmup * total_steps)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule_factor(step, warmup_steps, total_steps, config.schedule)
    )
    parameters = [p for p in model.parameters() if p.requires_grad]
    if distillation is not None and distillation.teacher_logits.shape != (data.train.n, n_labels):
        raise UsageError(
            f"The teacher's logits have shape {tuple(distillation.teacher_logits.shape)}; distillation needs "
            f"one row of {n_labels} logits per training text ({data.train.n})."
        )
    identity = _identity(model, data, config, distillation)
    store = Checkpoint(checkpoint, identity=identity) if checkpoint else None
    state = RunState()
    if store is not None:
        state = store.resume(model, optimizer, scheduler) or state
    best_state = state.best_weights if state.best_weights is not None else copy.deepcopy(model.state_dict())

    with EnergyMeter() as meter, progress_bar(progress) as bar:
        task = bar.add_task(description, total=total_steps, info="")
        bar.update(task, completed=state.epoch * steps_per_epoch)
        for epoch in range(state.epoch + 1, config.epochs + 1):
            if state.stopped:
                break
            model.train()
            losses, norms = [], []
            for rows in length_buckets(lengths, config.batch_size, seed=config.seed, epoch=epoch):
                inputs, labels = train_batches(rows)
                with autocast(precision):
                    logits = _logits(model, inputs)
                loss = (
                    nn.functional.cross_entropy(logits, labels)
                    if distillation is None
                    else distillation.loss(logits, labels, torch.from_numpy(rows))
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = clipped_step(parameters, optimizer, config.max_grad_norm)
                scheduler.step()
                losses.append(loss.detach() * labels.shape[0])
                if norm is not None:
                    norms.append(norm.detach())
                bar.advance(task)
            check_losses(losses, epoch, config.lr)
            val_loss, val_acc = validation_loss(model, val_batches, precision)
            check_val_loss(val_loss, epoch, config.lr)
            _record(state.history, losses, norms, config.max_grad_norm, len(lengths), val_loss, val_acc)
            state.history["lr"].append(float(scheduler.get_last_lr()[0]))
            bar.update(task, info=f"epoch {epoch}: val loss {val_loss:.4f}, val acc {val_acc:.2%}")
            state.epoch = epoch
            if val_loss < state.best_loss:
                state.best_loss, state.best_epoch = val_loss, epoch
                best_state = copy.deepcopy(model.state_dict())
            elif epoch - state.best_epoch >= config.patience:
                state.stopped = True
            if store is not None:
                store.save(state, model, optimizer, scheduler, energy=combined(state.energy, meter.now()))
    model.load_state_dict(best_state)
    assert meter.reading is not None
    return FinetuneResult(
        model=model.eval(),
        precision=precision,
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        energy=combined(state.energy, meter.reading),
        history=state.history,
        environment=environment({"train": config.seed}),
        steps=state.epoch * steps_per_epoch,
        warmup_steps=warmup_steps,
        resumed_from=state.resumed_from,
    )


def _record(
    history: dict[str, list[float]],
    losses: list[torch.Tensor],
    norms: list[torch.Tensor],
    max_norm: float | None,
    n: int,
    val_loss: float,
    val_acc: float,
) -> None:
    """One epoch's line of the history: losses, accuracy, and the gradient norms before clipping (their
    mean, and the share of steps clipped)."""
    history["train_loss"].append(float(torch.stack(losses).sum()) / n)
    history["val_loss"].append(val_loss)
    history["val_accuracy"].append(val_acc)
    if max_norm is not None and norms:
        stacked = torch.stack(norms).float()
        history["grad_norm"].append(float(stacked.mean()))
        history["clipped_share"].append(float((stacked > max_norm).float().mean()))


def _identity(
    model: nn.Module, data: Dataset, config: FinetuneConfig, distillation: Distillation | None
) -> dict[str, Any]:
    """What a checkpoint must have been written for to be resumed: the same starting weights, data and
    settings (the thread count aside, which changes no result's meaning), and the same teacher."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    identity: dict[str, Any] = {
        "weights": digest.hexdigest(),
        "data": {"train": data.train.fingerprint(), "val": data.val.fingerprint()},
        "config": config.model_dump(exclude={"threads"}),
    }
    if distillation is not None:
        teacher = distillation.teacher_logits.detach().float().contiguous().numpy().tobytes()
        identity["teacher"] = {
            "logits": hashlib.sha256(teacher).hexdigest(),
            "temperature": distillation.temperature,
            "alpha": distillation.alpha,
        }
    return identity


def open_classifier(folder: Path, max_length: int | None = None) -> tuple[nn.Module, Any, int]:
    """A Hugging Face text classifier folder's model (fp32), tokenizer and truncation length, read as
    the hf adapter reads it (local files, transformers' own classes, no remote code)."""
    about, config = hf.check_config(folder)
    if about["task"] != "text":
        raise UsageError(
            f"{folder}: holds a {about['architecture']}, an image model; fine-tuning takes a text classifier."
        )
    tokenizer = hf.load_tokenizer(folder)
    model = hf.load_pretrained(folder, about["architecture"])
    return model, tokenizer, hf.truncation_length(tokenizer, config, max_length)


def save_classifier(model: nn.Module, tokenizer: Any, max_length: int, folder: Path) -> Path:
    """The model (safetensors) and its tokenizer as ``save_pretrained`` writes them into ``folder``; the
    tokenizer's ``model_max_length`` set to ``max_length``, so the hf adapter truncates as training did."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.model_max_length = max_length
    with hf.offline():
        model.save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]
        tokenizer.save_pretrained(folder)
    return folder

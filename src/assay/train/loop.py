"""One training loop you can read top to bottom.

AdamW with a per-step cosine schedule, early stopping on validation loss (the best weights are kept),
bf16 autocast on CPUs with native bf16 (fp32 otherwise or when asked), seeded shuffling. Nothing is
written to disk here: the caller saves the returned model atomically, so Ctrl-C never leaves a
half-written artifact.

What keeps a step cheap on a CPU (``benchmarks/training_precision.py`` measures it): images and the
convolutions' weights in channels-last memory format, which oneDNN's bf16 and fp32 convolutions run
without reordering every tensor to their blocked layout and back; one shuffled copy of the training set
an epoch instead of a gather per batch; no ``.item()`` per step (the losses stay tensors until the
epoch ends, where divergence is checked); AdamW's fused CPU kernel. The fine-tuning loop for Hugging
Face text classifiers (:mod:`assay.train.finetune`) shares the precision, seeding, progress and
divergence helpers here.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from assay.data import Dataset, Split
from assay.env import cpu_supports_bf16, environment
from assay.errors import TrainingError, UsageError
from assay.models import ZooModel
from assay.train.energy import EnergyMeter, EnergyReading


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo ("epoch = 1") must not silently train 8 epochs

    epochs: int = Field(8, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(3, ge=1)  # epochs without a lower validation loss before stopping
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    # Images (4-D inputs) in channels-last memory format; "contiguous" is the layout PyTorch defaults to,
    # kept to measure the difference (benchmarks/training_precision.py).
    memory_format: Literal["channels_last", "contiguous"] = "channels_last"


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation (Hinton et al. 2015): the loss mixes the labels' cross-entropy with the
    KL divergence to the teacher's softened distribution, ``T**2``-scaled so gradients keep their size."""

    teacher_logits: torch.Tensor  # (N_train, C), in the order of data.train
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the teacher's term

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        soft = nn.functional.kl_div(
            nn.functional.log_softmax(logits.float() / t, dim=1),
            nn.functional.softmax(self.teacher_logits[index] / t, dim=1),
            reduction="batchmean",
        )
        hard = nn.functional.cross_entropy(logits.float(), labels)
        return self.alpha * t * t * soft + (1 - self.alpha) * hard


@dataclass(kw_only=True)
class Trained:
    """What any training run reports besides its model: the lineage's ``training`` and ``history``."""

    precision: Literal["bf16", "fp32"]
    best_epoch: int
    epochs_run: int
    energy: EnergyReading
    history: dict[str, list[float]] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "seconds": round(self.energy.wall_seconds, 2),
            "energy_j": round(self.energy.joules, 1),
            "energy_method": self.energy.method,
            "co2_g": round(self.energy.co2_grams, 3),
            "best_val_loss": min(self.history["val_loss"]),
            "best_val_accuracy": self.history["val_accuracy"][self.best_epoch - 1],
        }


@dataclass(kw_only=True)
class TrainResult(Trained):
    model: ZooModel


def resolve_precision(precision: str) -> Literal["bf16", "fp32"]:
    if precision == "bf16" and not cpu_supports_bf16():
        raise UsageError(
            "precision 'bf16' was asked for but this CPU has no native bf16 (avx512_bf16/amx); "
            "use fp32 or auto."
        )
    if precision == "auto":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return "bf16" if precision == "bf16" else "fp32"


def autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast keeps weights and the optimizer in fp32; only matmuls/convs run in bf16."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # CPU kernels are deterministic for this zoo; warn_only keeps exotic ops from raising.
    torch.use_deterministic_algorithms(True, warn_only=True)


def progress_bar(enabled: bool) -> Progress:
    """The bar every training loop shows: description, bar, steps done of all, the last epoch's line."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
    )
    return Progress(*columns, disable=not enabled, transient=False)


def check_losses(losses: list[torch.Tensor], epoch: int, lr: float) -> None:
    """A TrainingError naming the first step of the epoch whose loss is not finite, if there is one."""
    if not losses:
        return
    stacked = torch.stack([loss.detach().float() for loss in losses])
    bad = torch.nonzero(~torch.isfinite(stacked)).flatten()
    if bad.numel():
        step = int(bad[0])
        raise TrainingError(
            f"Training diverged: the loss became {float(stacked[step])} at epoch {epoch}, step {step + 1} "
            f"(lr={lr:g}). Lower the learning rate or check the inputs; nothing was saved."
        )


def check_val_loss(val_loss: float, epoch: int, lr: float) -> None:
    if not math.isfinite(val_loss):
        raise TrainingError(
            f"Training diverged: the validation loss became {val_loss} at epoch {epoch} "
            f"(lr={lr:g}). Lower the learning rate or check the inputs; nothing was saved."
        )


def _layout(x: torch.Tensor, memory_format: str) -> torch.Tensor:
    if x.ndim == 4 and memory_format == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def train(
    model: ZooModel,
    data: Dataset,
    config: TrainConfig,
    *,
    progress: bool = True,
    distillation: Distillation | None = None,
    description: str = "training",
) -> TrainResult:
    """Train a copy of ``model`` on ``data.train``, select on ``data.val``; the caller's model stays as is.

    With ``distillation`` the training loss also follows a teacher's logits; selection stays on the
    validation cross-entropy, so a student is chosen by the same yardstick as any model.
    """
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    precision = resolve_precision(config.precision)
    model = copy.deepcopy(model)
    images = data.train.x.ndim == 4
    if images and config.memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    steps_per_epoch = math.ceil(len(y) / config.batch_size)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    shuffler = torch.Generator().manual_seed(config.seed)
    loss_fn = nn.CrossEntropyLoss()
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_accuracy": [], "lr": []}
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())

    with EnergyMeter() as meter, progress_bar(progress) as bar:
        task = bar.add_task(description, total=config.epochs * steps_per_epoch, info="")
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.randperm(len(y), generator=shuffler)
            # one copy of the epoch's order; every batch is then a view, not a gather
            xs, ys = _layout(x[order], config.memory_format), y[order]
            losses: list[torch.Tensor] = []
            for step in range(steps_per_epoch):
                rows = slice(step * config.batch_size, (step + 1) * config.batch_size)
                with autocast(precision):
                    logits = model(xs[rows])
                    if distillation is None:
                        loss = loss_fn(logits, ys[rows])
                    else:
                        loss = distillation.loss(logits, ys[rows], order[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.detach() * ys[rows].shape[0])
                bar.advance(task)
            check_losses(losses, epoch, config.lr)
            val_loss, val_acc = evaluate_loss(
                model, data.val, precision, config.batch_size * 4, config.memory_format
            )
            check_val_loss(val_loss, epoch, config.lr)
            history["train_loss"].append(float(torch.stack(losses).sum()) / len(y))
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_acc)
            history["lr"].append(float(schedule.get_last_lr()[0]))
            bar.update(task, info=f"epoch {epoch}: val loss {val_loss:.4f}, val acc {val_acc:.2%}")
            if val_loss < best_loss:
                best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= config.patience:
                break
    model.load_state_dict(best_state)
    model = model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    assert meter.reading is not None
    return TrainResult(
        model=model.eval(),
        precision=precision,
        best_epoch=best_epoch,
        epochs_run=len(history["val_loss"]),
        energy=meter.reading,
        history=history,
        environment=environment({"train": config.seed}),
    )


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, split: Split, precision: str, batch_size: int, memory_format: str = "contiguous"
) -> tuple[float, float]:
    model.eval()
    total, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
    for start in range(0, split.n, batch_size):
        xb = _layout(torch.from_numpy(split.x[start : start + batch_size]), memory_format)
        yb = torch.from_numpy(split.y[start : start + batch_size])
        with autocast(precision):
            logits = model(xb).float()
        total += nn.functional.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    return float(total) / split.n, int(correct) / split.n

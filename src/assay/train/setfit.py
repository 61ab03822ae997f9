"""Few-shot text classification the SetFit way (Tunstall et al. 2022): contrastive fine-tuning of a
sentence encoder on pairs drawn from a handful of labelled texts, then a logistic-regression head.

    labelled texts --pairs--> (a, b, 1 if same class else 0), one positive and one negative pair per text
    per iteration --CosineSimilarityLoss--> the encoder, whose embeddings of same-class texts move together
    --embed the labelled texts--> scikit-learn's logistic regression --> a BertForSequenceClassification

SetFit trains the pooled sentence embedding a sentence-transformers model gives; here the embedding is
what the saved classifier feeds its head, BERT's pooler output of [CLS] (see :mod:`assay.models.heads`),
so the contrastive step trains exactly the features the head is then fitted on and served with. The
loss is SetFit's default: the squared error between the cosine of the two embeddings and the pair's
label. Few labels make few pairs, so the step is cheap: 8 texts per class of 24 classes and 5 iterations
are 1,920 pairs. ``max_pairs`` caps it for larger label budgets (a seeded subset of the pairs).
"""

from __future__ import annotations

import math
import secrets
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress

from assay.data import Dataset
from assay.errors import TrainingError, UsageError
from assay.models.heads import MAX_ITER, FrozenEncoder, fit_head
from assay.train.loop import autocast, resolve_precision, seed_everything


class SetFitConfig(BaseModel):
    """The contrastive step's settings; the defaults are SetFit's, but for fewer iterations (20 in
    SetFit), which keeps a CPU run to minutes."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(5, ge=1)  # pairs per labelled text: one positive and one negative each
    max_pairs: int | None = Field(4000, ge=1)
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-5, gt=0)
    warmup: float = Field(0.1, ge=0, lt=1)  # fraction of the steps with a linear warm-up
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    C: float = Field(1.0, gt=0)  # the head's inverse L2 strength
    seed: int = 0


def per_class(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Sorted indices of ``k`` seeded examples of every class (a few-shot training set)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        if rows.size < k:
            raise UsageError(
                f"Class {int(cls)} has {rows.size} training examples; {k} per class were asked for."
            )
        chosen.append(rng.choice(rows, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def contrastive_pairs(
    labels: np.ndarray, iterations: int, seed: int, max_pairs: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SetFit's pairs over positions of ``labels``: for every text and iteration, one partner of its own
    class and one of another, as (left, right, target) with target 1.0 for same class and 0.0 otherwise,
    shuffled; a seeded subset of ``max_pairs`` where there are more. A text alone in its class gets no
    positive pair (there is no partner for it)."""
    if np.unique(labels).size < 2:
        raise UsageError("Contrastive pairs need texts of at least two classes.")
    rng = np.random.default_rng(seed)
    left, right, target = [], [], []
    for _ in range(iterations):
        for i, y in enumerate(labels):
            same = np.flatnonzero(labels == y)
            same = same[same != i]
            if same.size:
                left.append(i)
                right.append(int(rng.choice(same)))
                target.append(1.0)
            left.append(i)
            right.append(int(rng.choice(np.flatnonzero(labels != y))))
            target.append(0.0)
    order = rng.permutation(len(left))
    if max_pairs is not None:
        order = order[:max_pairs]
    return np.asarray(left)[order], np.asarray(right)[order], np.asarray(target, np.float32)[order]


def _embed(encoder: FrozenEncoder, texts: list[str]) -> torch.Tensor:
    """The classifier head's input for ``texts``, with gradients: BERT's pooler output of [CLS]."""
    predictor = encoder.predictor
    tokens = predictor.tokenizer(
        texts, padding=True, truncation=True, max_length=predictor.max_length, return_tensors="pt"
    )
    pooled: torch.Tensor = predictor.model.get_submodule("bert")(**tokens).pooler_output
    return pooled


def contrastive_finetune(
    encoder: FrozenEncoder, texts: np.ndarray, labels: np.ndarray, config: SetFitConfig, *, progress: bool
) -> dict[str, Any]:
    """Train ``encoder``'s BERT in place on SetFit's pairs of ``texts``; returns what was done."""
    seed_everything(config.seed)
    precision = resolve_precision(config.precision)
    left, right, target = contrastive_pairs(labels, config.iterations, config.seed, config.max_pairs)
    from transformers import get_linear_schedule_with_warmup

    model = encoder.predictor.model.get_submodule("bert")
    steps_per_epoch = math.ceil(len(target) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    schedule = get_linear_schedule_with_warmup(optimizer, round(config.warmup * total), total)
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    model.train()
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("contrastive fine-tune", total=total)
            for _ in range(config.epochs):
                order = torch.randperm(len(target), generator=generator).numpy()
                for step in range(steps_per_epoch):
                    rows = order[step * config.batch_size : (step + 1) * config.batch_size]
                    with autocast(precision):
                        a = _embed(encoder, [str(texts[i]) for i in left[rows]])
                        b = _embed(encoder, [str(texts[i]) for i in right[rows]])
                    cosine = torch.nn.functional.cosine_similarity(a.float(), b.float())
                    loss = torch.nn.functional.mse_loss(cosine, torch.from_numpy(target[rows]))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    losses.append(float(loss.detach()))
                    if not math.isfinite(losses[-1]):
                        raise TrainingError(
                            f"The contrastive loss became {losses[-1]} at step {len(losses)} "
                            f"(lr={config.lr:g}); lower the learning rate. Nothing was saved."
                        )
                    bar.advance(task)
    finally:
        model.eval()
    head_of_run = max(1, len(losses) // 10)
    return {
        "pairs": len(target),
        "positive_pairs": int(target.sum()),
        "steps": len(losses),
        "precision": precision,
        "loss_first": float(np.mean(losses[:head_of_run])),
        "loss_last": float(np.mean(losses[-head_of_run:])),
    }


def setfit_classifier(
    encoder_dir: str | Path,
    data: Dataset,
    out_dir: str | Path,
    *,
    rows: np.ndarray | None = None,
    config: SetFitConfig | None = None,
    max_length: int | None = None,
    progress: bool = False,
) -> Path:
    """SetFit on ``data``'s training texts at ``rows`` (all by default; :func:`per_class` draws a few-shot
    set), saved as a ``BertForSequenceClassification`` folder in ``out_dir`` that the hf adapter imports.

    Example (a minute or two for 8 texts per class of the fortunes' 24 classes on 2 cores)::

        rows = per_class(data.train.y, 8, seed=0)
        setfit_classifier(minilm_dir, data, "minilm-setfit-8", rows=rows)
        # then: assay models import quotes minilm-setfit-8 --data fortunes
    """
    config = config or SetFitConfig()
    if data.kind != "text":
        raise UsageError(f"{data.name} holds {data.kind} data; SetFit fine-tunes on texts.")
    rows = np.arange(data.train.n) if rows is None else np.asarray(rows)
    texts, labels = data.train.x[rows], data.train.y[rows]
    if np.unique(labels).size != data.n_classes:
        raise UsageError(
            f"The labelled texts cover {np.unique(labels).size} of {data.n_classes} classes; the head "
            "needs examples of every class."
        )
    out = Path(out_dir)
    work = out.parent / f".{out.name}.{secrets.token_hex(8)}.encoder"
    try:
        encoder = FrozenEncoder.open(
            encoder_dir, list(data.class_names), work, max_length=max_length, seed=config.seed
        )
        training = contrastive_finetune(encoder, texts, labels, config, progress=progress)
        features = encoder.embed(texts)
        head = fit_head(features, labels, C=config.C, seed=config.seed)
        provenance = {
            "recipe": "setfit",
            "setfit": config.model_dump(),
            "contrastive": training,
            "data": data.name,
            "fingerprint": data.fingerprint(),
            "n_train": int(rows.shape[0]),
            "train_accuracy": float(head.score(features, labels)),
            "converged": bool(np.all(np.asarray(head.n_iter_) < MAX_ITER)),
        }
        return encoder.write(out, head, provenance)
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""Knowledge distillation: a smaller zoo student trained from the teacher's logits and the labels.

The teacher (the model being compressed) runs once over the training split in fp32 (cached on the search's
context); the student trains
with the same loop as any model (:func:`assay.train.train` with a :class:`~assay.train.Distillation`),
so seeding, early stopping on validation loss and energy accounting are the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assay.compress.base import COMPRESSORS, Built, Context
from assay.models import ZooModel, build_model, default_spec, save_model
from assay.train import Distillation, TrainConfig, train
from assay.train.loop import seed_everything


@COMPRESSORS.register("distill")
def distill(source: ZooModel, ctx: Context, out: Path, params: dict[str, Any]) -> Built:
    """``params``: ``spec`` (student overrides, e.g. ``{"channels": [16, 32], "hidden": 64}``),
    ``temperature`` (4), ``alpha`` (0.7, the teacher's weight), ``epochs`` (8, with early stopping: a
    student trained from scratch on softened targets needs more epochs than its teacher did)."""
    data = ctx.data
    spec = default_spec(source.spec["arch"], data.input_shape, data.n_classes, params.get("spec") or {})
    kd = Distillation(
        ctx.teacher_logits(source),
        temperature=float(params.get("temperature", 4.0)),
        alpha=float(params.get("alpha", 0.7)),
    )
    config = TrainConfig(epochs=int(params.get("epochs", 8)), seed=ctx.seed)
    seed_everything(ctx.seed)  # the student's initial weights come from the seed
    result = train(
        build_model(spec), data, config, progress=ctx.progress, distillation=kd, description="distil"
    )
    save_model(result.model, out, extra={"backend": "torch", "precision": "fp32"})
    training = {**result.summary(), "kind": "distillation", "temperature": kd.temperature, "alpha": kd.alpha}
    return Built(spec=spec, training=training)

"""Pruning: structured (channels and neurons physically removed, then a short fine-tune) and magnitude.

Structured pruning uses Torch-Pruning's dependency graph, so removing a convolution's output channels also
removes the matching inputs of the next layer (through batch norm, pooling and the flatten into the dense
layer). Filters are ranked by their L2 norm; the classifier keeps every class. The result is a smaller zoo
model, stored as an ordinary spec + safetensors, that runs faster on any runtime.

Magnitude pruning zeroes the smallest weights across all layers, fine-tunes with the zeros held, and stores
the dense result: without a sparse kernel the zeros are still multiplied, so it claims no speed or size
gain, and the report shows it measured like every other variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from assay.compress.base import COMPRESSORS, Built, Context, Skipped, quiet, working_copy
from assay.models import ZooModel, build_model, save_model
from assay.train import TrainConfig, train


def _finetune(model: ZooModel, ctx: Context, what: str) -> tuple[ZooModel, dict[str, Any]]:
    """A short fine-tune on the labels. Distilling from the unpruned model instead (T = 4, alpha = 0.7)
    was tried and lost accuracy in the same 2 epochs on the demo CNN (25% pruned: 90.98% against 91.52%;
    50%: 90.77% against 91.09%): the softened targets need longer than a short fine-tune to pay off."""
    config = TrainConfig(epochs=ctx.finetune_epochs, lr=1e-3, patience=ctx.finetune_epochs, seed=ctx.seed)
    result = train(model, ctx.data, config, progress=ctx.progress, description=f"fine-tune ({what})")
    return result.model, {**result.summary(), "kind": "fine-tune", "epochs_asked": ctx.finetune_epochs}


def slim_spec(model: ZooModel) -> dict[str, Any]:
    """The zoo spec of a pruned model, read from the layer widths it has now."""
    spec = dict(model.spec)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]  # in order; the classifier last
    if spec["arch"] == "cnn":
        spec["channels"] = [m.out_channels for m in convs]
        spec["hidden"] = dense[0].out_features
    elif spec["arch"] == "mlp":
        spec["hidden"] = [m.out_features for m in dense[:-1]]
    else:
        raise Skipped(f"structured pruning does not know how to describe a pruned '{spec['arch']}' model")
    return spec


def _ratio(params: dict[str, Any]) -> float:
    ratio = float(params.get("ratio", 0.5))
    if not 0 < ratio < 1:
        raise Skipped(f"a pruning ratio must lie strictly between 0 and 1; got {ratio}")
    return ratio


@COMPRESSORS.register("prune_structured")
def prune_structured(source: ZooModel, ctx: Context, out: Path, params: dict[str, Any]) -> Built:
    try:
        import torch_pruning as tp
    except ImportError:
        raise Skipped("structured pruning needs torch-pruning: pip install 'assay[compress]'") from None
    ratio = _ratio(params)
    model = working_copy(source)
    example = torch.from_numpy(ctx.calibration()[:1])
    with quiet():
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=ratio,
            ignored_layers=[model.classifier],
        )
        pruner.step()
    spec = slim_spec(model)
    slim = build_model(spec)  # an ordinary zoo model: the stored spec rebuilds it exactly
    slim.load_state_dict(model.state_dict())
    tuned, training = _finetune(slim, ctx, f"{ratio:.0%} of channels removed")
    save_model(tuned, out, extra={"backend": "torch", "precision": "fp32"})
    return Built(spec=spec, training=training)


def _prunable(model: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


class _Mask(nn.Module):
    """A parametrization that holds pruned weights at zero during fine-tuning (and survives deepcopy,
    which torch.nn.utils.prune's hooks do not)."""

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


@COMPRESSORS.register("prune_magnitude")
def prune_magnitude(source: ZooModel, ctx: Context, out: Path, params: dict[str, Any]) -> Built:
    ratio = _ratio(params)
    model = working_copy(source)
    layers = _prunable(model)
    magnitudes = torch.cat([m.weight.detach().abs().flatten() for m in layers])
    threshold = torch.quantile(magnitudes, ratio)  # one global threshold across layers
    for m in layers:
        parametrize.register_parametrization(
            m, "weight", _Mask((m.weight.detach().abs() > threshold).float())
        )
    tuned, training = _finetune(model, ctx, f"{ratio:.0%} of weights zeroed")
    for m in _prunable(tuned):
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    weights = torch.cat([m.weight.detach().flatten() for m in _prunable(tuned)])
    zeros = float((weights == 0).float().mean())
    save_model(tuned, out, extra={"backend": "torch", "precision": "fp32", "sparsity": zeros})
    note = f"{zeros:.1%} of conv/linear weights are zero; dense kernels and storage: no speed or size claim"
    return Built(spec=source.spec, training=training, notes=[note])

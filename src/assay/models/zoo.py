"""The model zoo: every model is built from a JSON-able spec, so a stored spec rebuilds it exactly.

Every zoo model returns logits from ``forward`` and its penultimate-layer activations from ``features``
(the representation OOD detectors and drift monitors read).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from assay.errors import ConfigError
from assay.plugins import Registry


class ZooModel(nn.Module):
    spec: dict[str, Any]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCNN(ZooModel):
    """Conv-BN-ReLU-MaxPool blocks, then one hidden dense layer: ~0.4 M parameters at the defaults."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        in_ch, size = int(spec["in_channels"]), int(spec["image_size"])
        layers: list[nn.Module] = []
        for out_ch in spec["channels"]:
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            in_ch, size = out_ch, size // 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.neck = nn.Sequential(nn.Linear(in_ch * size * size, spec["hidden"]), nn.ReLU())
        self.dropout = nn.Dropout(spec["dropout"])
        self.classifier = nn.Linear(spec["hidden"], spec["n_classes"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.body(x))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features))


class MLP(ZooModel):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        width = int(spec["n_features"])
        for hidden in spec["hidden"]:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(spec["dropout"])]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, spec["n_classes"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


ZOO: Registry[Callable[[dict[str, Any]], ZooModel]] = Registry("model")
ZOO.add("cnn", SmallCNN)
ZOO.add("mlp", MLP)

_DEFAULTS: dict[str, dict[str, Any]] = {
    "cnn": {"channels": [32, 64], "hidden": 128, "dropout": 0.25},
    "mlp": {"hidden": [128, 64], "dropout": 0.1},
}


def default_spec(
    arch: str, input_shape: tuple[int, ...], n_classes: int, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A complete spec for ``arch`` on inputs of ``input_shape`` (without the batch dimension)."""
    ZOO.get(arch)  # raises with the known names
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(_DEFAULTS[arch]))
    if unknown:
        raise ConfigError(
            f"Cannot set {unknown} on a '{arch}' model: the data decides the input and class sizes, and "
            f"the architecture's own options are {sorted(_DEFAULTS[arch])}."
        )
    spec: dict[str, Any] = {"arch": arch, "n_classes": n_classes, **_DEFAULTS[arch]}
    if arch == "cnn":
        if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
            raise ConfigError(
                f"The cnn needs square images (C, H, W); got input shape {input_shape}. Use mlp for tables."
            )
        spec.update(in_channels=input_shape[0], image_size=input_shape[1])
    else:
        spec["n_features"] = int(torch.Size(input_shape).numel())
    spec.update(overrides)
    return spec


def input_shape(spec: dict[str, Any]) -> tuple[int, ...]:
    """The shape of one input the model takes (without the batch dimension): (C, H, W) for the cnn, the
    flat feature count otherwise (an mlp flattens whatever it is given); an imported model's spec says."""
    if "input_shape" in spec:
        return tuple(int(d) for d in spec["input_shape"])
    if spec["arch"] == "cnn":
        return (int(spec["in_channels"]), int(spec["image_size"]), int(spec["image_size"]))
    return (int(spec["n_features"]),)


def build_model(spec: dict[str, Any]) -> ZooModel:
    if "arch" not in spec:
        raise ConfigError(
            f"A model spec needs an 'arch' key (one of {ZOO.names()}); got keys {sorted(spec)}."
        )
    try:
        return ZOO.get(spec["arch"])(spec)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"Invalid spec for model '{spec['arch']}': {e!r}.") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

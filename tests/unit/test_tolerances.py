"""The tolerance helpers hold what they promise: Higham's bound covers float32 sums in every order tried, the
network bound's forward propagation equals the exact first-order one (autograd through every rounding)
and covers float32 forward passes in other summation orders, and argmax comparisons leave out exactly
the rows a rounding could flip."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from assay.models import build_model, default_spec
from assay.models.predictor import FastTorchPredictor
from tests.unit.tolerances import (
    LAMBDA,
    U32,
    U64,
    assert_same_decisions,
    assert_within,
    decided,
    gamma,
    gamma_probable,
    l2_norm_error,
    network_forward,
)


def test_gamma_covers_float32_sums_and_norms_in_any_order() -> None:
    x = np.random.default_rng(0).normal(size=(20, 4096)).astype(np.float32)
    exact = x.astype(np.float64).sum(axis=1)
    orders = {
        "pairwise": x.sum(axis=1, dtype=np.float32),
        "sequential": np.cumsum(x, axis=1, dtype=np.float32)[:, -1],
        "reversed": np.cumsum(x[:, ::-1], axis=1, dtype=np.float32)[:, -1],
        "torch": torch.from_numpy(x).sum(dim=1).numpy(),
    }
    absolute = np.abs(x.astype(np.float64)).sum(axis=1)
    for name, got in orders.items():
        assert_within(got, exact, gamma(x.shape[1]) * absolute, f"{name} sum")
        assert_within(got, exact, gamma_probable(x.shape[1]) * absolute, f"{name} sum, probable bound")
    assert gamma_probable(x.shape[1]) < gamma(x.shape[1]) / 5
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    for got in (np.linalg.norm(x, axis=1), torch.from_numpy(x).norm(dim=1).numpy()):
        assert_within(got, norms, l2_norm_error(x.shape[1]) * norms, "float32 norm")
    with pytest.raises(ValueError):
        gamma(2**24)


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    model = build_model(default_spec("cnn", (1, 12, 12), 3, {"channels": [4, 8], "hidden": 16}))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # statistics and affine terms as after training
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.normal_(1, 0.3)
            m.bias.data.normal_(0, 0.3)
    return model.eval()


_X = np.random.default_rng(1).random((8, 1, 12, 12), dtype=np.float32)


def _exact_first_order(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The logits' error proxy by autograd: sum over every layer output of (d logit / d output)^2 times
    the proxy of the roundings that made it, as the bound's per-layer rules state them."""
    net = copy.deepcopy(model).double().eval()
    made: list[tuple[torch.Tensor, torch.Tensor]] = []
    last: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        a = inputs[0].detach()
        if isinstance(module, nn.Conv2d | nn.Linear):  # n additions of at most S, n products w a
            w = module.weight.detach()
            if isinstance(module, nn.Conv2d):
                s = F.conv2d(a.abs(), w.abs(), None, module.stride, module.padding)
                products = F.conv2d(a.square(), w.square(), None, module.stride, module.padding)
                last["s"] = s
            else:
                s = F.linear(a.abs(), w.abs(), module.bias.detach().abs())
                products = F.linear(a.square(), w.square())
            made.append((out, (w[0].numel() * s.square() + products).sqrt()))
        elif isinstance(module, nn.BatchNorm2d):
            scale = (module.weight / (module.running_var + module.eps).sqrt()).detach().view(1, -1, 1, 1)
            mean, beta = module.running_mean.view(1, -1, 1, 1), module.bias.detach().view(1, -1, 1, 1)
            shift = (mean * scale).abs() + beta.abs()
            made.append((out, math.sqrt(6) * (scale.abs() * last["s"] + shift)))

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    logits = net(torch.from_numpy(x).double().requires_grad_(True))
    for h in handles:
        h.remove()
    outs = [o for o, _ in made]
    var = torch.zeros(logits.shape, dtype=torch.float64)
    for k in range(logits.shape[1]):
        grads = torch.autograd.grad(logits[:, k].sum(), outs, retain_graph=True)
        for g, (_, proxy) in zip(grads, made, strict=True):
            var[:, k] += (g * proxy).pow(2).flatten(1).sum(1).detach()
    return np.asarray(var.sqrt().numpy())


def test_the_forward_bound_equals_the_exact_first_order_propagation() -> None:
    # The forward pass takes the errors of a layer's outputs as uncorrelated; autograd keeps every
    # correlation through shared upstream roundings. They agree here to a few percent at most.
    model = _cnn()
    forward = network_forward(model, _X).logits_bound / (LAMBDA * (U32 + U64))
    exact = _exact_first_order(model, _X)
    np.testing.assert_allclose(forward, exact, rtol=0.05)


def test_the_bound_covers_float32_in_other_orders_and_is_not_vacuous() -> None:
    model = _cnn()
    ref = network_forward(model, _X)
    x = torch.from_numpy(_X)
    with torch.no_grad():
        computed = {
            "module": model(x).numpy(),
            "one at a time": torch.cat([model(x[i : i + 1]) for i in range(len(x))]).numpy(),
            "folded, channels-last": FastTorchPredictor(model).logits_and_features(_X)[0],
            "reversed input channels of the dense layer": _dense_reversed(model, x),
        }
    for name, got in computed.items():
        assert_within(got, ref.logits, ref.logits_bound, name)
    assert (ref.logits_bound < 1e-4 * np.abs(ref.logits).max()).all()  # float32 rounding, not a loose bound
    # inputs that went through another float32 path: each one rounding (u |x|) away, up or down
    signs = np.where(np.random.default_rng(2).random(_X.shape) < 0.5, -1.0, 1.0)
    with torch.no_grad():
        moved = copy.deepcopy(model).double()(torch.from_numpy(_X * (1 + U32 * signs))).numpy()
    rounded_inputs = network_forward(model, _X, input_u=U32)
    assert_within(moved, ref.logits, rounded_inputs.logits_bound, "logits of inputs one rounding away")
    with pytest.raises(TypeError, match="no rounding bound for Tanh"):
        network_forward(_WithTanh(), _X)


def _dense_reversed(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The logits with the first dense layer's inputs in reverse order: the same sums, another order."""
    flat = model.body(x)  # type: ignore[operator]
    neck = model.neck[0]  # type: ignore[index]
    hidden = torch.relu(F.linear(flat.flip(1), neck.weight.flip(1), neck.bias))
    return np.asarray(model.classifier(hidden).numpy())  # type: ignore[operator]


class _WithTanh(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Tanh()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x.flatten(1))

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return f


def test_decisions_are_compared_only_where_rounding_cannot_flip_them() -> None:
    reference = np.array([[1.0, 0.0, -1.0], [0.5, 0.5 + 1e-9, 0.0], [0.0, 2.0, 1.0]])
    bound = np.full(reference.shape, 1e-6)
    assert decided(reference, bound).tolist() == [True, False, True]  # row 1 is a tie within rounding
    flipped_tie = reference[[0, 1, 2]] + np.array([[0, 0, 0], [2e-9, 0, 0], [0, 0, 0]])
    assert_same_decisions(reference, bound, flipped_tie, max_undecided=0.34)
    with pytest.raises(AssertionError, match="1 decided rows pick another class"):
        assert_same_decisions(reference, bound, reference[:, ::-1], max_undecided=0.34)
    with pytest.raises(AssertionError, match="within rounding of a tie"):
        assert_same_decisions(reference, bound, reference, max_undecided=0.2)

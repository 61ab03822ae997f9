"""Tolerances from the arithmetic, so that a comparison holds on every CPU and still fails on a real error.

Another CPU computes a float32 reduction (a sum, matmul, convolution, norm or softmax) in another order:
AVX2 adds 8 lanes at a time and AVX-512 16, MKL and oneDNN block by cache size and thread count, AMX by
tiles. The results differ by rounding, by an amount the arithmetic bounds; what one machine happened to
produce says nothing about the next. The bounds, stated once:

- :func:`gamma`: Higham's deterministic bound, for any order of summation: a sum (or dot product) of n
  terms is within ``gamma(n) * sum(|terms|)`` of the exact one (Higham, *Accuracy and Stability of
  Numerical Algorithms*, 2nd ed., 2002, section 3.1). Tight enough for one short reduction, such as a
  norm; :func:`gamma_probable` is its probabilistic counterpart for long ones.
- :func:`network_forward`: through a whole network the deterministic bound is useless (it gives every
  rounding error the worst sign, and grows with the product of absolute weights: on the default CNN it
  allows 0.45 on logits no larger than 0.18, where kernels differ by 1e-7). It carries instead the
  probabilistic bound of Higham & Mary (2019, "A new approach to probabilistic rounding error
  analysis", SIAM J. Sci. Comput. 41(5)): each rounding multiplies by (1 + d) with |d| <= u, the d
  independent with mean zero. To first order an error is then sum(c_r * d_r), and P(|error| > LAMBDA *
  sigma) <= 2 exp(-LAMBDA^2 / 2) with sigma^2 = u^2 * sum(c_r^2) (Hoeffding), whatever the order of the
  sums; sigma is carried per value through a float64 forward pass of the same network.
- :func:`assert_same_decisions`: an argmax can flip where the top-2 margin is within the logits' error;
  compare decisions only where it is not, and say how many were left out.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

U32 = 2.0**-24  # float32's unit roundoff: one correctly rounded operation moves a value by <= |value| * U32
U64 = 2.0**-53
LAMBDA = 8.0  # P(|error| > 8 sigma) <= 2 exp(-32), about 2.5e-14 per value: no test run will see one


def gamma(n: int, u: float = U32) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative bound on a sum or dot product of n terms, in any order
    (relative to the sum of the terms' absolute values)."""
    if n * u >= 1:
        raise ValueError(f"gamma({n}) is unbounded at u = {u:g}")
    return n * u / (1 - n * u)


def gamma_probable(n: int, u: float = U32, lam: float = LAMBDA) -> float:
    """Higham & Mary's probabilistic gamma_n(lam) = exp(lam sqrt(n) u + n u^2 / (1 - u)) - 1, about
    lam sqrt(n) u: a sum or dot product of n terms, in any order, is within it (relative to the terms'
    absolute sum) with probability at least 1 - 2n exp(-lam^2 (1 - u)^2 / 2), 1 - 1.3e-10 at n = 5000 and
    lam = 8 (their Theorem 3.1). For long float32 sums, where gamma(n) is far too pessimistic."""
    return math.expm1(lam * math.sqrt(n) * u + n * u * u / (1 - u))


def l2_norm_error(d: int, u: float = U32) -> float:
    """Relative bound on a computed Euclidean norm of d values, any order: the sum of the d squares is within
    gamma(d) of its exact value (each term's square and d - 1 additions), the square root halves that and
    rounds once more."""
    return gamma(d, u) / 2 + u


@dataclass(frozen=True)
class Forward:
    """A network's outputs computed in float64 (the reference) and, per value, the bound on how far a float32
    computation of the same network, in any summation order, lies from it."""

    logits: np.ndarray
    logits_bound: np.ndarray
    features: np.ndarray
    features_bound: np.ndarray


# Roundings a BatchNorm (eval) costs, folded or not: rsqrt(var + eps), times gamma, the shift (mean * scale,
# beta minus it), and applying scale and shift; folded, the scale is multiplied into each convolution weight.
_BATCHNORM_ROUNDINGS = 6
BF16_U = 2.0**-8  # bfloat16's unit roundoff (8 significant bits)


class _Tracker:
    """Forward hooks that carry, beside every tensor the network computes, the proxy sigma of its error and
    the magnitude its last roundings were relative to.

    A convolution or linear output sums n products w a (n + 1 terms with a bias), in whatever order the
    kernel likes: each product rounds once (u |w a|), each of the n additions rounds a partial sum no larger
    than the terms' absolute sum S (u S). Where the operands are rounded first (bf16 weights or autocast,
    ``operand_u``), each product carries two more roundings and the output one. The errors carried in
    propagate as W e; the outputs of a layer are made by distinct roundings, so their errors are taken as
    uncorrelated and add in quadrature (the first-order variance, up to what shared upstream roundings
    correlate, which tests/unit/test_tolerances.py checks against the exact first-order propagation).
    ReLU and max-pooling pass on the error of the value they pass on (1-Lipschitz, exact otherwise)."""

    def __init__(self, u: float, operand_u: float) -> None:
        self.u, self.operand_u = u, operand_u
        self.table: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def put(self, t: torch.Tensor, sigma: torch.Tensor, magnitude: torch.Tensor) -> None:
        self.table[t.data_ptr()] = (t, sigma, magnitude)  # t is kept: its address cannot be reused

    def get(self, t: torch.Tensor, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self.table.get(t.data_ptr())
        if entry is None or entry[1].numel() != t.numel():
            raise TypeError(
                f"{type(module).__name__}'s input was made outside the layers this bound supports"
            )
        return entry[1].reshape(t.shape), entry[2].reshape(t.shape)

    def hook(self, module: nn.Module, inputs: tuple[Any, ...], out: torch.Tensor) -> None:
        (a,) = inputs
        sigma, magnitude = self.get(a, module)
        if isinstance(module, nn.Conv2d | nn.Linear):
            sigma, magnitude = self._dot(module, a, sigma, out)
        elif isinstance(module, nn.BatchNorm2d):
            sigma, magnitude = self._batchnorm(module, sigma, magnitude)
        elif isinstance(module, nn.ReLU):
            sigma, magnitude = sigma * (a > 0), out.abs()
        elif isinstance(module, nn.MaxPool2d):
            _, where = F.max_pool2d(
                a, module.kernel_size, module.stride, module.padding, module.dilation, return_indices=True
            )
            sigma = sigma.flatten(2).gather(2, where.flatten(2)).view(out.shape)
            magnitude = out.abs()
        elif isinstance(module, nn.Flatten):
            sigma, magnitude = sigma.flatten(module.start_dim, module.end_dim), out.abs()
        elif isinstance(module, nn.Dropout | nn.Identity):  # the identity in eval mode
            magnitude = out.abs()
        else:
            raise TypeError(f"no rounding bound for {type(module).__name__}")
        self.put(out, sigma, magnitude)

    def _dot(
        self, module: nn.Conv2d | nn.Linear, a: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        conv = module if isinstance(module, nn.Conv2d) else None
        if conv is not None and conv.padding_mode != "zeros":
            raise TypeError(f"padding_mode {conv.padding_mode!r} is not supported")

        def apply(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            if conv is None:
                return F.linear(z, w)
            return F.conv2d(z, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)

        magnitude = apply(a.abs(), module.weight.abs())
        if module.bias is not None:
            magnitude = magnitude + module.bias.abs().view((1, -1, 1, 1) if conv is not None else (1, -1))
        n = module.weight[0].numel()
        products = apply(a.square(), module.weight.square())  # sum of (w a)^2
        fresh = (
            n * (self.u * magnitude).square()
            + (self.u**2 + 2 * self.operand_u**2) * products
            + (self.operand_u * out).square()
        )
        carried = apply(sigma.square(), module.weight.square())
        return (carried + fresh).sqrt(), magnitude

    def _batchnorm(
        self, module: nn.BatchNorm2d, sigma: torch.Tensor, magnitude: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if module.training or module.running_var is None or module.running_mean is None:
            raise TypeError("only a BatchNorm2d in eval mode with running statistics is supported")
        scale = module.running_var.add(module.eps).rsqrt()
        if module.weight is not None:
            scale = scale * module.weight
        shift = module.running_mean.abs() * scale.abs()
        if module.bias is not None:
            shift = shift + module.bias.abs()
        scale, shift = scale.abs().view(1, -1, 1, 1), shift.view(1, -1, 1, 1)
        # relative to the convolution's terms before it (folded, each weight carries the scale's roundings)
        magnitude = scale * magnitude + shift
        fresh = _BATCHNORM_ROUNDINGS * (max(self.u, self.operand_u) * magnitude).square()
        return ((scale * sigma).square() + fresh).sqrt(), magnitude


def network_forward(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    *,
    u: float = U32,
    operand_u: float = 0.0,
    input_u: float = 0.0,
) -> Forward:
    """The float64 forward pass of a zoo-style model (``features`` then ``head``) of Conv2d, Linear,
    BatchNorm2d (eval), ReLU, MaxPool2d, Flatten and Dropout layers, and for every feature and logit the
    bound LAMBDA sigma on how far a computation of it (folded or not, any kernel) lies from this reference:
    arithmetic at unit roundoff ``u``, with each product's operands first rounded at ``operand_u`` where
    they are (bf16 weights or autocast: ``operand_u=BF16_U`` with float32 accumulation), plus the
    reference's own (the same proxy at float64's unit roundoff). ``input_u``: the inputs themselves carry
    one rounding each at that unit roundoff (another path computed them: a standardisation, a cast), not
    none. The model is left untouched."""
    net = copy.deepcopy(model).double().eval()
    tracker = _Tracker(u, operand_u)
    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(tracker.hook) for m in leaves]
    try:
        with torch.no_grad():
            x64 = torch.as_tensor(np.asarray(x)).double()
            tracker.put(x64, input_u * x64.abs(), x64.abs())  # float32 inputs are exact in float64
            features = net.features(x64)  # type: ignore[operator]
            logits = net.head(features)  # type: ignore[operator]
            sigmas = [tracker.get(t, net)[0] for t in (logits, features)]
    finally:
        for h in handles:
            h.remove()
    # The reference's own proxy is this one at float64's unit roundoff: at most U64 / u of it.
    scale = LAMBDA * (1 + U64 / u)
    return Forward(logits.numpy(), scale * sigmas[0].numpy(), features.numpy(), scale * sigmas[1].numpy())


def assert_within(got: np.ndarray | torch.Tensor, want: np.ndarray, bound: np.ndarray, what: str) -> None:
    """``|got - want| <= bound`` element by element, with the worst element's numbers in the message."""
    got64 = np.asarray(got, dtype=np.float64)
    excess = np.abs(got64 - want) / np.maximum(bound, np.finfo(np.float64).tiny)
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
    at = tuple(int(i) for i in worst)
    assert excess[worst] <= 1.0, (
        f"{what}: |{got64[worst]:.9g} - {want[worst]:.9g}| = {abs(got64[worst] - want[worst]):.3g} exceeds "
        f"the rounding bound {bound[worst]:.3g} at {at}"
    )


def decided(reference: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Rows whose argmax no computation within ``bound`` of ``reference`` can change: the top value beats each
    other by more than the two bounds together (so both stay on their side of each other)."""
    top = reference.argmax(axis=1)
    rows = np.arange(len(reference))
    gap = reference[rows, top][:, None] - reference - (bound[rows, top][:, None] + bound)
    gap[rows, top] = np.inf
    return np.asarray(gap.min(axis=1) > 0)


def assert_same_decisions(
    reference: np.ndarray, bound: np.ndarray, *computed: np.ndarray, max_undecided: float
) -> None:
    """Every ``computed`` array of scores picks the reference's argmax on each row the rounding bound cannot
    flip; at most ``max_undecided`` of the rows may be too close to call (so the check still checks)."""
    sure = decided(reference, bound)
    assert 1 - sure.mean() <= max_undecided, f"{1 - sure.mean():.1%} of the rows are within rounding of a tie"
    want = reference.argmax(axis=1)[sure]
    for scores in computed:
        picked = np.asarray(scores).argmax(axis=1)[sure]
        assert np.array_equal(picked, want), f"{int((picked != want).sum())} decided rows pick another class"

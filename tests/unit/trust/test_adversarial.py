"""Adversarial robustness: FGSM equals torchattacks (L-inf exactly, L2 to the rounding and the 1e-10 in
torchattacks' normalisation), PGD (L-inf, L2) agrees within 1 point and
Square within 4 points (its own random search), Square stays in the threat model, counts its queries
and never raises a margin, restarts only help the attacker, the model is left untouched, the sanity
flags hold on a real model and catch a gradient-masking one, and the black-box attacks actually attack."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from assay.errors import UsageError
from assay.metrics import adversarial as adv
from tests.conftest import needs_fashion_mnist
from tests.unit.tolerances import U32, assert_within, l2_norm_error, network_forward
from tests.unit.trust.conftest import SmallModel

pytestmark = needs_fashion_mnist


def _torchattacks() -> Any:
    # Installed apart (pip install --no-deps torchattacks==3.5.1): see the note in pyproject.toml.
    return pytest.importorskip(
        "torchattacks", reason="install it with: pip install --no-deps torchattacks==3.5.1"
    )


N = 300
# FGSM's batch is a power of two: torchattacks' mean loss then scales the gradient by exactly 2^-8, every
# later rounding commutes with that scaling, and its gradient is ours (summed loss) times 2^-8 bit for bit,
# whatever the kernels. With 300 (1/300 is inexact) the two gradients round differently, and a component
# within rounding of 0 may change sign: an L-inf pixel off by 2 eps.
FGSM_N = 256


def _data(small: SmallModel, n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(small.x_test[:n]), torch.from_numpy(small.y_test[:n])


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((adv.predict_labels(model, x) == y.numpy()).mean())


def _pgdl2_step_gap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> np.ndarray:
    """How far torchattacks' one PGD-L2 step (no random start, step eps) may lie from our FGSM-L2, per pixel.

    Both normalise the same gradient (see FGSM_N). torchattacks divides by its norm plus 1e-10: a step
    shorter by 1e-10 / (norm + 1e-10) of eps, up to 4e-4 on confident examples, whose mean-loss gradient
    norm is ~1e-7. It then scales the step back to eps where the step's computed norm (a float32 reduction
    over the d pixels, relative error <= l2_norm_error(d), plus the pixels' roundings, <= 2 u (1 + eps)
    each) comes out above eps. Ten more correctly rounded operations at most, on values <= 1 + eps (x is in
    [0, 1]); clamping into [0, 1] can only shrink a difference."""
    d = x[0].numel()
    grad_norm = adv._input_grad(model, x, y).double().flatten(1).norm(dim=1) / len(x)  # the mean loss's
    shorter = 1e-10 / (grad_norm + 1e-10)
    rescaled = eps * l2_norm_error(d) + 2 * U32 * (1 + eps) * math.sqrt(d)
    per_example = eps * shorter + rescaled + 10 * U32 * (1 + eps)
    return np.broadcast_to(per_example.numpy()[:, None, None, None], tuple(x.shape))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_equals_torchattacks(small_model: SmallModel, norm: str) -> None:
    x, y = _data(small_model, FGSM_N)
    torchattacks = _torchattacks()
    m = small_model.model
    eps = 0.1 if norm == "linf" else 1.0
    ours = adv.fgsm(m, x, y, adv.ThreatModel(norm, eps))  # type: ignore[arg-type]
    if norm == "linf":  # the same signs, the same two correctly rounded operations (add, clamp)
        ref = torchattacks.FGSM(m, eps=eps)(x, y)
        torch.testing.assert_close(ours, ref, atol=0, rtol=0)
    else:  # torchattacks has no L2 FGSM: one PGD-L2 step of size eps without random start is exactly it
        ref = torchattacks.PGDL2(m, eps=eps, alpha=eps, steps=1, random_start=False)(x, y)
        assert_within(ours, ref.double().numpy(), _pgdl2_step_gap(m, x, y, eps), "FGSM-L2 vs torchattacks")
    assert _acc(m, ours, y) < _acc(m, x, y) - 0.2  # it is a real attack


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("linf", 0.1), ("l2", 0.5), ("l2", 1.0)])
def test_pgd_robust_accuracy_within_one_point_of_torchattacks(
    small_model: SmallModel, norm: str, eps: float
) -> None:
    x, y = _data(small_model)
    m = small_model.model
    ours = _acc(m, adv.pgd(m, x, y, adv.ThreatModel(norm, eps), steps=20, seed=0), y)  # type: ignore[arg-type]
    torchattacks = _torchattacks()
    attack_cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    torch.manual_seed(0)
    ref = _acc(m, attack_cls(m, eps=eps, alpha=2.5 * eps / 20, steps=20, random_start=True)(x, y), y)
    assert abs(ours - ref) <= 0.01
    assert ours < _acc(m, x, y) - 0.05


def test_restarts_never_help_the_defender_and_perturbations_stay_in_the_ball(small_model: SmallModel) -> None:
    x, y = _data(small_model)
    m = small_model.model
    threat = adv.ThreatModel("linf", 0.03)
    one = adv.pgd(m, x, y, threat, steps=5, restarts=1, seed=1)
    three = adv.pgd(m, x, y, threat, steps=5, restarts=3, seed=1)
    assert _acc(m, three, y) <= _acc(m, one, y)
    # x + delta rounds once (<= u (1 + eps)), and so does the test's own subtraction
    assert float((three - x).abs().max()) <= 0.03 + 2 * U32 * (1 + 0.03)
    assert float(three.min()) >= 0 and float(three.max()) <= 1
    l2 = adv.pgd(m, x, y, adv.ThreatModel("l2", 0.7), steps=5)
    # The projection scales by eps / (computed norm): true norm <= eps (1 + e)(1 + u), e the relative error
    # of a norm over d pixels; adding x rounds each pixel (<= u (1 + eps)); the test's subtraction and norm
    # cost (1 + u)(1 + e) again.
    d, e = x[0].numel(), l2_norm_error(x[0].numel())
    bound = (0.7 * (1 + e) * (1 + U32) + U32 * (1 + 0.7) * math.sqrt(d)) * (1 + U32) * (1 + e)
    assert float((l2 - x).flatten(1).norm(dim=1).max()) <= bound


def test_the_model_is_left_untouched(small_model: SmallModel) -> None:
    x, y = _data(small_model)
    m = small_model.model
    before = {k: v.clone() for k, v in m.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in m.parameters()]
    adv.pgd(m, x[:50], y[:50], adv.ThreatModel("linf", 0.1), steps=3)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    after = [p.grad for p in m.parameters()]
    assert all((g is None and a is None) or (g is not None and a is not None and torch.equal(g, a))
               for g, a in zip(grads, after, strict=True))  # fmt: skip
    assert not m.training


def test_sanity_flags_hold_on_a_real_model(small_model: SmallModel) -> None:
    x, y = _data(small_model)
    curve = adv.robustness_curve(small_model.model, x[:200], y[:200], norm="linf", steps=10)
    ms = adv.curve_measurements(curve, n_classes=8, steps=10)
    sanity = ms[-1]
    assert sanity.name == "adv_sanity[linf]" and sanity.value == 0, sanity.details
    pgd01 = next(m for m in ms if m.name == "adv_accuracy[pgd-linf@0.1]")
    assert pgd01.details["eps_units"] == "input units" and pgd01.details["input_range"] == [0.0, 1.0]
    assert pgd01.ci_low is not None and pgd01.ci_low <= (pgd01.value or 0) <= (pgd01.ci_high or 0)


class _Masked(nn.Module):
    """Rounds its inputs to 2 levels first: zero gradients everywhere, the textbook gradient masking."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x))


def test_sanity_flags_catch_gradient_masking(small_model: SmallModel) -> None:
    x, y = _data(small_model)
    masked = _Masked(small_model.model).eval()
    assert float(adv._input_grad(masked, x[:20], y[:20]).abs().max()) == 0.0
    curve = adv.robustness_curve(masked, x[:200], y[:200], norm="linf", steps=5)
    flags = adv.sanity_flags(curve, n_classes=8)["flags"]
    assert flags["eps0_equals_clean"] and not flags["huge_eps_near_zero"]


def test_transfer_from_the_same_model_equals_white_box_pgd(small_model: SmallModel) -> None:
    x, y = _data(small_model)
    m = small_model.model

    def scores(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return m(torch.from_numpy(batch)).numpy()

    [transfer] = adv.transfer_measurements(m, scores, x, y, eps=[0.1], steps=10)
    white = _acc(m, adv.pgd(m, x, y, adv.ThreatModel("linf", 0.1), steps=10, seed=0), y)
    assert transfer.value == pytest.approx(white) and transfer.details["white_box"] is False


def test_square_attack_fools_without_gradients(small_model: SmallModel) -> None:
    x, y = _data(small_model)
    m = small_model.model

    def scores(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return m(torch.from_numpy(batch)).numpy()

    runs = adv.square_runs(scores, x.numpy()[:100], y.numpy()[:100], eps=[0.1], queries=100)
    [square] = adv.square_measurements(runs, queries=100)
    clean = _acc(m, x[:100], y[:100])
    assert square.value is not None and square.value < clean - 0.2 and square.details["attack"] == "square"
    with pytest.raises(UsageError):
        adv.square_attack(scores, x.numpy()[:2], y.numpy()[:2], adv.ThreatModel("l2", 1.0))


def _margin_bound(m: nn.Module, x: np.ndarray) -> np.ndarray:
    """Per example, the bound on a float32 margin's error: the true logit's and the other's, each <= B."""
    return 2 * network_forward(m, x).logits_bound.max(axis=1)


def _scores_of(m: nn.Module) -> Any:
    def scores(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return m(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    return scores


def test_square_searches_each_example_on_its_own(small_model: SmallModel) -> None:
    """Another decision on one example (a rounding on another CPU, here another label) changes its search
    and leaves every other example's squares, and so its result, as they were."""
    x, y = small_model.x_test[:40], small_model.y_test[:40].copy()
    scores = _scores_of(small_model.model)
    threat = adv.ThreatModel("linf", 0.08)
    found, used = adv.square_attack(scores, x, y, threat, queries=30, seed=5)
    k = int(np.argmax(used))  # an example that stays in the search longest, every query with a budget of 30
    assert used[k] == 30
    y[k] = int(np.argmin(scores(x[k : k + 1])[0]))  # relabelled: fooled by the stripes, it leaves at once
    found_other, used_other = adv.square_attack(scores, x, y, threat, queries=30, seed=5)
    assert used_other[k] == 1
    others = np.arange(len(y)) != k
    np.testing.assert_array_equal(found_other[others], found[others])
    np.testing.assert_array_equal(used_other[others], used[others])


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_square_robust_accuracy_within_four_points_of_torchattacks(
    small_model: SmallModel, eps: float
) -> None:
    # Two random searches with their own random streams, same budget and schedule (100 queries, p_init
    # 0.3, margin loss): 0.730 vs 0.727 at eps 0.05 and 0.563 vs 0.573 at 0.1 on these 300 images. Not a
    # statistical allowance (other seeds of either search move it by a Wilson half-width, about 5 points):
    # every CPU trains the same model (see conftest.py) and runs the same two searches, whose decisions
    # rounding changes only at a near-tie of two margins (4e-7 relative noise on every logit changed none).
    x, y = _data(small_model)
    m = small_model.model
    scores = _scores_of(m)
    found, _ = adv.square_attack(scores, x.numpy(), y.numpy(), adv.ThreatModel("linf", eps), queries=100)
    ours = float((scores(found).argmax(1) == y.numpy()).mean())
    torchattacks = _torchattacks()
    reference = torchattacks.Square(m, norm="Linf", eps=eps, n_queries=100, p_init=0.3, seed=0)(x, y)
    ref = _acc(m, reference, y)
    assert abs(ours - ref) <= 0.04, (ours, ref)
    assert ours < _acc(m, x, y) - 0.05


def test_square_attack_stays_in_the_threat_model_counts_queries_and_only_lowers_margins(
    small_model: SmallModel,
) -> None:
    x, y = small_model.x_test[:80], small_model.y_test[:80]
    scores = _scores_of(small_model.model)
    rows: list[int] = []

    def counted(batch: np.ndarray) -> np.ndarray:
        rows.append(len(batch))
        return scores(batch)

    threat = adv.ThreatModel("linf", 0.08)
    start, used_once = adv.square_attack(counted, x, y, threat, queries=1, seed=3)  # the initial stripes
    rows.clear()
    found, used = adv.square_attack(counted, x, y, threat, queries=60, seed=3)
    # x + eps rounds once (<= u (1 + eps)), and so does the test's own subtraction
    assert np.abs(found - x).max() <= 0.08 + 2 * U32 * (1 + 0.08) and found.min() >= 0 and found.max() <= 1
    assert (used_once == 1).all() and sum(rows) == used.sum() and used.max() <= 60
    margin_start, margin = adv._margin(scores(start), y), adv._margin(scores(found), y)
    # The attack compared margins computed on other batches (another kernel may sum those in another order):
    # each computed margin is within 2 B of the exact one (B: its logits' rounding bound), so a kept square
    # lowers the margin recomputed here by no less than -2 (B_found + B_start).
    slack = 2 * (_margin_bound(small_model.model, start) + _margin_bound(small_model.model, found))
    assert (margin <= margin_start + slack).all() and (margin < margin_start - 1e-3).mean() > 0.5
    robust = margin > 0
    assert robust.any() and (used[robust] == 60).all()  # a survivor spent the whole budget
    assert (used[margin_start <= 0] == 1).all()  # fooled by the stripes: no further query


def test_threat_model_and_inputs_are_validated() -> None:
    with pytest.raises(UsageError, match="eps"):
        adv.ThreatModel("linf", -0.1)
    with pytest.raises(UsageError, match="norm"):
        adv.ThreatModel("l1", 0.1)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="outside the threat model's input range"):
        adv.fgsm(
            nn.Linear(2, 2),
            torch.full((1, 2), 255.0),
            torch.zeros(1, dtype=torch.long),
            adv.ThreatModel("linf", 1),
        )

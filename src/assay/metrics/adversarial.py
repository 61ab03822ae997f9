"""Adversarial robustness: white-box FGSM and PGD, transfer and score-based black-box attacks.

Threat model (DESIGN.md section 4), recorded in every measurement's ``details``:

- inputs live in ``input_range`` (default [0, 1]) and every adversarial input is clipped back into it;
- ``eps`` is in input units: an L-inf ball (each pixel moves by at most eps) or an L2 ball (the
  perturbation of each example has Euclidean norm at most eps, over all of its pixels);
- the attacker knows the weights (white box) and maximises the cross-entropy of the true label.

Attacks (Goodfellow et al. 2015; Madry et al. 2018; Andriushchenko et al. 2020):

    fgsm     one step of size eps along sign(grad) (L-inf) or grad / ||grad||_2 (L2)
    pgd      ``steps`` steps of ``step_size`` (default 2.5·eps/steps), projected back onto the ball
             after each; a uniform random start in the ball (L-inf) or a random direction at a
             uniform radius (L2, as torchattacks); ``restarts`` independent starts, an example counting
             as robust only if it survives every one
    square   score-based black box (L-inf): random square patches of ±eps, kept when they lower the
             margin of the true class; needs only the predicted scores, so it attacks any runtime
    transfer adversarial inputs crafted on a white-box source model, scored on the target

Gradients are taken with ``torch.autograd.grad`` with respect to the inputs only: the model's
parameters, their ``.grad`` and its train/eval mode are left as they were.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from assay.catalogue import DEFAULT_EPS, NORMS, Norm, adversarial_accuracy
from assay.errors import UsageError
from assay.measurement import Measurement

FAMILY = "adversarial"
_TINY = 1e-12


@dataclass(frozen=True)
class ThreatModel:
    norm: Norm
    eps: float
    input_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise UsageError(f"Unknown norm '{self.norm}'. Known: {', '.join(NORMS)}.")
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise UsageError(f"'eps' must be a finite number >= 0 (in input units). Got {self.eps}.")
        low, high = self.input_range
        if not low < high:
            raise UsageError(f"'input_range' must be (low, high) with low < high. Got {self.input_range}.")

    def describe(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "eps": self.eps,
            "eps_units": "input units",
            "input_range": list(self.input_range),
            "loss": "cross-entropy of the true label",
        }


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, *([1] * (t.dim() - 1)))


def _project(delta: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    if threat.norm == "linf":
        return delta.clamp(-threat.eps, threat.eps)
    norms = _flat_norm(delta)
    return delta * torch.clamp(threat.eps / norms, max=1.0)


def _step(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    return grad.sign() if norm == "linf" else grad / _flat_norm(grad)


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def _checked(x: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    low, high = threat.input_range
    if x.numel() and (float(x.min()) < low - 1e-6 or float(x.max()) > high + 1e-6):
        raise UsageError(
            f"Inputs lie in [{float(x.min()):.3g}, {float(x.max()):.3g}], outside the threat model's input "
            f"range {threat.input_range}; attack the inputs the model actually receives."
        )
    return x.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """One step of size eps in the direction that most raises the loss under the threat's norm."""
    x = _checked(x, threat)
    low, high = threat.input_range
    if threat.eps == 0:
        return x.clone()
    return (x + threat.eps * _step(_input_grad(model, x, y), threat.norm)).clamp(low, high).detach()


def _random_start(x: torch.Tensor, threat: ThreatModel, gen: torch.Generator) -> torch.Tensor:
    if threat.norm == "linf":
        return (torch.rand(x.shape, generator=gen) * 2 - 1) * threat.eps
    direction = torch.randn(x.shape, generator=gen)
    radius = torch.rand((x.shape[0],), generator=gen).view(-1, *([1] * (x.dim() - 1)))
    return direction / _flat_norm(direction) * radius * threat.eps


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    seed: int = 0,
    early_stop: bool = True,
) -> torch.Tensor:
    """Projected gradient descent on the loss (ascent), the strongest of ``restarts`` runs per example.

    Returns adversarial inputs: for each example, the first restart's result that fools the model, or
    the last restart's result if none does. A restart attacks only the examples no earlier restart
    fooled. With ``early_stop`` an example stops moving at the first iterate that fools the model (read
    off the forward pass the next gradient needs anyway): the same attack, never weaker, and much
    cheaper once most examples are fooled.
    """
    if steps < 1 or restarts < 1:
        raise UsageError(f"'steps' and 'restarts' must be >= 1. Got steps={steps}, restarts={restarts}.")
    x = _checked(x, threat)
    if threat.eps == 0:
        return x.clone()
    alpha = 2.5 * threat.eps / steps if step_size is None else step_size
    low, high = threat.input_range
    gen = torch.Generator().manual_seed(seed)
    best = x.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool)
    for _ in range(restarts):
        todo = torch.nonzero(~fooled).flatten()
        xs, ys = x[todo], y[todo]
        delta = _random_start(xs, threat, gen) if random_start else torch.zeros_like(xs)
        adv = (xs + delta).clamp(low, high)
        active = torch.arange(len(todo))
        for _ in range(steps):
            a = adv[active].detach().requires_grad_(True)
            logits = model(a)
            loss = nn.functional.cross_entropy(logits, ys[active], reduction="sum")
            (grad,) = torch.autograd.grad(loss, a)
            keep = (
                (logits.argmax(1) == ys[active]) if early_stop else torch.ones(len(active), dtype=torch.bool)
            )
            moving = active[keep]
            stepped = adv[moving] + alpha * _step(grad[keep], threat.norm)
            adv[moving] = (xs[moving] + _project(stepped - xs[moving], threat)).clamp(low, high).detach()
            active = moving
            if len(active) == 0:
                break
        with torch.no_grad():
            wrong = model(adv).argmax(1) != ys
        best[todo] = adv.detach()
        fooled[todo] |= wrong
        if bool(fooled.all()):
            break
    return best


def _margin(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Logit of the true class minus the largest other logit (< 0 means misclassified)."""
    true = scores[np.arange(y.size), y]
    other = scores.copy()
    other[np.arange(y.size), y] = -np.inf
    return np.asarray(true - other.max(axis=1))


def square_attack(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    threat: ThreatModel,
    *,
    queries: int = 300,
    p_init: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Square attack, L-inf (Andriushchenko et al. 2020), with the margin loss on ``predict``'s scores.

    ``predict`` maps images (N, C, H, W) to scores (N, K) (logits or probabilities). Starts from
    vertical stripes of ±eps, then each query proposes, for every example not yet fooled, a random
    square (side ``sqrt(p·H·W)``, p halving on the paper's schedule) set to ±eps per channel, and keeps
    it where the margin drops. Returns the adversarial inputs and the number of queries used per example.
    """
    if threat.norm != "linf":
        raise UsageError("This square attack is the L-inf version; use norm 'linf'.")
    low, high = threat.input_range
    x = np.asarray(x, dtype=np.float32)
    n, c, h, w = x.shape
    rng = np.random.default_rng(seed)
    eps = threat.eps
    stripes = rng.choice([-eps, eps], size=(n, c, 1, w)).astype(np.float32)
    adv = np.clip(x + stripes, low, high)
    margin = _margin(predict(adv), y)
    used = np.ones(n, dtype=np.int64)
    for i in range(queries - 1):
        active = np.flatnonzero(margin > 0)
        if active.size == 0:
            break
        p = _square_fraction(p_init, i, queries)
        side = max(1, min(h - 1, round(math.sqrt(p * h * w))))
        # Squares are drawn for every example, fooled or not, so that an example's search depends on its own
        # margins only: a rounding difference that changes one decision (another CPU's kernels, another
        # runtime of the same model) changes that example's squares, not every later example's.
        tops, lefts = rng.integers(0, h - side + 1, size=n), rng.integers(0, w - side + 1, size=n)
        signs = rng.choice([-eps, eps], size=(n, c, 1, 1)).astype(np.float32)
        candidate = adv[active].copy()
        for j, k in enumerate(active):
            top, left = tops[k], lefts[k]
            window = x[k, :, top : top + side, left : left + side] + signs[k]
            candidate[j, :, top : top + side, left : left + side] = np.clip(window, low, high)
        new_margin = _margin(predict(candidate), y[active])
        better = new_margin < margin[active]
        adv[active[better]] = candidate[better]
        margin[active[better]] = new_margin[better]
        used[active] += 1
    return adv, used


def _square_fraction(p_init: float, i: int, queries: int) -> float:
    """The paper's schedule for the share of pixels a square covers, rescaled to a budget of 10k queries."""
    t = int(i / queries * 10000)
    for bound, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                           (6000, 128), (8000, 256)):  # fmt: skip
        if t <= bound:
            return p_init / divisor
    return p_init / 512


def predict_labels(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    with torch.no_grad():
        return torch.cat(
            [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        ).numpy()


def _accuracy_measurement(
    name: str, correct: np.ndarray, estimator: str, details: dict[str, Any]
) -> Measurement:
    return Measurement.proportion(
        name, FAMILY, int(correct.sum()), int(correct.size), higher_is_better=True, estimator=estimator,
        details=details,
    )  # fmt: skip


def curve_per_example(curve: RobustCurve) -> dict[str, np.ndarray]:
    """Per-example robust correctness behind each ``adv_accuracy`` of :func:`curve_measurements`."""
    return {
        adversarial_accuracy(attack, curve.norm, level): correct
        for attack in ("fgsm", "pgd")
        for level, correct in zip(curve.eps, curve.correct[attack], strict=True)
        if level != 0
    }


@dataclass(frozen=True)
class RobustCurve:
    """Robust accuracy against eps, per attack: the per-example correctness behind every point."""

    norm: Norm
    clean: np.ndarray  # (N,) bool
    eps: tuple[float, ...]
    correct: dict[str, list[np.ndarray]]  # attack -> one (N,) bool array per eps
    huge_eps: float
    huge_correct: np.ndarray  # PGD at huge_eps


def robustness_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: Norm = "linf",
    eps: Sequence[float] | None = None,
    input_range: tuple[float, float] = (0.0, 1.0),
    steps: int = 20,
    restarts: int = 1,
    seed: int = 0,
    batch_size: int = 500,
) -> RobustCurve:
    """FGSM and PGD robust accuracy at each eps (0 included for the sanity check) and at a huge eps."""
    levels = tuple(sorted({0.0, *(DEFAULT_EPS[norm] if eps is None else eps)}))
    low, high = input_range
    size = float(np.prod(x.shape[1:]))
    huge = (high - low) if norm == "linf" else (high - low) * math.sqrt(size)  # the whole input box
    clean = predict_labels(model, x) == y.numpy()
    correct: dict[str, list[np.ndarray]] = {"fgsm": [], "pgd": []}

    def attacked(attack: str, level: float) -> np.ndarray:
        threat = ThreatModel(norm, level, input_range)
        out = []
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            if attack == "fgsm":
                adv = fgsm(model, xb, yb, threat)
            else:
                adv = pgd(model, xb, yb, threat, steps=steps, restarts=restarts, seed=seed + i)
            out.append(predict_labels(model, adv) == yb.numpy())
        return np.concatenate(out)

    for level in levels:
        for attack in ("fgsm", "pgd"):
            correct[attack].append(attacked(attack, level))
    return RobustCurve(norm, clean, levels, correct, huge, attacked("pgd", huge))


def sanity_flags(curve: RobustCurve, n_classes: int, tolerance: float | None = None) -> dict[str, Any]:
    """Signs of gradient masking (Athalye et al. 2018; Carlini et al. 2019), each True when it holds.

    - ``eps0_equals_clean``: at eps = 0 both attacks leave every prediction as it was;
    - ``monotone_in_eps``: PGD robust accuracy never rises with eps (by more than ``tolerance``);
    - ``pgd_at_most_fgsm``: PGD is never weaker than FGSM at the same eps (same tolerance);
    - ``huge_eps_near_zero``: PGD over the whole input box leaves at most max(5%, 1/2 chance) correct.

    ``tolerance`` defaults to 1/n plus one Wilson-width's worth of noise-free slack: two examples.
    """
    n = curve.clean.size
    tol = 2.0 / n if tolerance is None else tolerance
    pgd_acc = [float(c.mean()) for c in curve.correct["pgd"]]
    fgsm_acc = [float(c.mean()) for c in curve.correct["fgsm"]]
    i0 = curve.eps.index(0.0)
    huge_acc = float(curve.huge_correct.mean())
    flags = {
        "eps0_equals_clean": bool(
            np.array_equal(curve.correct["pgd"][i0], curve.clean)
            and np.array_equal(curve.correct["fgsm"][i0], curve.clean)
        ),
        "monotone_in_eps": all(b <= a + tol for a, b in itertools.pairwise(pgd_acc)),
        "pgd_at_most_fgsm": all(p <= f + tol for p, f in zip(pgd_acc, fgsm_acc, strict=True)),
        "huge_eps_near_zero": huge_acc <= max(0.05, 0.5 / n_classes),
    }
    return {
        "flags": flags,
        "tolerance": tol,
        "pgd_accuracy": pgd_acc,
        "fgsm_accuracy": fgsm_acc,
        "eps": list(curve.eps),
        "huge_eps": curve.huge_eps,
        "huge_eps_accuracy": huge_acc,
    }


def curve_measurements(
    curve: RobustCurve,
    *,
    n_classes: int,
    input_range: tuple[float, float] = (0.0, 1.0),
    steps: int = 20,
    restarts: int = 1,
    details: dict[str, Any] | None = None,
) -> list[Measurement]:
    """``adv_accuracy[<attack>-<norm>@<eps>]`` with Wilson intervals, and ``adv_sanity[<norm>]``: the number
    of gradient-masking checks that fail (0 is good), with each check in ``details``."""
    out = []
    extra = {"white_box": True, **(details or {})}
    for attack in ("fgsm", "pgd"):
        for level, correct in zip(curve.eps, curve.correct[attack], strict=True):
            if level == 0:
                continue
            threat = ThreatModel(curve.norm, level, input_range).describe()
            params: dict[str, Any] = {"attack": attack}
            if attack == "pgd":
                params |= {"steps": steps, "step_size": 2.5 * level / steps, "random_start": True,
                           "restarts": restarts}  # fmt: skip
            out.append(
                _accuracy_measurement(
                    adversarial_accuracy(attack, curve.norm, level),
                    correct,
                    f"accuracy under white-box {attack.upper()} ({curve.norm}, eps {level:g} in input units)",
                    {**threat, **params, **extra},
                )
            )
    sanity = sanity_flags(curve, n_classes)
    failed = [name for name, ok in sanity["flags"].items() if not ok]
    out.append(
        Measurement(
            name=f"adv_sanity[{curve.norm}]",
            family=FAMILY,
            value=float(len(failed)),
            n=int(curve.clean.size),
            higher_is_better=False,
            estimator="failed gradient-masking checks (eps=0 clean, monotone, PGD<=FGSM, huge eps ~0)",
            details={**sanity, "failed": failed, "interval": "none: a count of checks", **extra},
        )
    )
    return out


def transfer_measurements(
    source: nn.Module,
    target_predict: Callable[[np.ndarray], np.ndarray],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: Norm = "linf",
    eps: Sequence[float] | None = None,
    input_range: tuple[float, float] = (0.0, 1.0),
    steps: int = 20,
    seed: int = 0,
    source_name: str = "fp32 parent",
    batch_size: int = 500,
) -> list[Measurement]:
    """Accuracy of a gradient-free target (ONNX Runtime, quantized, ...) on PGD inputs crafted on ``source``.

    ``target_predict`` maps images to scores; the measurement says the attack was a transfer one.
    """
    out = []
    for level in DEFAULT_EPS[norm] if eps is None else eps:
        threat = ThreatModel(norm, level, input_range)
        hits = []
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            adv = pgd(source, xb, yb, threat, steps=steps, seed=seed + i).numpy()
            hits.append(target_predict(adv).argmax(1) == yb.numpy())
        out.append(
            _accuracy_measurement(
                adversarial_accuracy("transfer-pgd", norm, level),
                np.concatenate(hits),
                f"accuracy on PGD inputs crafted on the {source_name} ({norm}, eps {level:g}): transfer",
                {
                    **threat.describe(),
                    "attack": "transfer",
                    "source": source_name,
                    "steps": steps,
                    "white_box": False,
                },
            )
        )
    return out


def square_runs(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: Sequence[float] | None = None,
    input_range: tuple[float, float] = (0.0, 1.0),
    queries: int = 300,
    seed: int = 0,
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """The Square attack (L-inf) at each eps on ``predict``'s scores: per eps, whether each example is
    still classified correctly, and the queries it used."""
    out = {}
    for level in DEFAULT_EPS["linf"] if eps is None else eps:
        adv, used = square_attack(
            predict, x, y, ThreatModel("linf", level, input_range), queries=queries, seed=seed
        )
        out[level] = (predict(adv).argmax(1) == y, used)
    return out


def square_measurements(
    runs: dict[float, tuple[np.ndarray, np.ndarray]],
    *,
    input_range: tuple[float, float] = (0.0, 1.0),
    queries: int = 300,
) -> list[Measurement]:
    """Robust accuracy under the score-based Square attack (L-inf) from :func:`square_runs`."""
    out = []
    for level, (correct, used) in runs.items():
        out.append(
            _accuracy_measurement(
                adversarial_accuracy("square", "linf", level),
                correct,
                f"accuracy under the black-box Square attack (linf, eps {level:g}, {queries} queries)",
                {
                    **ThreatModel("linf", level, input_range).describe(),
                    "attack": "square",
                    "queries": queries,
                    "mean_queries": float(used.mean()),
                    "white_box": False,
                },
            )
        )
    return out

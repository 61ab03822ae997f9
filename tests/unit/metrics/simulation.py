"""A known population for coverage checks: a pool of predictions whose true label distributions are known.

A test set draws examples uniformly from the pool and each label from that example's true distribution,
so the population value of every metric is an exact finite sum over the pool (no second sample to
estimate it from). Used by tests/unit/metrics/test_coverage.py and benchmarks/calibration_coverage.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from assay.metrics import calibration, quality
from assay.outputs import Outputs, from_arrays, softmax


@dataclass(frozen=True)
class Population:
    """``probs`` (M, C): the model's predictions on the pool; ``truth`` (M, C): each example's true label
    distribution. ``truth == probs`` is a perfectly calibrated model."""

    probs: np.ndarray
    truth: np.ndarray

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n examples drawn uniformly from the pool (their rows) and a label drawn from each one's truth."""
        idx = rng.integers(0, self.probs.shape[0], n)
        return idx, (self.truth[idx].cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)

    def outputs(self, idx: np.ndarray, labels: np.ndarray) -> Outputs:
        """This model's outputs on the pool rows ``idx`` with those labels."""
        return from_arrays(labels, probs=self.probs[idx])

    def sample(self, rng: np.random.Generator, n: int) -> Outputs:
        """A test set of n examples: :meth:`draw`, then :meth:`outputs`."""
        return self.outputs(*self.draw(rng, n))

    def top_label(self) -> tuple[np.ndarray, np.ndarray]:
        """Per pool example: the model's top-1 confidence and the true probability that it is right."""
        preds = self.probs.argmax(axis=1)
        rows = np.arange(self.probs.shape[0])
        return self.probs[rows, preds], self.truth[rows, preds]

    def value(self, name: str) -> float:
        """The population value of the registered metric ``name``."""
        if name not in POPULATION_VALUES:
            raise KeyError(f"No population value for metric '{name}': add one to POPULATION_VALUES.")
        return POPULATION_VALUES[name](self)


def dirichlet_population(
    seed: int, size: int, n_classes: int = 10, concentration: float = 0.3, temperature: float = 1.0
) -> Population:
    """A pool of ``size`` predictions ~ Dirichlet(``concentration``) over ``n_classes`` classes.

    The truth is ``softmax(log p / temperature)``: the predictions themselves at temperature 1 (a
    calibrated model); above 1 the labels are less certain than the model says (an overconfident model).
    """
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(n_classes, concentration), size=size)
    truth = probs if temperature == 1.0 else softmax(np.log(np.maximum(probs, 1e-300)) / temperature)
    return Population(probs=probs, truth=truth)


def _binned_gaps(pop: Population) -> tuple[np.ndarray, np.ndarray]:
    """Per equal-width bin (the metrics' bins): its share of the pool and its mean P(right) − confidence."""
    confidence, right = pop.top_label()
    bins = calibration.equal_width_bins(confidence)
    counts = np.bincount(bins, minlength=calibration.N_BINS + 1)
    gaps = np.bincount(bins, weights=right - confidence, minlength=calibration.N_BINS + 1)
    return counts / confidence.size, np.divide(gaps, counts, out=np.zeros_like(gaps), where=counts > 0)


def _ece(pop: Population) -> float:
    share, gap = _binned_gaps(pop)
    return float((share * np.abs(gap)).sum())


def _ece_debiased(pop: Population) -> float:
    share, gap = _binned_gaps(pop)
    return float(np.sqrt((share * gap**2).sum()))


def _mce(pop: Population) -> float:
    share, gap = _binned_gaps(pop)
    return float(np.abs(gap[share > 0]).max())


def _adaptive_ece(pop: Population) -> float:
    # Equal-mass bins at the pool's confidence quantiles: what the sample's equal-mass bins estimate.
    confidence, right = pop.top_label()
    runs = np.array_split(np.argsort(confidence, kind="stable"), calibration.N_BINS)
    return float(sum(len(r) * abs((right[r] - confidence[r]).mean()) for r in runs) / confidence.size)


def _confusion(pop: Population) -> np.ndarray:
    """Expected confusion proportions: row = true class, column = predicted class."""
    n_classes = pop.probs.shape[1]
    preds = pop.probs.argmax(axis=1)
    return np.stack(
        [np.bincount(preds, weights=pop.truth[:, j], minlength=n_classes) for j in range(n_classes)]
    )


def _nll(pop: Population) -> float:
    return float(-(pop.truth * np.log(np.clip(pop.probs, quality.NLL_CLIP, 1.0))).sum(axis=1).mean())


def _brier(pop: Population) -> float:
    return float(((pop.probs**2).sum(axis=1) - 2 * (pop.truth * pop.probs).sum(axis=1) + 1).mean())


POPULATION_VALUES: dict[str, Callable[[Population], float]] = {
    "accuracy": lambda pop: float(pop.top_label()[1].mean()),
    "macro_f1": lambda pop: float(quality.f1_from_confusion(_confusion(pop))),
    "nll": _nll,
    "brier": _brier,
    "ece": _ece,
    "ece_debiased": _ece_debiased,
    "adaptive_ece": _adaptive_ece,
    "mce": _mce,
}

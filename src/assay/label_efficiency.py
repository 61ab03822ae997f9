"""Label efficiency: how many labels a recipe needs, measured on one test split with paired statistics.

    for each labels-per-class k (and "all") and each seeded draw:
        the same k training texts of every class (assay.train.setfit.per_class) for every recipe
        each recipe -> a Hugging Face folder -> loaded by the hf adapter -> per-example hits on the test split
    curve point     a recipe's accuracy at k: the mean over draws of the test accuracy; its 95% interval a
                    percentile bootstrap over test examples of the per-example hit rate across draws
                    (the draws' own spread, min to max, beside it)
    verdict         a cheaper recipe against the reference (full fine-tuning) at k: the paired bootstrap
                    interval of the accuracy difference, the same test examples resampled for both (each
                    example's hit rate across the same draws); non-inferior when the interval's lower
                    end lies above -margin

A recipe is a function ``(few-shot data, out folder, seed) -> folder``: the few-shot data is the whole
dataset with its training split cut to the drawn texts, so a recipe cannot see more labels than it was
given; validation and test splits stay whole (a recipe that early-stops reads validation as usual).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from assay.data import Dataset
from assay.errors import UsageError
from assay.stats import iter_bootstrap_indices, percentile_interval

Recipe = Callable[[Dataset, Path, int], Path]
SCHEMA = "assay.label_efficiency/1"


@dataclass(frozen=True)
class Point:
    recipe: str
    labels_per_class: int | None  # None: every training label
    n_train: int  # labelled texts per draw
    draws: list[float]  # test accuracy of each draw
    accuracy: float  # mean over draws
    ci_low: float
    ci_high: float
    seconds: float  # mean seconds per draw to build the model


@dataclass(frozen=True)
class Verdict:
    recipe: str
    reference: str
    labels_per_class: int | None
    delta: float  # recipe - reference, accuracy
    ci_low: float
    ci_high: float
    margin: float
    non_inferior: bool


def hit_rates(hits: np.ndarray) -> np.ndarray:
    """Per-example hit rate across draws: ``hits`` is (draws, examples) of 0/1."""
    return np.asarray(hits, dtype=np.float64).mean(axis=0)


def mean_interval(values: np.ndarray, *, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-example ``values`` (examples resampled)."""
    samples = np.concatenate(
        [values[rows].mean(axis=1) for rows in iter_bootstrap_indices(len(values), n_boot, seed)]
    )
    return percentile_interval(samples)


def paired_verdict(
    recipe: str,
    reference: str,
    k: int | None,
    candidate_hits: np.ndarray,
    reference_hits: np.ndarray,
    *,
    margin: float,
    n_boot: int,
    seed: int,
) -> Verdict:
    """Non-inferiority of ``recipe`` to ``reference`` at ``k`` labels per class from both recipes' hits
    (draws, examples) on the same draws and examples: the paired bootstrap of the mean difference."""
    if candidate_hits.shape != reference_hits.shape:
        raise UsageError(
            f"{recipe} and {reference} were measured on different draws or examples "
            f"({candidate_hits.shape} and {reference_hits.shape})."
        )
    diff = hit_rates(candidate_hits) - hit_rates(reference_hits)
    low, high = mean_interval(diff, n_boot=n_boot, seed=seed)
    return Verdict(recipe, reference, k, float(diff.mean()), low, high, margin, bool(low > -margin))


ALL = "all"  # the label budget of every training text, in the document


def smallest_non_inferior(verdicts: Sequence[Verdict], recipe: str) -> int | str | None:
    """The smallest labels-per-class at which ``recipe`` is non-inferior (:data:`ALL` for only with every
    label), or None where it never is."""
    passed = [v.labels_per_class for v in verdicts if v.recipe == recipe and v.non_inferior]
    if not passed:
        return None
    counts = [k for k in passed if k is not None]
    return min(counts) if counts else ALL


def few_shot_data(data: Dataset, k: int | None, seed: int) -> Dataset:
    """``data`` with its training split cut to ``k`` seeded texts of every class (whole for None)."""
    if k is None:
        return data
    from assay.train.setfit import per_class

    return replace(data, train=data.train.subset(per_class(data.train.y, k, seed)))


def _test_hits(folder: Path, data: Dataset) -> np.ndarray:
    """The model in ``folder``, read by the hf adapter as an import reads it, right or wrong per test text."""
    from assay.models.adapters import ADAPTERS

    adapter = ADAPTERS.get("hf")
    with tempfile.TemporaryDirectory(prefix="assay-label-efficiency-") as tmp:
        staged = Path(tmp) / "model"
        fields = adapter.stage(str(folder), None, staged)
        spec = fields.pop("spec")
        model = adapter.load(staged, {**fields, "adapter": "hf", "spec": {"arch": "hf", **spec}})
        logits, _ = model.predictor.logits_and_features(data.test.x)
    hits: np.ndarray = logits.argmax(1) == data.test.y
    return hits


def label_efficiency(
    data: Dataset,
    recipes: Mapping[str, Recipe],
    *,
    labels_per_class: Sequence[int | None] = (8, 16, 32, 64, None),
    seeds: Sequence[int] = (0, 1, 2),
    reference: str | None = None,
    margin: float = 0.01,
    n_boot: int = 1000,
    progress: bool = False,
) -> dict[str, Any]:
    """Every recipe at every label budget and seeded draw, on ``data``'s test split; the curve and, where
    ``reference`` names one of the recipes, every other recipe's paired verdict against it at each budget.

    Example (the benchmark ``benchmarks/few_shot.py`` runs MiniLM's recipes on the fortunes)::

        doc = label_efficiency(data, {"frozen": frozen, "setfit": setfit, "finetune": finetune},
                               labels_per_class=(8, 32), seeds=(0, 1), reference="finetune")
        doc["smallest_non_inferior"]["setfit"]  # e.g. 32, or None where it never is
    """
    if data.kind != "text":
        raise UsageError(f"{data.name} holds {data.kind} data; the label-efficiency study takes texts.")
    if reference is not None and reference not in recipes:
        raise UsageError(f"The reference recipe {reference!r} is not among {sorted(recipes)}.")
    if not seeds:
        raise UsageError("Give at least one seed (one draw of labelled texts).")
    hits: dict[tuple[str, int | None], list[np.ndarray]] = {}
    seconds: dict[tuple[str, int | None], list[float]] = {}
    sizes: dict[int | None, int] = {}
    work = Path(tempfile.mkdtemp(prefix="assay-recipes-"))
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("label efficiency", total=len(labels_per_class) * len(seeds) * len(recipes))
            for k in labels_per_class:
                for seed in seeds if k is not None else seeds[:1]:  # every label: one draw is all of them
                    subset = few_shot_data(data, k, seed)
                    sizes[k] = subset.train.n
                    for name, recipe in recipes.items():
                        start = time.perf_counter()
                        folder = recipe(subset, work / f"{name}-{k}-{seed}", seed)
                        seconds.setdefault((name, k), []).append(time.perf_counter() - start)
                        hits.setdefault((name, k), []).append(_test_hits(folder, data))
                        shutil.rmtree(folder, ignore_errors=True)
                        bar.advance(task)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    points = []
    for (name, k), runs in hits.items():
        draws = np.stack(runs)
        low, high = mean_interval(hit_rates(draws), n_boot=n_boot, seed=0)
        points.append(
            Point(name, k, sizes[k], [float(d.mean()) for d in draws], float(draws.mean()), low, high,
                  float(np.mean(seconds[(name, k)])))
        )  # fmt: skip
    verdicts = []
    if reference is not None:
        for (name, k), runs in hits.items():
            if name != reference:
                verdicts.append(
                    paired_verdict(name, reference, k, np.stack(runs), np.stack(hits[(reference, k)]),
                                   margin=margin, n_boot=n_boot, seed=0)
                )  # fmt: skip
    smallest = {name: smallest_non_inferior(verdicts, name) for name in recipes if name != reference}
    statements = [
        f"{name} is non-inferior to {reference} (margin {margin:.1%}) from "
        + ("all labels" if k == ALL else f"{k} labels per class")
        if k is not None
        else f"{name} is never non-inferior to {reference} (margin {margin:.1%}) at the budgets tried"
        for name, k in smallest.items()
    ]
    return {
        "schema": SCHEMA,
        "dataset": {"name": data.name, "fingerprint": data.fingerprint(), "test_n": data.test.n,
                    "classes": data.n_classes},
        "labels_per_class": list(labels_per_class),
        "seeds": list(seeds),
        "reference": reference,
        "margin": margin,
        "interval": "95% percentile bootstrap over test examples of the per-example hit rate across draws",
        "points": [asdict(p) for p in points],
        "verdicts": [asdict(v) for v in verdicts],
        "smallest_non_inferior": smallest,
        "statements": statements,
    }  # fmt: skip

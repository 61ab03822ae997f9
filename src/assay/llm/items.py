"""A task's per-item scores as a measurement with its interval and its per-item evidence, for the paired
gate: assay's own generation tasks (:mod:`assay.llm.generation`) and the generation logs of
lm-evaluation-harness (:mod:`assay.llm.lmeval`). No torch here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from assay.catalogue import LANGUAGE_MODELING
from assay.compare import PerExample
from assay.measurement import Measurement
from assay.stats import bootstrap_ci

if TYPE_CHECKING:
    from assay.llm.lmeval import GenerationLog

LOWER_IS_BETTER = frozenset({"ter"})  # lm-eval's generation metrics where less is better (translation)


def item_mean(
    name: str,
    task: str,
    ids: np.ndarray,
    values: np.ndarray,
    *,
    estimator: str,
    higher_is_better: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[Measurement, PerExample]:
    """A task's per-item score averaged over its items, with its percentile-bootstrap interval, and the
    per-item evidence: boolean ``values`` are hits, which the gate tests with exact McNemar, others the
    paired bootstrap.

    Example:
        >>> m, evidence = item_mean("exact_match", "demo", np.array(["a", "b", "c", "d"]),
        ...                         np.array([True, True, False, True]), estimator="share right")
        >>> m.value, evidence.hits.tolist()
        (0.75, [True, True, False, True])
    """
    scores = values.astype(np.float64)
    result = bootstrap_ci(lambda rows: scores[rows].mean(axis=-1), len(scores), n_boot=n_boot, seed=seed,
                          vectorized=True)  # fmt: skip
    measurement = Measurement(
        name=name, family=LANGUAGE_MODELING, value=result.estimate, ci_low=result.ci_low,
        ci_high=result.ci_high, n=len(scores), unit=None, higher_is_better=higher_is_better,
        estimator=f"{estimator}; percentile bootstrap over items",
        details={"task": task, "items": len(scores)},
    )  # fmt: skip
    return measurement, PerExample.mean(measurement, ids, values)


def log_measurements(
    log: GenerationLog, *, n_boot: int = 1000, seed: int = 0
) -> tuple[list[Measurement], dict[str, PerExample]]:
    """Each metric of an lm-eval generation log averaged over its documents with its interval, and its
    per-document evidence (0/1 metrics as hits)."""
    measured, evidence = [], {}
    for name, values in log.scores.items():
        binary = bool(np.isin(values, (0.0, 1.0)).all())
        measurement, per_example = item_mean(
            name, log.task, log.ids, values.astype(bool) if binary else values,
            estimator=f"lm-eval's {name} per {log.task} document (filter {log.filter}), averaged",
            higher_is_better=name not in LOWER_IS_BETTER, n_boot=n_boot, seed=seed,
        )  # fmt: skip
        measured.append(measurement)
        evidence[name] = per_example
    return measured, evidence

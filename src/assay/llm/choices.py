"""Outputs over a multiple-choice item's choices, from their log-likelihoods: what assay's own tasks
(:mod:`assay.llm.tasks`) and lm-evaluation-harness's samples (:mod:`assay.llm.lmeval`) both give. No
torch here: gating two samples files never loads a model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from assay.outputs import Outputs, from_arrays


def choice_outputs(
    ids: Sequence[str], answers: Sequence[int], scores: Sequence[np.ndarray], source: str
) -> Outputs:
    """Per-item choice log-likelihoods as outputs: the logits where every item has as many choices, else
    their softmax as probabilities, 0 for the choices an item lacks."""
    width = max(len(s) for s in scores)
    labels, names = np.asarray(answers, dtype=np.int64), np.asarray(ids).astype(str)
    if len({len(s) for s in scores}) == 1:
        return from_arrays(labels, logits=np.asarray(scores, dtype=np.float64), ids=names, source=source)
    probs = np.zeros((len(scores), width))
    for i, s in enumerate(scores):
        p = np.exp(s - s.max())
        probs[i, : len(s)] = p / p.sum()
    return from_arrays(labels, probs=probs, ids=names, source=source)

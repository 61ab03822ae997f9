"""The contract every drift detector in assay.serve.drift.DETECTORS keeps, run over every registered name.

Calibrated alone on a reference that carries everything (inputs, embeddings, labels, a shadow agreement),
a detector stays quiet on a fresh window from the reference's own distribution and alarms on a window
with the shift it is built to see planted in it; its details are plain JSON and its explanation is one
line. A new detector needs its planted shift in ``SHIFTS`` (a test checks that every name has one).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pytest

from assay.outputs import softmax
from assay.serve.drift import DETECTORS, Window, baseline_for, calibrate, evaluate
from assay.serve.reference import Reference, build_reference, input_summaries, ood_scores
from tests.unit.serve import table_rows

AGREEMENT = 0.9  # the shadow model agrees with the served one on 90% of the gating set
WINDOW = 200


@dataclass(frozen=True)
class Rows:
    """Fresh rows of the synthetic table model's traffic, labelled and shadowed."""

    x: np.ndarray
    logits: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    shadow: np.ndarray


def _rows(n: int, seed: int) -> Rows:
    x, logits, features, labels = table_rows(n, seed)
    preds = softmax(logits).argmax(1)
    rng = np.random.default_rng(seed + 100)
    flip = rng.random(n) > AGREEMENT
    shadow = np.where(flip, (preds + 1) % logits.shape[1], preds)
    return Rows(x, logits, features, labels, shadow)


def _window(r: Rows) -> Window:
    probs = softmax(r.logits)
    return Window(
        inputs=input_summaries(r.x)[1], confidence=probs.max(1), predictions=probs.argmax(1),
        ood=ood_scores(r.logits), embeddings=r.features, labels=r.labels, shadow_predictions=r.shadow,
    )  # fmt: skip


def _moved_column(r: Rows) -> Rows:
    x = r.x.copy()
    x[:, 2] = x[:, 2] * 3 + 2
    return replace(r, x=x)


def _other_class(r: Rows) -> Rows:
    logits = r.logits.copy()
    logits[:, 0] += 6.0  # most rows now predicted as class 0
    return replace(r, logits=logits)


# The shift each detector is built to see, planted in a fresh window (only what the detector reads moves).
SHIFTS: dict[str, Callable[[Rows], Rows]] = {
    "features": _moved_column,
    "embeddings": lambda r: replace(r, features=r.features + 0.8),
    "predictions": _other_class,
    "confidence": lambda r: replace(r, logits=r.logits * 0.2),
    "ood_rate": lambda r: replace(r, logits=r.logits - 5.0),  # the same softmax, a lower energy
    "accuracy": lambda r: replace(r, labels=(r.labels + 1) % 4),
    "agreement": lambda r: replace(r, shadow=(softmax(r.logits).argmax(1) + 1) % 4),
}


@pytest.fixture(scope="module")
def reference() -> Reference:
    r = _rows(4000, seed=0)
    return build_reference(r.x, r.logits, r.features, r.labels, agreement=AGREEMENT)


def test_every_detector_has_a_planted_shift() -> None:
    assert set(SHIFTS) == set(DETECTORS.names())


@pytest.mark.parametrize("name", DETECTORS.names())
def test_a_detector_is_quiet_on_the_reference_and_alarms_on_its_shift(
    name: str, reference: Reference
) -> None:
    detector = DETECTORS.get(name)
    assert detector.supported(reference)
    calibration = calibrate(
        reference, window=WINDOW, detectors=[name], false_alarm_windows=1000, n_resamples=400
    )
    assert list(calibration.thresholds) == [name]
    base = baseline_for(reference, calibration)
    fresh = _rows(WINDOW, seed=7)
    (quiet,) = evaluate(base, calibration, _window(fresh))
    assert quiet.name == name and not quiet.alarm, (quiet.statistic, quiet.threshold)
    (shifted,) = evaluate(base, calibration, _window(SHIFTS[name](fresh)))
    assert shifted.alarm and shifted.statistic > quiet.statistic, (shifted.statistic, shifted.threshold)
    json.dumps([quiet.to_dict(), shifted.to_dict()])  # details are plain JSON
    line = shifted.explain()
    assert line and "\n" not in line


@pytest.mark.parametrize("name", DETECTORS.names())
def test_a_detector_without_its_data_in_the_reference_is_refused_or_runs(name: str) -> None:
    # A reference with inputs and outputs only: the detector either supports it or calibrate refuses it
    # by name (never a crash deep in a statistic).
    r = _rows(2000, seed=1)
    bare = build_reference(r.x, r.logits)
    if DETECTORS.get(name).supported(bare):
        assert list(calibrate(bare, window=WINDOW, detectors=[name], n_resamples=200).thresholds) == [name]
    else:
        with pytest.raises(Exception, match=rf"cannot support detector\(s\) \['{name}'\]"):
            calibrate(bare, window=WINDOW, detectors=[name], n_resamples=200)

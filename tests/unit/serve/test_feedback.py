"""Labels sent after the prediction: feedback windows, their accuracy test, and a planted accuracy drop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from assay.errors import DataError
from assay.outputs import softmax
from assay.serve import drift
from assay.serve.drift import Window, baseline_for, calibrate, evaluate
from assay.serve.monitor import Monitor
from assay.serve.reference import build_reference, ood_scores
from tests.unit.serve import table_rows

WINDOW = 200


@pytest.fixture(scope="module")
def setup():
    x, logits, features, labels = table_rows(2000, seed=0)
    ref = build_reference(x, logits, features, labels)
    return ref, calibrate(ref, window=WINDOW, false_alarm_windows=100, n_resamples=300)


def served(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes of fresh rows and their true labels (drawn from the calibrated model)."""
    _, logits, _, labels = table_rows(n, seed=seed)
    return logits.argmax(1), labels


def test_feedback_windows_close_every_window_labelled_rows_in_a_stream_of_their_own(setup) -> None:
    ref, cal = setup
    monitor = Monitor(ref, cal)
    predictions, labels = served(4 * WINDOW, seed=1)
    x, logits, features, _ = table_rows(WINDOW, seed=2)
    (traffic,) = monitor.observe(x, logits, features)
    assert monitor.observe_feedback(predictions[:150], labels[:150]) == []
    (first,) = monitor.observe_feedback(predictions[150:250], labels[150:250])
    closed = monitor.observe_feedback(predictions[250:750], labels[250:750])  # 50 buffered + 500: two
    assert [w.index for w in [first, *closed]] == [0, 1, 2]
    assert {w.stream for w in [first, *closed]} == {"feedback"} and traffic.stream == "traffic"
    assert all(w.n == WINDOW and [r.name for r in w.results] == ["accuracy"] for w in [first, *closed])
    assert first.summary == {
        "n_labelled": WINDOW,
        "accuracy": pytest.approx(float((predictions[:WINDOW] == labels[:WINDOW]).mean())),
    }
    assert [w.index for w in monitor.recent(stream="feedback")] == [0, 1, 2]
    assert [w.index for w in monitor.recent()] == [0]  # the traffic stream is untouched
    assert monitor.buffered == 0 and monitor.rows_seen == WINDOW
    assert json.loads(json.dumps(first.to_dict()))["stream"] == "feedback"


def test_a_feedback_window_tests_accuracy_as_a_traffic_window_with_the_same_rows(setup) -> None:
    ref, cal = setup
    x, logits, features, labels = table_rows(WINDOW, seed=3)
    probs = softmax(logits)
    predictions = probs.argmax(1)
    (late,) = Monitor(ref, cal).observe_feedback(predictions, labels)
    (result,) = late.results
    traffic = Window(x, probs.max(1), predictions, ood_scores(logits), features, labels)
    direct = {r.name: r for r in evaluate(baseline_for(ref, cal), cal, traffic)}["accuracy"]
    assert (result.statistic, result.threshold, result.details) == (
        direct.statistic,
        direct.threshold,
        direct.details,
    )
    # written out: the beta-binomial predictive lower tail of the correct count, Jeffreys prior on the
    # comparison half's accuracy
    cmp_rows, _ = drift.split_halves(ref.n, WINDOW, cal.seed)
    c = int((ref.probs[cmp_rows].argmax(1) == ref.labels[cmp_rows]).sum())
    correct = int((predictions == labels).sum())
    p = stats.betabinom.cdf(correct, WINDOW, c + 0.5, cmp_rows.size - c + 0.5)
    assert result.statistic == pytest.approx(-np.log10(p), rel=1e-9)
    assert result.threshold == cal.thresholds["accuracy"]


def test_a_planted_accuracy_drop_alarms_and_true_labels_do_not(setup) -> None:
    ref, cal = setup
    clean, dropped = Monitor(ref, cal), Monitor(ref, cal)
    predictions, labels = served(6 * WINDOW, seed=4)
    rng = np.random.default_rng(5)
    wrong = labels.copy()
    half = rng.random(wrong.size) < 0.5
    wrong[half] = rng.integers(0, ref.n_classes, size=int(half.sum()))  # half the labels at random
    clean_windows = clean.observe_feedback(predictions, labels)
    dropped_windows = dropped.observe_feedback(predictions, wrong)
    assert len(clean_windows) == len(dropped_windows) == 6
    assert [w.alarm for w in clean_windows] == [False] * 6
    assert [w.alarms for w in dropped_windows] == [("accuracy",)] * 6


def test_feedback_without_reference_labels_is_accepted_and_not_evaluated(setup) -> None:
    x, logits, features, _ = table_rows(1000, seed=6)
    ref = build_reference(x, logits, features, None)
    monitor = Monitor(ref, calibrate(ref, window=50, false_alarm_windows=100, n_resamples=100))
    assert not monitor.takes_feedback
    predictions, labels = served(100, seed=7)
    assert monitor.observe_feedback(predictions, labels) == []
    assert monitor.recent(stream="feedback") == []


def test_feedback_of_another_length_is_a_data_error(setup) -> None:
    ref, cal = setup
    predictions, labels = served(10, seed=8)
    with pytest.raises(DataError, match="one label per predicted class"):
        Monitor(ref, cal).observe_feedback(predictions, labels[:9])


def test_dashboard_and_metrics_keep_the_streams_apart(setup) -> None:
    from assay.serve.dashboard import detector_series
    from assay.serve.metrics import ServeMetrics

    ref, cal = setup
    monitor = Monitor(ref, cal)
    x, logits, features, labels = table_rows(WINDOW, seed=9)
    (traffic,) = monitor.observe(x, logits, features, labels=labels)
    (late,) = monitor.observe_feedback(logits.argmax(1), (labels + 1) % ref.n_classes)
    series = detector_series([traffic, late])
    assert series["accuracy (feedback)"]["statistics"] == [late.results[0].statistic]
    assert series["accuracy"]["statistics"] == [r.statistic for r in traffic.results if r.name == "accuracy"]
    metrics = ServeMetrics()
    metrics.windows([traffic, late])
    for window in (traffic, late):
        key = {"detector": "accuracy", "stream": window.stream}
        value = metrics.registry.get_sample_value("assay_monitor_statistic", key)
        assert value == next(r.statistic for r in window.results if r.name == "accuracy")

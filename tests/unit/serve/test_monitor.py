"""The live monitor: windows of odd batch sizes, thread safety, and agreement with the detectors."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from assay.errors import DataError
from assay.outputs import softmax
from assay.serve.drift import Window, baseline_for, calibrate, evaluate
from assay.serve.monitor import Monitor, WindowResult
from assay.serve.reference import build_reference, ood_scores
from tests.unit.serve import table_rows

WINDOW = 50


@pytest.fixture(scope="module")
def setup():
    x, logits, features, labels = table_rows(1000, seed=0)
    ref = build_reference(x, logits, features, labels, agreement=0.95)
    return ref, calibrate(ref, window=WINDOW, false_alarm_windows=100, n_resamples=300)


def test_odd_batch_sizes_span_windows(setup) -> None:
    ref, cal = setup
    monitor = Monitor(ref, cal)
    x, logits, features, _labels = table_rows(10 * WINDOW, seed=1)
    at = 0

    def feed(n: int) -> list[WindowResult]:
        nonlocal at
        out = monitor.observe(x[at : at + n], logits[at : at + n], features[at : at + n])
        at += n
        return out

    assert feed(1) == [] and monitor.buffered == 1
    assert [w.index for w in feed(WINDOW - 1)] == [0]
    assert feed(WINDOW - 1) == [] and monitor.buffered == WINDOW - 1
    closed = feed(2 * WINDOW + 1)  # one request closing three windows (49 buffered + 101)
    assert [w.index for w in closed] == [1, 2, 3] and monitor.buffered == 0
    assert feed(0) == []
    assert all(w.n == WINDOW and sum(w.summary["class_counts"]) == WINDOW for w in closed)
    assert [w.index for w in monitor.recent(2)] == [2, 3]
    json.dumps([w.to_dict() for w in monitor.recent()])


def test_window_equals_direct_evaluation(setup) -> None:
    """Rows fed in batches of 7 give the same statistics as the detectors on the window's rows at once."""
    ref, cal = setup
    monitor = Monitor(ref, cal)
    x, logits, features, labels = table_rows(WINDOW, seed=2)
    shadow = logits.copy()
    shadow[:10, 0] += 100  # the parent disagrees on (at most) 10 rows
    closed: list[WindowResult] = []
    for s in range(0, WINDOW, 7):
        part = slice(s, s + 7)
        closed += monitor.observe(x[part], logits[part], features[part], labels=labels[part],
                                  shadow_logits=shadow[part])  # fmt: skip
    (w,) = closed
    probs = softmax(logits)
    direct = evaluate(
        baseline_for(ref, cal),
        cal,
        Window(x, probs.max(1), probs.argmax(1), ood_scores(logits), features, labels, shadow.argmax(1)),
    )
    assert [(r.name, r.statistic, r.alarm) for r in w.results] == [
        (r.name, r.statistic, r.alarm) for r in direct
    ]
    assert {r.name for r in w.results} >= {"features", "embeddings", "accuracy", "agreement"}
    assert w.summary["accuracy"] == pytest.approx(float((probs.argmax(1) == labels).mean()))
    assert w.summary["n_shadow"] == WINDOW and w.summary["agreement"] <= 1.0


def test_partial_labels_and_missing_features(setup) -> None:
    ref, cal = setup
    monitor = Monitor(ref, cal)
    x, logits, features, labels = table_rows(WINDOW, seed=3)
    monitor.observe(x[:20], logits[:20], None, labels=labels[:20])
    (w,) = monitor.observe(x[20:], logits[20:], features[20:])
    names = {r.name for r in w.results}
    assert "embeddings" not in names  # not every row carried features
    assert "accuracy" not in names and w.summary["n_labelled"] == 20  # fewer than 30 labels


def test_concurrent_observers_lose_and_duplicate_nothing(setup) -> None:
    ref, cal = setup
    monitor = Monitor(ref, cal, history=10_000)
    n_threads, per_thread = 4, 40
    rng = np.random.default_rng(4)
    sizes = rng.integers(1, 2 * WINDOW, size=(n_threads, per_thread))
    total = int(sizes.sum())
    x, logits, features, _ = table_rows(total, seed=5)
    x[:, 3] = np.arange(total)  # column x3 carries a row id, so the windows' means account for every row
    offsets = np.r_[0, np.cumsum(sizes.ravel())].reshape(-1)
    closed: list[list[WindowResult]] = [[] for _ in range(n_threads)]

    def work(t: int) -> None:
        for i in range(per_thread):
            k = t * per_thread + i
            part = slice(offsets[k], offsets[k + 1])
            closed[t].extend(monitor.observe(x[part], logits[part], features[part]))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    windows = sorted((w for c in closed for w in c), key=lambda w: w.index)
    assert [w.index for w in windows] == list(range(total // WINDOW))
    assert monitor.buffered == total % WINDOW and monitor.rows_seen == total
    assert [w.index for w in monitor.recent(10_000)] == [w.index for w in windows]
    id_sum = sum(w.summary["input_means"]["x3"] * WINDOW for w in windows)
    assert id_sum <= total * (total - 1) / 2
    # the rows in windows are exactly the first total - buffered rows to take the lock: their ids sum to
    # the total minus the ids still buffered, which the monitor holds
    buffered_ids = sum(float(p.inputs[:, 3].sum()) for p in monitor._traffic.pending)
    buffered_ids += sum(float(b.x[:, 3].sum()) for b in monitor._staged)  # checked, not summarised yet
    assert id_sum + buffered_ids == pytest.approx(total * (total - 1) / 2, abs=1e-6)
    counts = np.sum([w.summary["class_counts"] for w in windows], axis=0)
    assert counts.sum() == WINDOW * len(windows)


def test_staged_batches_are_copied_and_bounded(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows wait unsummarised until their window is due, as copies (the caller may reuse its buffers);
    past STAGE_BYTES they are summarised early, which changes no statistic."""
    ref, cal = setup
    x, logits, features, labels = table_rows(2 * WINDOW, seed=7)

    def run(reuse: bool) -> tuple[list[WindowResult], int]:
        monitor = Monitor(ref, cal)
        closed: list[WindowResult] = []
        most_staged = 0
        for s in range(0, 2 * WINDOW, 9):
            part = slice(s, s + 9)
            bx, bz, bf, bl = x[part].copy(), logits[part].copy(), features[part].copy(), labels[part].copy()
            closed += monitor.observe(bx, bz, bf, labels=bl)
            most_staged = max(most_staged, monitor._staged_rows)
            if reuse:  # the caller's next batch overwrites the same buffers
                for a in (bx, bz, bf):
                    a.fill(7.0)
                bl.fill(0)
        return closed, most_staged

    plain, staged = run(reuse=False)
    assert len(plain) == 2 and staged == 45  # 5 batches of 9 wait; the 6th is due to close window 0
    monkeypatch.setattr("assay.serve.monitor.STAGE_BYTES", 2 * x[:9].nbytes)
    for closed, staged in (run(reuse=True), run(reuse=False)):
        assert staged == 9  # a second batch reaches the bound
        for a, b in zip(plain, closed, strict=True):
            assert [r.to_dict() for r in a.results] == [r.to_dict() for r in b.results]
            assert a.summary == b.summary


def test_bad_batches_are_data_errors(setup) -> None:
    ref, cal = setup
    monitor = Monitor(ref, cal)
    x, logits, features, _ = table_rows(5, seed=6)
    with pytest.raises(DataError, match=r"shape \(N, 4\)"):
        monitor.observe(x, logits[:, :3], features)
    with pytest.raises(DataError, match="rows"):
        monitor.observe(x[:4], logits, features)
    with pytest.raises(DataError, match="NaN"):
        monitor.observe(x, logits * np.nan, features)
    with pytest.raises(DataError, match="do not match"):
        monitor.observe(x[:, :3], logits, features)
    with pytest.raises(DataError, match="do not match"):
        monitor.observe(np.zeros((5, 8, 8)), logits, features)
    with pytest.raises(DataError, match="dimensions"):
        monitor.observe(x, logits, features[:, :2])
    assert monitor.buffered == 0  # nothing half-added

"""Windows of live traffic, compared with the release's reference as they close.

The server calls :meth:`Monitor.observe` on every batch it serves, on its model thread. Per call the work
is a few checks and a copy of the batch into a staging list: the per-row statistics (input summaries,
max probability, predicted class, OOD score) are computed for the staged rows at once, when a window is
due to close or ``STAGE_BYTES`` of inputs have accumulated. Summarising 500 images in one pass costs less
than half of summarising them in batches of 8 (numpy's fixed cost per call dominates small batches), and
about the same as in batches of 64. Summarised rows wait in a buffer; every ``calibration.window`` rows
a window closes (a batch larger than a window closes several, rows keep their arrival order) and every
applicable detector of :mod:`assay.serve.drift` is evaluated on it, outside the lock, against the
comparison half prepared once at construction: O(window + reference) for the sorted searches, nothing
re-sorted.

Labels that arrive after their predictions (:meth:`Monitor.observe_feedback`) form a stream of their own:
every ``window`` labelled rows close a *feedback window*, indexed separately and read by the accuracy
detector only, as the other detectors would see the same traffic a second time.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, Protocol, Self, TypeVar

import numpy as np

from assay.errors import DataError, UsageError
from assay.outputs import softmax
from assay.serve.drift import Calibration, DetectorResult, Window, baseline_for, evaluate
from assay.serve.reference import Reference, input_summaries, ood_scores, summary_names

__all__ = ["DetectorResult", "Monitor", "Stream", "WindowBuffer", "WindowResult"]

# Staged inputs are summarised once they reach this size, so staging never holds more than about this
# much (plus one batch): a window of small images is summarised whole, large images batch by batch.
STAGE_BYTES = 8 * 2**20

# windows of served rows / of labels sent after the prediction / a language model's prompts, by the
# endpoint that framed them (assay.serve.llm_monitor)
Stream = Literal["traffic", "feedback", "completions", "chat"]


@dataclass(frozen=True)
class WindowResult:
    """One closed window: its detectors' results and a JSON summary of the rows in it. Each stream numbers
    its windows from 0."""

    index: int
    n: int
    started_at: float
    ended_at: float
    results: tuple[DetectorResult, ...]
    summary: dict[str, Any] = field(default_factory=dict)
    stream: Stream = "traffic"

    @property
    def alarm(self) -> bool:
        """Whether any detector alarmed on this window."""
        return any(r.alarm for r in self.results)

    @property
    def alarms(self) -> tuple[str, ...]:
        """Names of the detectors that alarmed."""
        return tuple(r.name for r in self.results if r.alarm)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "stream": self.stream,
            "n": self.n,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "alarm": self.alarm,
            "results": [r.to_dict() for r in self.results],
            "summary": self.summary,
        }


@dataclass(frozen=True, eq=False)
class _Staged:
    """One observed batch, checked and copied, before its rows are summarised (−1 = no label / shadow)."""

    x: np.ndarray
    logits: np.ndarray
    features: np.ndarray | None
    labels: np.ndarray
    shadow: np.ndarray
    arrived: float

    def __len__(self) -> int:
        return int(self.logits.shape[0])


@dataclass(frozen=True, eq=False)
class _Rows:
    """Per-row monitoring data of consecutive requests (labels / shadow predictions: −1 = none)."""

    inputs: np.ndarray
    confidence: np.ndarray
    predictions: np.ndarray
    ood: np.ndarray
    embeddings: np.ndarray | None
    labels: np.ndarray
    shadow: np.ndarray
    arrived: np.ndarray  # time.time() of each row's batch

    def __len__(self) -> int:
        return int(self.confidence.shape[0])

    def split(self, k: int) -> tuple[_Rows, _Rows]:
        """The first ``k`` rows and the rest (views, no copies)."""
        return self._slice(slice(None, k)), self._slice(slice(k, None))

    def _slice(self, part: slice) -> _Rows:
        emb = None if self.embeddings is None else self.embeddings[part]
        return _Rows(
            self.inputs[part], self.confidence[part], self.predictions[part], self.ood[part], emb,
            self.labels[part], self.shadow[part], self.arrived[part],
        )  # fmt: skip

    @classmethod
    def summarise(cls, staged: list[_Staged], column_names: tuple[str, ...] | None) -> _Rows:
        """The per-row statistics of staged batches, in one vectorised pass. Their ``features`` are all
        present or all absent (:meth:`Monitor.observe` stages them so)."""
        z = np.concatenate([s.logits for s in staged])
        _, inputs = input_summaries(np.concatenate([s.x for s in staged]), column_names)
        emb = None
        if staged[0].features is not None:
            emb = np.concatenate([s.features for s in staged if s.features is not None])
        probs = softmax(z)
        arrived = np.concatenate([np.full(len(s), s.arrived) for s in staged])
        labels = np.concatenate([s.labels for s in staged])
        shadow = np.concatenate([s.shadow for s in staged])
        return cls(
            inputs, probs.max(axis=1), probs.argmax(axis=1), ood_scores(z), emb, labels, shadow, arrived
        )


@dataclass(frozen=True, eq=False)
class _Labelled:
    """Predicted classes and the labels that came for them later."""

    predictions: np.ndarray
    labels: np.ndarray
    arrived: float

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def split(self, k: int) -> tuple[_Labelled, _Labelled]:
        return (
            _Labelled(self.predictions[:k], self.labels[:k], self.arrived),
            _Labelled(self.predictions[k:], self.labels[k:], self.arrived),
        )


class Splittable(Protocol):
    """Rows a window buffer holds: their count, and a split into the first ``k`` and the rest."""

    def __len__(self) -> int: ...

    def split(self, k: int) -> tuple[Self, Self]: ...


T = TypeVar("T", bound=Splittable)


class WindowBuffer(Generic[T]):
    """Rows waiting for their window, in arrival order, and the index of the next window to close."""

    def __init__(self) -> None:
        self.pending: deque[T] = deque()
        self.size = 0
        self.next_index = 0

    def add(self, rows: T, window: int) -> list[tuple[int, list[T]]]:
        """Append ``rows``; return every window that closed, as (index, its parts)."""
        if len(rows):
            self.pending.append(rows)
            self.size += len(rows)
        closed = []
        while self.size >= window:
            closed.append((self.next_index, self._take(window)))
            self.next_index += 1
        return closed

    def _take(self, n: int) -> list[T]:
        parts: list[T] = []
        need = n
        while need:
            head = self.pending.popleft()
            if len(head) > need:
                head, rest = head.split(need)
                self.pending.appendleft(rest)
            parts.append(head)
            need -= len(head)
        self.size -= n
        return parts


def _concat(parts: list[_Rows]) -> Window:
    has_embeddings = all(p.embeddings is not None for p in parts)
    labels = np.concatenate([p.labels for p in parts])
    shadow = np.concatenate([p.shadow for p in parts])
    return Window(
        inputs=np.concatenate([p.inputs for p in parts]),
        confidence=np.concatenate([p.confidence for p in parts]),
        predictions=np.concatenate([p.predictions for p in parts]),
        ood=np.concatenate([p.ood for p in parts]),
        embeddings=np.concatenate([p.embeddings for p in parts if p.embeddings is not None])
        if has_embeddings
        else None,
        labels=labels if (labels >= 0).any() else None,
        shadow_predictions=shadow if (shadow >= 0).any() else None,
    )


class Monitor:
    """Windows of live traffic against ``reference`` with the thresholds of ``calibration``.

    Thread-safe: concurrent :meth:`observe` (and :meth:`observe_feedback`) calls each add their rows
    atomically, so every row lands in exactly one window of its stream, in the order the calls took the
    lock.
    """

    def __init__(self, reference: Reference, calibration: Calibration, *, seed: int = 0, history: int = 1000):
        self.reference = reference
        self.calibration = calibration
        self.seed = seed  # kept for the interface; the detectors' randomness is fixed by the calibration
        self.history = history
        self._baseline = baseline_for(reference, calibration)
        # feedback windows are read by the accuracy detector alone, at its calibrated threshold
        accuracy = calibration.thresholds.get("accuracy")
        self._feedback_calibration = (
            None if accuracy is None else replace(calibration, thresholds={"accuracy": accuracy})
        )
        self._lock = threading.Lock()
        self._staged: list[_Staged] = []  # checked batches not summarised yet
        self._staged_rows = self._staged_bytes = 0
        self._traffic: WindowBuffer[_Rows] = WindowBuffer()
        self._feedback: WindowBuffer[_Labelled] = WindowBuffer()
        self._rows_seen = 0
        self._recent: dict[Stream, list[WindowResult]] = {"traffic": [], "feedback": []}

    @property
    def window(self) -> int:
        return self.calibration.window

    @property
    def buffered(self) -> int:
        """Rows waiting for their traffic window to fill."""
        with self._lock:
            return self._traffic.size + self._staged_rows

    @property
    def takes_feedback(self) -> bool:
        """Whether late labels are evaluated: the reference has labels, so accuracy has a threshold."""
        return self._feedback_calibration is not None

    @property
    def rows_seen(self) -> int:
        with self._lock:
            return self._rows_seen

    def observe(
        self,
        x: np.ndarray,
        logits: np.ndarray,
        features: np.ndarray | None = None,
        *,
        labels: np.ndarray | None = None,
        shadow_logits: np.ndarray | None = None,
    ) -> list[WindowResult]:
        """Add one served batch; return the windows it closed (usually none). The batch is copied: the
        caller may reuse its arrays."""
        batch = self._checked(x, logits, features, labels, shadow_logits)
        if not len(batch):
            return []
        with self._lock:
            self._rows_seen += len(batch)
            windows = []
            if self._staged and (self._staged[0].features is None) != (batch.features is None):
                windows += self._summarise()  # a window has embeddings only if every row in it has features
            self._staged.append(batch)
            self._staged_rows += len(batch)
            self._staged_bytes += batch.x.nbytes
            if self._traffic.size + self._staged_rows >= self.window or self._staged_bytes >= STAGE_BYTES:
                windows += self._summarise()
            closed = [(i, parts, time.time()) for i, parts in windows]
        # evaluated outside the lock: other requests keep flowing
        return self._record(
            [self._evaluate(i, float(p[0].arrived[0]), end, _concat(p)) for i, p, end in closed]
        )

    def observe_feedback(self, predictions: np.ndarray, labels: np.ndarray) -> list[WindowResult]:
        """Add the labels of rows served earlier (their predicted classes, in the same order); return the
        feedback windows they closed. Without an accuracy threshold (a reference without labels) the
        labels are accepted and nothing is evaluated."""
        predictions, labels = np.asarray(predictions), np.asarray(labels)
        if predictions.ndim != 1 or labels.shape != predictions.shape:
            raise DataError(
                f"Feedback needs one label per predicted class; got labels of shape {labels.shape} for "
                f"predictions of shape {predictions.shape}."
            )
        if self._feedback_calibration is None:
            return []
        rows = _Labelled(predictions, labels.astype(np.int64, copy=False), time.time())
        with self._lock:
            closed = [(i, parts, time.time()) for i, parts in self._feedback.add(rows, self.window)]
        return self._record([self._evaluate_feedback(i, p[0].arrived, end, p) for i, p, end in closed])

    def recent(self, n: int = 100, stream: Stream = "traffic") -> list[WindowResult]:
        """The last ``n`` closed windows of ``stream``, oldest first."""
        with self._lock:
            return list(self._recent[stream][-n:]) if n > 0 else []

    # --- internals ---------------------------------------------------------------------------------

    def _record(self, results: list[WindowResult]) -> list[WindowResult]:
        if results:
            with self._lock:
                recent = self._recent[results[0].stream]
                for r in results:
                    bisect.insort(recent, r, key=lambda w: w.index)
                del recent[: max(0, len(recent) - self.history)]
        return results

    def _summarise(self) -> list[tuple[int, list[_Rows]]]:
        """Move the staged batches, summarised, into the traffic buffer (under the lock); return the
        windows that closed."""
        names = self.reference.feature_names if self.reference.kind == "table" else None
        # emptied first: should summarising ever fail, it loses these rows, not every later batch
        staged, self._staged, self._staged_rows, self._staged_bytes = self._staged, [], 0, 0
        return self._traffic.add(_Rows.summarise(staged, names), self.window)

    def _checked(
        self,
        x: np.ndarray,
        logits: np.ndarray,
        features: np.ndarray | None,
        labels: np.ndarray | None,
        shadow_logits: np.ndarray | None,
    ) -> _Staged:
        """One batch, checked against the reference (every check a summary would fail, made now, so a bad
        batch fails its own call and is never staged) and copied."""
        ref = self.reference
        # np.array copies: staged rows outlive this call, and the caller may reuse its arrays
        z = np.array(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != ref.n_classes:
            raise DataError(f"logits must have shape (N, {ref.n_classes}) for this reference; got {z.shape}.")
        n = z.shape[0]
        if np.shape(x)[0] != n:
            raise DataError(f"x has {np.shape(x)[0]} rows but logits have {n}.")
        if not np.isfinite(z).all():
            raise DataError("logits hold NaN or infinite values; the model's outputs cannot be monitored.")
        try:
            names = summary_names(np.shape(x), ref.feature_names if ref.kind == "table" else None)
        except UsageError as exc:
            raise DataError(f"Inputs of shape {np.shape(x)} do not match the reference: {exc}") from exc
        if names != ref.feature_names:
            raise DataError(
                f"Inputs of shape {np.shape(x)} give summaries {list(names)}, but the reference has "
                f"{list(ref.feature_names)}: the served inputs do not match the release's gating set."
            )
        emb = None
        if features is not None:
            f = np.array(features, dtype=np.float64)
            if f.shape[0] != n:
                raise DataError(f"features have {f.shape[0]} rows but logits have {n}.")
            emb = f.reshape(n, int(np.prod(f.shape[1:], dtype=np.int64)))
            if ref.embeddings is not None and emb.shape[1] != ref.embeddings.shape[1]:
                raise DataError(
                    f"features have {emb.shape[1]} dimensions; the reference has {ref.embeddings.shape[1]}."
                )
        lab = np.full(n, -1, dtype=np.int64)
        if labels is not None:
            lab = np.array(labels, dtype=np.int64).reshape(n)
        shadow = np.full(n, -1, dtype=np.int64)
        if shadow_logits is not None:
            s = np.asarray(shadow_logits)
            if s.shape != z.shape:
                raise DataError(f"shadow_logits must have the shape of logits {z.shape}; got {s.shape}.")
            shadow = s.argmax(axis=1).astype(np.int64)
        return _Staged(np.array(x), z, emb, lab, shadow, time.time())

    def _evaluate(self, index: int, started: float, ended: float, window: Window) -> WindowResult:
        results = evaluate(self._baseline, self.calibration, window)
        return WindowResult(index, self.window, started, ended, results, self._summary(window))

    def _evaluate_feedback(
        self, index: int, started: float, ended: float, parts: list[_Labelled]
    ) -> WindowResult:
        assert self._feedback_calibration is not None
        predictions = np.concatenate([p.predictions for p in parts])
        labels = np.concatenate([p.labels for p in parts])
        # only the accuracy detector runs, and it reads predictions and labels alone: the other columns
        # are left empty
        empty = np.empty(0)
        window = Window(np.empty((0, 0)), empty, predictions, empty, labels=labels)
        results = evaluate(self._baseline, self._feedback_calibration, window)
        summary = {"n_labelled": self.window, "accuracy": float((predictions == labels).mean())}
        return WindowResult(index, self.window, started, ended, results, summary, stream="feedback")

    def _summary(self, w: Window) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "class_counts": np.bincount(w.predictions, minlength=self.reference.n_classes).tolist(),
            "mean_confidence": float(w.confidence.mean()),
            "ood_rate": float((w.ood > self._baseline.ood_threshold).mean()),
            "input_means": dict(
                zip(self.reference.feature_names, w.inputs.mean(axis=0).tolist(), strict=True)
            ),
            "n_labelled": 0,
            "n_shadow": 0,
        }
        if w.labels is not None:
            has = w.labels >= 0
            summary["n_labelled"] = int(has.sum())
            summary["accuracy"] = float((w.predictions[has] == w.labels[has]).mean())
        if w.shadow_predictions is not None:
            has = w.shadow_predictions >= 0
            summary["n_shadow"] = int(has.sum())
            summary["agreement"] = float((w.predictions[has] == w.shadow_predictions[has]).mean())
        return summary

"""Windows of live traffic, compared with the release's reference as they close.

The server calls :meth:`Monitor.observe` on every batch it serves. Per call the work is O(rows) numpy:
input summaries, max probability, predicted class, OOD score, appended to a buffer under a lock. Every
time ``calibration.window`` rows have accumulated a window closes (a batch larger than a window closes
several, rows keep their arrival order) and every applicable detector of :mod:`assay.serve.drift` is
evaluated on it, outside the lock, against the comparison half prepared once at construction: O(window +
reference) for the sorted searches, nothing re-sorted.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.errors import DataError, UsageError
from assay.outputs import softmax
from assay.serve.drift import Calibration, DetectorResult, Window, baseline_for, evaluate
from assay.serve.reference import Reference, input_summaries, ood_scores

__all__ = ["DetectorResult", "Monitor", "WindowResult"]


@dataclass(frozen=True)
class WindowResult:
    """One closed window: its detectors' results and a JSON summary of the traffic in it."""

    index: int
    n: int
    started_at: float
    ended_at: float
    results: tuple[DetectorResult, ...]
    summary: dict[str, Any] = field(default_factory=dict)

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
            "n": self.n,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "alarm": self.alarm,
            "results": [r.to_dict() for r in self.results],
            "summary": self.summary,
        }


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
    arrived: float

    def __len__(self) -> int:
        return int(self.confidence.shape[0])

    def split(self, k: int) -> tuple[_Rows, _Rows]:
        """The first ``k`` rows and the rest (views, no copies)."""
        return self._slice(slice(None, k)), self._slice(slice(k, None))

    def _slice(self, part: slice) -> _Rows:
        emb = None if self.embeddings is None else self.embeddings[part]
        return _Rows(
            self.inputs[part], self.confidence[part], self.predictions[part], self.ood[part], emb,
            self.labels[part], self.shadow[part], self.arrived,
        )  # fmt: skip


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

    Thread-safe: concurrent :meth:`observe` calls each add their rows atomically, so every row lands in
    exactly one window, in the order the calls took the lock.
    """

    def __init__(self, reference: Reference, calibration: Calibration, *, seed: int = 0, history: int = 1000):
        self.reference = reference
        self.calibration = calibration
        self.seed = seed  # kept for the interface; the detectors' randomness is fixed by the calibration
        self.history = history
        self._baseline = baseline_for(reference, calibration)
        self._lock = threading.Lock()
        self._pending: deque[_Rows] = deque()
        self._buffered = 0
        self._next_index = 0
        self._rows_seen = 0
        self._recent: list[WindowResult] = []

    @property
    def window(self) -> int:
        return self.calibration.window

    @property
    def buffered(self) -> int:
        """Rows waiting for their window to fill."""
        with self._lock:
            return self._buffered

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
        """Add one served batch; return the windows it closed (usually none)."""
        rows = self._rows(x, logits, features, labels, shadow_logits)
        closed: list[tuple[int, float, float, Window]] = []
        with self._lock:
            self._rows_seen += len(rows)
            if len(rows):
                self._pending.append(rows)
                self._buffered += len(rows)
            while self._buffered >= self.window:
                parts = self._take(self.window)
                closed.append((self._next_index, parts[0].arrived, time.time(), _concat(parts)))
                self._next_index += 1
        results = [self._evaluate(*c) for c in closed]  # outside the lock: other requests keep flowing
        if results:
            with self._lock:
                for r in results:
                    bisect.insort(self._recent, r, key=lambda w: w.index)
                del self._recent[: max(0, len(self._recent) - self.history)]
        return results

    def recent(self, n: int = 100) -> list[WindowResult]:
        """The last ``n`` closed windows, oldest first."""
        with self._lock:
            return list(self._recent[-n:]) if n > 0 else []

    # --- internals ---------------------------------------------------------------------------------

    def _take(self, n: int) -> list[_Rows]:
        parts: list[_Rows] = []
        need = n
        while need:
            head = self._pending.popleft()
            if len(head) > need:
                head, rest = head.split(need)
                self._pending.appendleft(rest)
            parts.append(head)
            need -= len(head)
        self._buffered -= n
        return parts

    def _rows(
        self,
        x: np.ndarray,
        logits: np.ndarray,
        features: np.ndarray | None,
        labels: np.ndarray | None,
        shadow_logits: np.ndarray | None,
    ) -> _Rows:
        ref = self.reference
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != ref.n_classes:
            raise DataError(f"logits must have shape (N, {ref.n_classes}) for this reference; got {z.shape}.")
        n = z.shape[0]
        if np.shape(x)[0] != n:
            raise DataError(f"x has {np.shape(x)[0]} rows but logits have {n}.")
        if not np.isfinite(z).all():
            raise DataError("logits hold NaN or infinite values; the model's outputs cannot be monitored.")
        try:
            names, summaries = input_summaries(x, ref.feature_names if ref.kind == "table" else None)
        except UsageError as exc:
            raise DataError(f"Inputs of shape {np.shape(x)} do not match the reference: {exc}") from exc
        if names != ref.feature_names:
            raise DataError(
                f"Inputs of shape {np.shape(x)} give summaries {list(names)}, but the reference has "
                f"{list(ref.feature_names)}: the served inputs do not match the release's gating set."
            )
        emb = None
        if features is not None:
            f = np.asarray(features, dtype=np.float64)
            if f.shape[0] != n:
                raise DataError(f"features have {f.shape[0]} rows but logits have {n}.")
            emb = f.reshape(n, int(np.prod(f.shape[1:], dtype=np.int64)))
            if ref.embeddings is not None and emb.shape[1] != ref.embeddings.shape[1]:
                raise DataError(
                    f"features have {emb.shape[1]} dimensions; the reference has {ref.embeddings.shape[1]}."
                )
        probs = softmax(z)
        preds = probs.argmax(axis=1)
        lab = np.full(n, -1, dtype=np.int64)
        if labels is not None:
            lab = np.asarray(labels, dtype=np.int64).reshape(n)
        shadow = np.full(n, -1, dtype=np.int64)
        if shadow_logits is not None:
            s = np.asarray(shadow_logits)
            if s.shape != z.shape:
                raise DataError(f"shadow_logits must have the shape of logits {z.shape}; got {s.shape}.")
            shadow = s.argmax(axis=1).astype(np.int64)
        return _Rows(summaries, probs.max(axis=1), preds, ood_scores(z), emb, lab, shadow, time.time())

    def _evaluate(self, index: int, started: float, ended: float, window: Window) -> WindowResult:
        results = evaluate(self._baseline, self.calibration, window)
        return WindowResult(index, self.window, started, ended, results, self._summary(window))

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

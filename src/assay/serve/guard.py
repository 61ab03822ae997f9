"""From monitor alarms to durable incidents to a guarded rollback.

Every alarmed window is written to the store before anything acts on it (the order of writes and why it
survives a kill at any point is in ``assay.store.incidents``). Consecutive alarmed windows of one stream
(traffic, or feedback: labels sent after the prediction) on the same version form one incident; the
``rollback_after``-th marks it due and the guard rolls the alias back to the previous entry of its
history, in one transaction with the incident. The streams count separately: their windows close at their
own pace, so a window of one says nothing about whether the other's alarms are consecutive.

The guard is deliberately conservative, because a rollback cannot cure a shift in the data itself:

- it rolls back only while the alias still serves the incident's version;
- it makes at most ``max_rollbacks`` automatic rollbacks per server process; after that it only records
  incidents, so a shifted input stream cannot walk the alias back through its whole history.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from assay.serve.monitor import Stream, WindowResult
from assay.store import Store
from assay.store.records import Incident

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 5.0


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def detection_record(window: WindowResult) -> dict[str, Any]:
    """What an incident keeps of one alarmed window: every detector's statistic and threshold, and for the
    alarmed ones their details and a line saying what moved."""
    return {
        "window": window.index,
        "stream": window.stream,
        "n": window.n,
        "start": _when(window.started_at).isoformat(),
        "end": _when(window.ended_at).isoformat(),
        "alarms": [r.name for r in window.results if r.alarm],
        "detectors": {
            r.name: {"statistic": r.statistic, "threshold": r.threshold, "alarm": r.alarm}
            | ({"why": r.explain(), "details": r.details} if r.alarm else {})
            for r in window.results
        },
    }


def _strongest(window: WindowResult) -> tuple[str, float, float]:
    """The alarmed detector furthest past its threshold (the one an incident is named after)."""
    alarmed = [r for r in window.results if r.alarm]
    top = max(alarmed, key=lambda r: r.statistic / r.threshold if r.threshold > 0 else float("inf"))
    return top.name, top.statistic, top.threshold


class RollbackGuard:
    """Turns the windows of one served ``model@alias`` into incidents and, by policy, rollbacks.

    ``rollback_after`` None: incidents are recorded, nothing is rolled back. ``on_rollback`` is called
    after a rollback committed (the server reloads the alias).
    """

    def __init__(
        self,
        store: Store,
        model: str,
        alias: str,
        *,
        rollback_after: int | None = 3,
        max_rollbacks: int = 1,
        webhook: str | None = None,
        on_rollback: Callable[[Incident], None] | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.alias = alias
        self.rollback_after = rollback_after
        self.max_rollbacks = max_rollbacks
        self.webhook = webhook
        self.on_rollback = on_rollback
        self.rollbacks = 0
        self._episodes: dict[Stream, Incident] = {}  # each stream's open incident, of its current run
        self._last_window: dict[Stream, int] = {}
        self._lock = threading.Lock()

    @property
    def _policy(self) -> int | None:
        """The consecutive count that makes a rollback due, while the budget lasts."""
        return self.rollback_after if self.rollbacks < self.max_rollbacks else None

    def recover(self) -> list[Incident]:
        """Finish rollbacks decided before a crash; call before loading the served version."""
        done = []
        for incident in self.store.list_incidents(self.model, self.alias, due_only=True):
            done.append(self._carry_out(incident))
        return done

    def on_windows(self, version: int, windows: list[WindowResult]) -> None:
        with self._lock:
            for window in windows:
                self._on_window(version, window)

    def _on_window(self, version: int, window: WindowResult) -> None:
        stream = window.stream
        if not window.alarm:
            self._episodes.pop(stream, None)
            self._last_window[stream] = window.index
            return
        record = detection_record(window)
        episode = self._episodes.get(stream)
        consecutive = (
            episode is not None
            and episode.version == version
            and self._last_window.get(stream) == window.index - 1
        )
        if consecutive and episode is not None:
            incident = self.store.extend_incident(episode.id, record, rollback_after=self._policy)
        else:
            detector, statistic, threshold = _strongest(window)
            incident = self.store.open_incident(
                self.model, self.alias, version, detector=detector, statistic=statistic,
                threshold=threshold, window=window.index, window_start=_when(window.started_at),
                window_end=_when(window.ended_at), detection=record, rollback_after=self._policy,
            )  # fmt: skip
            logger.warning("incident %d on %s: %s", incident.id, self.model, ", ".join(record["alarms"]))
            self._notify("incident", incident)
        self._episodes[stream], self._last_window[stream] = incident, window.index
        if incident.action == "rollback_due":
            self._carry_out(incident)

    def _carry_out(self, incident: Incident) -> Incident:
        done = self.store.rollback_incident(incident.id)
        if done.action == "rolled_back":
            self.rollbacks += 1
            self._episodes.clear()  # every run of alarms was on the version rolled away from
            logger.warning("incident %d: rolled %s@%s back to v%s", done.id, done.model, done.alias,
                           done.rollback_event.to_version if done.rollback_event else "?")  # fmt: skip
            self._notify("rollback", done)
            if self.on_rollback is not None:
                self.on_rollback(done)
        return done

    def _notify(self, event: str, incident: Incident) -> None:
        """POST the event to the webhook, off the serving path; a failing hook is logged, never raised."""
        if self.webhook is None:
            return
        body = json.dumps({"event": event, "incident": incident_json(incident)}).encode()
        request = urllib.request.Request(
            self.webhook, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )

        def send() -> None:
            try:
                with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S):
                    pass
            except OSError as e:
                logger.warning("webhook %s failed for incident %d: %s", self.webhook, incident.id, e)

        threading.Thread(target=send, name="assay-webhook", daemon=True).start()


def incident_json(incident: Incident) -> dict[str, Any]:
    event = incident.rollback_event
    return {
        "id": incident.id,
        "model": incident.model,
        "alias": incident.alias,
        "version": incident.version,
        "status": incident.status,
        "action": incident.action,
        "detector": incident.detector,
        "statistic": incident.statistic,
        "threshold": incident.threshold,
        "window": incident.window,
        "window_start": incident.window_start.isoformat(),
        "window_end": incident.window_end.isoformat(),
        "detections": incident.detections,
        "rollback": None
        if event is None
        else {"from_version": event.from_version, "to_version": event.to_version, "at": event.at.isoformat()},
        "opened_at": incident.opened_at.isoformat(),
        "acked_at": incident.acked_at.isoformat() if incident.acked_at else None,
        "acked_by": incident.acked_by,
        "ack_note": incident.ack_note,
        "details": incident.details,
    }

"""The serving core, without HTTP: one alias of one model, batched, monitored, guarded.

    requests -> MicroBatcher -> model thread (Served.run) -> responses
                                      |
                                      +-> monitor queue -> monitor thread: Monitor.observe -> windows
                                                                           -> RollbackGuard -> store
    alias watcher thread: polls the alias; on a move it loads and warms the new version, then swaps

Version swaps lose nothing: the new version is loaded and warmed before the swap, a batch runs wholly on
the version it started with, and requests queued at the swap run on the new one. The monitor sits off the
request path: observations go through a bounded queue, and when monitoring falls behind, observations are
dropped and counted (``assay_monitor_dropped_total``) rather than slowing the responses.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import threadpoolctl

from assay.errors import UsageError
from assay.release import Workspace
from assay.serve.batcher import MicroBatcher
from assay.serve.guard import RollbackGuard
from assay.serve.metrics import ServeMetrics
from assay.serve.served import BatchOutput, MonitorSettings, Served, load_served
from assay.store.records import Incident

logger = logging.getLogger(__name__)

MONITOR_CHUNK = 256  # most queued observations handed to the monitor in one call


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_queue: int = 1024  # examples waiting; beyond it requests get 503 at once
    max_body_bytes: int = 32 * 2**20
    monitor: bool = True
    window: int = 500  # examples per monitoring window
    false_alarm_windows: float = 1000.0  # expected windows between false alarms, all detectors together
    rollback_after: int | None = 3  # consecutive alarmed windows that roll the alias back; None: never
    max_rollbacks: int = 1  # automatic rollbacks per server process
    webhook: str | None = None
    shadow_rate: float = 0.0  # share of requests the parent also runs on (0: no shadow mode)
    poll_s: float = 1.0  # how often the alias is checked for a promotion or rollback
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.shadow_rate <= 1.0:
            raise UsageError(f"The shadow rate is a share of requests in [0, 1]. Got {self.shadow_rate}.")
        if self.rollback_after is not None and self.rollback_after < 1:
            raise UsageError(
                f"rollback_after counts alarmed windows, so it is >= 1. Got {self.rollback_after}."
            )
        if self.window < 10:
            raise UsageError(f"A monitoring window needs at least 10 examples. Got {self.window}.")


@dataclass
class _Observation:
    served: Served
    x: np.ndarray
    out: BatchOutput
    labels: np.ndarray | None


class Service:
    def __init__(self, ws: Workspace, model: str, alias: str, config: ServeConfig | None = None) -> None:
        self.ws = ws
        self.model = model
        self.alias = alias
        self.config = config or ServeConfig()
        self.metrics = ServeMetrics()
        self.guard = RollbackGuard(
            ws.store,
            model,
            alias,
            rollback_after=self.config.rollback_after,
            max_rollbacks=self.config.max_rollbacks,
            webhook=self.config.webhook,
            on_rollback=self._rolled_back,
        )
        self.batcher: MicroBatcher[BatchOutput] = MicroBatcher(
            self._run,
            max_batch=self.config.max_batch,
            max_wait_s=self.config.max_wait_ms / 1000,
            max_queue=self.config.max_queue,
            on_batch=self.metrics.batch,
        )
        self._served: Served | None = None
        self._observations: queue.Queue[_Observation | None] = queue.Queue(maxsize=1024)
        self._stop = threading.Event()
        self._alias_moved = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rng = np.random.default_rng(self.config.seed)

    # -- lifecycle ----------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._served is not None

    @property
    def current(self) -> Served | None:
        """The version in service, or None while the first one loads."""
        return self._served

    @property
    def served(self) -> Served:
        if self._served is None:
            raise UsageError("The model is not loaded yet.")
        return self._served

    def load(self) -> None:
        """Finish rollbacks a crash interrupted, then load and warm the version the alias points at."""
        for incident in self.guard.recover():
            logger.warning(
                "finished the rollback of incident %d after a restart (%s)", incident.id, incident.action
            )
        self._swap_to_alias()

    async def start(self) -> None:
        """Load (unless ``load`` ran already), then start the batcher and the monitor and watcher threads."""
        # numpy's BLAS (the monitor's matrix products) would otherwise start a thread per core that spins
        # between calls, competing with the event loop and the model for the same cores.
        threadpoolctl.threadpool_limits(1, user_api="blas")
        if self._served is None:
            await asyncio.get_running_loop().run_in_executor(None, self.load)
        await self.batcher.start()
        for target, name in ((self._monitor_loop, "assay-monitor"), (self._watch_loop, "assay-alias-watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        await self.batcher.stop()
        self._stop.set()
        self._alias_moved.set()
        self._observations.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    # -- requests ---------------------------------------------------------------------------------------

    async def predict(self, x: np.ndarray, labels: np.ndarray | None = None) -> BatchOutput:
        out = await self.batcher.submit(x)
        served = self._served
        if served is not None and served.monitor is not None and served.version.version == out.version:
            try:
                self._observations.put_nowait(_Observation(served, x, out, labels))
            except queue.Full:
                self.metrics.monitor_dropped.inc(int(x.shape[0]))
        return out

    def _run(self, x: np.ndarray) -> BatchOutput:
        return self.served.run(x)  # one version for the whole batch: the one current when it started

    # -- monitoring ---------------------------------------------------------------------------------------

    def _monitor_loop(self) -> None:
        while True:
            # Everything queued meanwhile goes into one observe() call: per call the monitor has a fixed
            # cost that, paid per request, would be a tenth of the server's throughput.
            items = [self._observations.get()]
            while len(items) < MONITOR_CHUNK and not self._observations.empty():
                items.append(self._observations.get_nowait())
            stop = items[-1] is None
            pending = [i for i in items if i is not None]
            for _, run in itertools.groupby(pending, key=lambda i: id(i.served)):  # one version each
                group = list(run)
                try:
                    self._observe(group)
                except Exception:  # the monitor must never take the server down; it says what went wrong
                    logger.exception("monitoring failed on a batch of %s", group[0].served.version.ref)
            if stop:
                return

    def _observe(self, group: list[_Observation]) -> None:
        served = group[0].served
        assert served.monitor is not None
        x = np.concatenate([i.x for i in group])
        labels = None
        if any(i.labels is not None for i in group):  # -1 marks the rows that came without a label
            labels = np.concatenate(
                [i.labels if i.labels is not None else np.full(len(i.x), -1) for i in group]
            )
        shadow_logits = None
        if served.shadow is not None and self._rng.random() < self.config.shadow_rate:
            shadow_logits, _ = served.shadow.predictor.logits_and_features(x)
        features = None if group[0].out.features is None else np.concatenate([i.out.features for i in group])
        windows = served.monitor.observe(
            x,
            np.concatenate([i.out.logits for i in group]),
            features,
            labels=labels,
            shadow_logits=shadow_logits,
        )
        if not windows:
            return
        self.metrics.windows(windows)
        if self._served is served:  # windows of a version swapped out meanwhile concern nobody now
            self.guard.on_windows(served.version.version, windows)

    # -- alias changes --------------------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            self._alias_moved.wait(self.config.poll_s)
            self._alias_moved.clear()
            if self._stop.is_set():
                return
            try:
                self._swap_to_alias()
            except Exception:  # a version that fails to load leaves the current one serving
                logger.exception("could not switch %s@%s to its new version", self.model, self.alias)

    def _swap_to_alias(self) -> None:
        version = self.ws.store.current_alias(self.model, self.alias)
        if version is None:
            raise UsageError(
                f"Model {self.model!r} has no alias {self.alias!r}. Promote a version first: "
                f"assay models promote {self.model}@vN --alias {self.alias}"
            )
        current = self._served
        if current is not None and current.version.id == version.id:
            return
        settings = None
        if self.config.monitor:
            settings = MonitorSettings(
                window=self.config.window,
                false_alarm_windows=self.config.false_alarm_windows,
                shadow=self.config.shadow_rate > 0,
                seed=self.config.seed,
            )
        served = load_served(self.ws, version, settings)  # loaded and warmed before any request sees it
        self._served = served  # one reference assignment: a batch uses the old or the new, never a mix
        self.metrics.version.set(version.version)
        logger.info(
            "serving %s (%s)", version.ref, "first load" if current is None else f"was {current.version.ref}"
        )

    def _rolled_back(self, incident: Incident) -> None:
        self.metrics.rollbacks.inc()
        self._alias_moved.set()  # reload now rather than at the next poll

    # -- dashboard --------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        served = self._served
        return {
            "model": self.model,
            "alias": self.alias,
            "ready": served is not None,
            "version": served.version.version if served else None,
            "queued": self.batcher.queued,
            "batches": self.batcher.stats.batches,
            "examples": self.batcher.stats.examples,
            "rejected": self.batcher.stats.rejected,
            "monitor": served is not None and served.monitor is not None,
            "rollbacks": self.guard.rollbacks,
        }

"""The serving core, without HTTP: one alias of one model, batched, monitored, guarded.

    requests -> MicroBatcher -> model thread: Served.run, then Monitor.observe -> responses
                                                                 |
                                         closed windows -> guard thread: RollbackGuard -> store
    alias watcher thread: polls the alias; on a move it loads and warms the new version, then swaps
    feedback (labels for a request id) -> default executor: Monitor.observe_feedback -> guard thread

Version swaps lose nothing: the new version is loaded and warmed before the swap, a batch runs wholly on
the version it started with, and requests queued at the swap run on the new one. The monitor observes each
batch on the model thread, between forward passes (``_observe`` says why); the store writes an alarm
leads to happen on the guard thread.

Each answer gets a request id, a random per-process prefix and a counter (unique in the process, never one
an earlier process gave); the predicted classes of the answers of the last ``feedback_examples`` examples
are kept under it, so that labels arriving later can feed the accuracy detector.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import threadpoolctl

from assay.errors import NotFoundError, RefusedError, UsageError
from assay.serve.batcher import MicroBatcher
from assay.serve.drift import SMALLEST_WINDOW
from assay.serve.guard import RollbackGuard
from assay.serve.metrics import ServeMetrics
from assay.serve.monitor import WindowResult
from assay.serve.served import BatchOutput, MonitorSettings, Served, load_served
from assay.store.records import Incident
from assay.workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_queue: int = 1024  # examples waiting; beyond it requests get 503 at once
    max_body_bytes: int = 32 * 2**20
    monitor: bool = True
    # examples per monitoring window; None: 500, or less for a small reference (served.monitoring_window)
    window: int | None = None
    # most windows closed a minute (None: every example is monitored); see MonitorBudget
    max_windows_per_minute: float | None = 60.0
    false_alarm_windows: float = 1000.0  # expected windows between false alarms, all detectors together
    rollback_after: int | None = 3  # consecutive alarmed windows that roll the alias back; None: never
    max_rollbacks: int = 1  # automatic rollbacks per server process
    webhook: str | None = None
    shadow_rate: float = 0.0  # share of requests the parent also runs on (0: no shadow mode)
    poll_s: float = 1.0  # how often the alias is checked for a promotion or rollback
    feedback_examples: int = 100_000  # most recent examples whose predictions are kept for late labels
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.shadow_rate <= 1.0:
            raise UsageError(f"The shadow rate is a share of requests in [0, 1]. Got {self.shadow_rate}.")
        if self.rollback_after is not None and self.rollback_after < 1:
            raise UsageError(
                f"rollback_after counts alarmed windows, so it is >= 1. Got {self.rollback_after}."
            )
        if self.webhook is not None and not self.webhook.startswith(("http://", "https://")):
            raise UsageError(f"The webhook must be an http:// or https:// URL. Got {self.webhook!r}.")
        if self.max_windows_per_minute is not None and self.max_windows_per_minute <= 0:
            raise UsageError(
                "max_windows_per_minute must be > 0, or None to monitor every example. Got "
                f"{self.max_windows_per_minute}."
            )
        if self.window is not None and self.window < SMALLEST_WINDOW:
            raise UsageError(
                f"A monitoring window needs at least {SMALLEST_WINDOW} examples. Got {self.window}."
            )
        if self.feedback_examples < 0:
            raise UsageError(
                f"feedback_examples counts examples kept for feedback, so it is >= 0. Got "
                f"{self.feedback_examples}."
            )


class MonitorBudget:
    """Which batches the monitor observes: a token bucket of examples, refilled at ``rate`` a second and
    holding at most ``burst``. A batch is observed when the bucket holds its examples (or is full, for a
    batch larger than the bucket), and takes them; ``rate`` None observes everything.

    Why a rate: the false-alarm budget is per window, so without one a busy server closes more windows
    an hour and raises more false alarms an hour, and its monitor's share of the model thread grows with
    the traffic. Capped at ``max_windows_per_minute``, one window of ``window`` examples a second by
    default, false alarms come at least ``false_alarm_windows / max_windows_per_minute`` minutes apart on
    average, and the monitor costs a bounded slice of the model thread at any traffic. Which batches are
    skipped depends on arrival times only, never on their content, so the observed windows are a fair
    sample of the traffic. Used by the model thread alone: no lock.
    """

    def __init__(self, rate: float | None, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self._last = clock()

    def take(self, n: int, *, always: bool = False) -> bool:
        """Whether a batch of ``n`` examples is observed; ``always`` observes it regardless (it carries
        labels, which nothing else would count), still taking its examples from the bucket."""
        if self.rate is None:
            return True
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self._last) * self.rate)
        self._last = now
        if always or self.tokens >= min(n, self.burst):
            self.tokens -= n
            return True
        return False


class Answered(NamedTuple):
    """What is kept of one answer for its feedback: about 340 bytes with its id and its entry in the
    table (measured), plus 8 bytes an example."""

    version: int
    predictions: np.ndarray  # a view of the batch's predicted classes, 8 bytes an example
    labelled: bool


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
        self._windows: queue.Queue[tuple[Served, list[WindowResult]] | None] = queue.Queue()
        self._stop = threading.Event()
        self._alias_moved = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rng = np.random.default_rng(self.config.seed)
        self._budget: MonitorBudget | None = None  # set at load, for the served version's window
        # request id -> its answer, oldest first; only the event loop touches it, so it needs no lock
        self._answered: OrderedDict[str, Answered] = OrderedDict()
        self._answered_examples = 0
        self._id_prefix = secrets.token_hex(6) + "-"  # 48 random bits: ids of another process never match
        self._ids = itertools.count()

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
        """Load (unless ``load`` ran already), then start the batcher and the guard and watcher threads."""
        # numpy's BLAS (the monitor's matrix products) would otherwise start a thread per core that spins
        # between calls, competing with the event loop and the model for the same cores.
        threadpoolctl.threadpool_limits(1, user_api="blas")
        if self._served is None:
            await asyncio.get_running_loop().run_in_executor(None, self.load)
        await self.batcher.start()
        for target, name in ((self._guard_loop, "assay-guard"), (self._watch_loop, "assay-alias-watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        await self.batcher.stop()
        self._stop.set()
        self._alias_moved.set()
        self._windows.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    # -- requests ---------------------------------------------------------------------------------------

    async def predict(self, x: np.ndarray, labels: np.ndarray | None = None) -> BatchOutput:
        return await self.batcher.submit(x, labels)

    def remember(self, out: BatchOutput, labelled: bool = False) -> str:
        """A new request id for an answer, whose predicted classes are kept for its feedback, evicting the
        oldest answers beyond ``feedback_examples`` examples. On the event loop, O(1) amortised. An answer
        whose request carried labels is ``labelled`` already."""
        request_id = f"{self._id_prefix}{next(self._ids):x}"
        self._answered[request_id] = Answered(out.version, out.predictions, labelled)
        self._answered_examples += len(out.predictions)
        while self._answered_examples > self.config.feedback_examples:
            _, oldest = self._answered.popitem(last=False)
            self._answered_examples -= len(oldest.predictions)
        return request_id

    def answered(self, request_id: str) -> Answered:
        """The kept answer of ``request_id``, while it awaits its labels."""
        answer = self._answered.get(request_id)
        if answer is None:
            shown = request_id if len(request_id) <= 40 else request_id[:40] + "..."
            raise NotFoundError(
                f"No answer with request id {shown!r} is kept: it is unknown, or older than the last "
                f"{self.config.feedback_examples} examples this server keeps for feedback. Send labels "
                "sooner, or serve with a larger --feedback-examples."
            )
        if answer.labelled:
            raise RefusedError(
                f"Request {request_id!r} is labelled already (by its own labels or earlier feedback); each "
                "answer takes labels once."
            )
        return answer

    async def feedback(self, request_id: str, labels: np.ndarray) -> bool:
        """Take the labels of an earlier answer (one per row, checked by the caller); return whether they
        reached the accuracy detector of the version in service, which is the one that answered."""
        answer = self.answered(request_id)
        self._answered[request_id] = answer._replace(labelled=True)  # before the await: one taker only
        served = self._served
        if (
            served is None
            or served.version.version != answer.version
            or served.monitor is None
            or not served.monitor.takes_feedback
        ):
            return False
        # off the event loop (a closing window runs a test); its store writes happen on the guard thread
        loop = asyncio.get_running_loop()
        windows = await loop.run_in_executor(
            None, served.monitor.observe_feedback, answer.predictions, labels
        )
        if windows:
            self._windows.put((served, windows))
        return True

    def _run(self, x: np.ndarray, labels: np.ndarray | None) -> BatchOutput:
        served = self.served  # one version for the whole batch: the one current when it started
        start = time.perf_counter()
        x = served.contract.prepare(x)  # that version's own transform (a table's statistics)
        out = served.run(x)
        forwarded = time.perf_counter()
        self.metrics.forward_seconds.inc(forwarded - start)
        budget = self._budget
        if served.monitor is None or budget is None:
            return out
        if not budget.take(len(x), always=labels is not None):
            self.metrics.monitor_skipped.inc(len(x))
            return out
        finite = out.finite_rows()
        try:
            if finite.all():
                self._observe(served, x, out, labels)
            elif finite.any():  # the other rows' requests are refused (422): they are not traffic
                kept = None if labels is None else labels[finite]
                self._observe(served, x[finite], out.take(finite), kept)
        except Exception:  # a monitoring failure must not fail the answers; it is logged
            logger.exception("monitoring failed on a batch of %s", served.version.ref)
        self.metrics.monitor_seconds.inc(time.perf_counter() - forwarded)
        return out

    # -- monitoring ---------------------------------------------------------------------------------------

    def _observe(self, served: Served, x: np.ndarray, out: BatchOutput, labels: np.ndarray | None) -> None:
        """Monitor one batch, on the model thread, right after its forward pass.

        Measured on 2 cores, a monitor thread of its own cost 13-19% of the batched throughput (another
        runnable thread preempts torch's intra-op threads, and each parallel region waits for the slowest);
        here, between two forward passes, it cost 0-6%. The closed windows go to the guard thread, so the
        store writes of an incident never delay a batch.
        """
        assert served.monitor is not None
        shadow_logits = None
        if served.shadow is not None and self._rng.random() < self.config.shadow_rate:
            shadow_logits, _ = served.shadow.logits_and_features(x)
        windows = served.monitor.observe(
            x, out.logits, out.features, labels=labels, shadow_logits=shadow_logits
        )
        if windows:
            self._windows.put((served, windows))

    def _guard_loop(self) -> None:
        while (item := self._windows.get()) is not None:
            served, windows = item
            try:
                self.metrics.windows(windows)
                if self._served is served:  # windows of a version swapped out meanwhile concern nobody now
                    self.guard.on_windows(served.version.version, windows)
            except Exception:  # the guard must never take the server down; it says what went wrong
                logger.exception("recording the monitoring windows of %s failed", served.version.ref)

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
        window = None if served.monitor is None else served.monitor.window
        if window is not None and (self._budget is None or self._budget.burst != window):
            self._budget = self._budget_for(window)  # each version's window fits its own reference
        self._served = served  # one reference assignment: a batch uses the old or the new, never a mix
        self.metrics.version.set(version.version)
        logger.info(
            "serving %s (%s)", version.ref, "first load" if current is None else f"was {current.version.ref}"
        )

    def _budget_for(self, window: int) -> MonitorBudget:
        per_minute = self.config.max_windows_per_minute
        return MonitorBudget(None if per_minute is None else per_minute * window / 60, window)

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
            "monitored": served.monitor.rows_seen if served is not None and served.monitor is not None else 0,
            "max_windows_per_minute": self.config.max_windows_per_minute,
            "rollbacks": self.guard.rollbacks,
        }

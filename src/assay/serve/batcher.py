"""Dynamic micro-batching: requests that arrive close together run as one forward pass.

    submit(x, labels) -> waits in a bounded queue -> the collector takes requests in arrival order until
    the batch holds ``max_batch`` examples or ``max_wait_s`` has passed since the first -> one call of
    ``run(x, labels)`` on the model thread -> each request gets its own rows back

The queue is bounded in *examples*, not requests, so a request's own batch dimension counts: a request
that would take the queue past ``max_queue`` examples is refused at once with ``OverloadedError`` (the
server answers 503), rather than waiting behind work it cannot finish in time. A request is never split
across batches, so all of its rows come from one model version; one larger than ``max_batch`` runs as a
batch of its own.

One batch runs at a time, on one thread (torch's intra-op threads do the parallel work); while it runs,
the next one fills up, which is where batching's throughput comes from under load.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, Self, TypeVar

import numpy as np

from assay.errors import OverloadedError, UsageError


def too_many_examples(n: int, max_queue: int) -> str:
    """Why a request of ``n`` examples is refused (the server answers it 413)."""
    return (
        f"A request may hold at most {max_queue} examples (the server's queue size); this one holds {n}. "
        "Split it into smaller requests."
    )


class Sliceable(Protocol):
    def rows(self, start: int, stop: int) -> Self: ...


R = TypeVar("R", bound=Sliceable)


@dataclass
class _Pending(Generic[R]):
    x: np.ndarray
    labels: np.ndarray | None
    future: asyncio.Future[R]

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


@dataclass
class BatcherStats:
    batches: int = 0
    examples: int = 0
    rejected: int = 0

    def record(self, size: int) -> None:
        self.batches += 1
        self.examples += size


class MicroBatcher(Generic[R]):
    """``run(x, labels)`` takes a stacked batch (and its labels, -1 where a request sent none, or None when
    none did) and returns a result whose ``rows(a, b)`` is one request's part.

    ``on_batch(size, seconds)`` is called on the event loop after every batch (metrics). Use inside a
    running event loop: ``await start()``, ``await submit(x)``, ``await stop()``.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray, np.ndarray | None], R],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.002,
        max_queue: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < max_batch or max_wait_s < 0:
            raise UsageError(
                "The batcher needs max_batch >= 1, max_queue >= max_batch and max_wait >= 0. "
                f"Got max_batch={max_batch}, max_queue={max_queue}, max_wait_s={max_wait_s}."
            )
        self.run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.stats = BatcherStats()
        self._waiting: deque[_Pending[R]] = deque()
        self._queued = 0  # examples waiting (not yet in a running batch)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def queued(self) -> int:
        return self._queued

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assay-model")
        self._task = asyncio.create_task(self._collect(), name="assay-batcher")

    async def stop(self) -> None:
        """Finish every accepted request, then stop."""
        while self._waiting:
            await asyncio.sleep(0.001)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, x: np.ndarray, labels: np.ndarray | None = None) -> R:
        n = int(x.shape[0])
        if n > self.max_queue:
            raise UsageError(too_many_examples(n, self.max_queue))
        if self._queued + n > self.max_queue:
            self.stats.rejected += 1
            raise OverloadedError(
                f"The server is at capacity ({self._queued} examples queued, limit {self.max_queue}). "
                "Retry shortly."
            )
        assert self._wake is not None, "start() the batcher first"
        pending: _Pending[R] = _Pending(x, labels, asyncio.get_running_loop().create_future())
        self._waiting.append(pending)
        self._queued += n
        self._wake.set()
        return await pending.future

    async def _collect(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            deadline = loop.time() + self.max_wait_s
            while self._queued < self.max_batch and (remaining := deadline - loop.time()) > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            await self._execute(loop, batch)

    def _take(self) -> list[_Pending[R]]:
        batch = [self._waiting.popleft()]
        size = batch[0].n
        while self._waiting and size + self._waiting[0].n <= self.max_batch:
            batch.append(self._waiting.popleft())
            size += batch[-1].n
        self._queued -= size
        return batch

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[R]]) -> None:
        x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
        labels = None
        if any(p.labels is not None for p in batch):
            labels = np.concatenate([p.labels if p.labels is not None else np.full(p.n, -1) for p in batch])
        start = loop.time()
        try:
            result = await loop.run_in_executor(self._executor, self.run, x, labels)
        except Exception as e:  # the model failed: every request of the batch learns why
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        self.stats.record(int(x.shape[0]))
        if self.on_batch is not None:
            self.on_batch(int(x.shape[0]), loop.time() - start)
        offset = 0
        for p in batch:
            if not p.future.done():  # a client that went away cancelled its future
                p.future.set_result(result.rows(offset, offset + p.n))
            offset += p.n

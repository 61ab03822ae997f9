"""The micro-batcher: batching, bounded queue, one version per request, failures reach every caller."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from assay.errors import OverloadedError, UsageError
from assay.serve.batcher import MicroBatcher


@dataclass(frozen=True)
class Rows:
    values: np.ndarray
    batch: int  # which forward pass produced these rows

    def rows(self, start: int, stop: int) -> Rows:
        return Rows(self.values[start:stop], self.batch)


class Model:
    """Doubles its input; records each batch size; can be held at a gate to let a queue build up."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.labels: list[np.ndarray | None] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, x: np.ndarray, labels: np.ndarray | None = None) -> Rows:
        self.gate.wait(5)
        self.sizes.append(len(x))
        self.labels.append(labels)
        return Rows(x * 2, len(self.sizes))


def run(coro_fn):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_fn())


def test_requests_arriving_together_share_a_batch_and_get_their_own_rows() -> None:
    model = Model()

    async def main() -> list[Rows]:
        batcher = MicroBatcher(model, max_batch=16, max_wait_s=0.05, max_queue=64)
        await batcher.start()
        xs = [np.full((k, 2), float(i)) for i, k in enumerate([1, 3, 2, 4])]
        results = await asyncio.gather(*(batcher.submit(x) for x in xs))
        await batcher.stop()
        return list(results)

    results = run(main)
    assert model.sizes == [10]  # all four requests in one forward pass
    for i, (k, r) in enumerate(zip([1, 3, 2, 4], results, strict=True)):
        np.testing.assert_array_equal(r.values, np.full((k, 2), 2.0 * i))


def test_labels_travel_with_their_rows_and_missing_ones_are_minus_one() -> None:
    model = Model()

    async def main() -> None:
        batcher = MicroBatcher(model, max_batch=16, max_wait_s=0.05, max_queue=64)
        await batcher.start()
        await asyncio.gather(
            batcher.submit(np.ones((2, 1)), np.array([4, 5])),
            batcher.submit(np.ones((1, 1))),
            batcher.submit(np.ones((2, 1)), np.array([6, 7])),
        )
        await batcher.submit(np.ones((3, 1)))  # a batch without any label
        await batcher.stop()

    run(main)
    assert model.sizes == [5, 3]
    np.testing.assert_array_equal(model.labels[0], [4, 5, -1, 6, 7])  # type: ignore[arg-type]
    assert model.labels[1] is None


def test_a_batch_never_exceeds_max_batch_and_a_request_is_never_split() -> None:
    model = Model()
    model.gate.clear()  # hold the first batch so the rest queue up behind it

    async def main() -> list[Rows]:
        batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.0, max_queue=200)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(np.ones((k, 1)))) for k in [5, 5, 3, 8, 1, 20]]
        await asyncio.sleep(0.05)
        model.gate.set()
        results = await asyncio.gather(*tasks)
        await batcher.stop()
        return list(results)

    results = run(main)
    assert sum(model.sizes) == 42
    assert all(size <= 8 or size == 20 for size in model.sizes)  # the 20-row request runs alone, whole
    assert 20 in model.sizes
    assert [len(r.values) for r in results] == [5, 5, 3, 8, 1, 20]


def test_over_capacity_is_refused_at_once_counting_examples_not_requests() -> None:
    model = Model()
    model.gate.clear()

    async def main() -> tuple[int, int]:
        batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.0, max_queue=10)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(np.ones((4, 1))))  # taken by the held batch
        await asyncio.sleep(0.02)
        queued = [asyncio.create_task(batcher.submit(np.ones((4, 1)))) for _ in range(2)]  # 8 waiting
        await asyncio.sleep(0.02)
        with pytest.raises(OverloadedError, match="at capacity"):
            await batcher.submit(np.ones((3, 1)))  # 8 + 3 > 10: its own rows count
        model.gate.set()
        await asyncio.gather(first, *queued)
        await batcher.stop()
        return batcher.stats.rejected, batcher.stats.examples

    rejected, examples = run(main)
    assert (rejected, examples) == (1, 12)


def test_a_request_larger_than_the_queue_is_a_usage_error() -> None:
    async def main() -> None:
        batcher = MicroBatcher(Model(), max_batch=4, max_queue=8)
        await batcher.start()
        with pytest.raises(UsageError, match="at most 8 examples"):
            await batcher.submit(np.ones((9, 1)))
        await batcher.stop()

    run(main)


def test_a_failing_model_fails_every_request_of_its_batch_and_the_batcher_goes_on() -> None:
    calls = []

    def flaky(x: np.ndarray, labels: np.ndarray | None) -> Rows:
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return Rows(x, len(calls))

    async def main() -> None:
        batcher = MicroBatcher(flaky, max_batch=8, max_wait_s=0.05, max_queue=32)
        await batcher.start()
        outcomes = await asyncio.gather(
            *(batcher.submit(np.ones((1, 1))) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        ok = await batcher.submit(np.ones((2, 1)))
        assert len(ok.values) == 2
        await batcher.stop()

    run(main)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UsageError, match="max_queue >= max_batch"):
        MicroBatcher(Model(), max_batch=8, max_queue=4)

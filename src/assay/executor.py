"""Where the independent units of a job run: in this process one after another (the default), or as Ray
tasks on a cluster (``--ray ADDRESS``).

A job (the compression search, the trust suite, the data audit) hands its units to an executor and keeps
the rest: only the driver, the process the user started, writes the store and the documents, so the
store's transactions are the same whichever executor ran the work. A unit is a module-level function whose
arguments pickle; what it returns travels back to the driver.

    executor.share(obj)              an argument many units read (the dataset), sent to the cluster once
    executor.submit(fn, *args)       start a unit; the local executor runs it there and then
    executor.wait(tasks)             the first of ``tasks`` to finish
    task.result()                    its value, or the unit's own exception (a Skipped stays one)
    executor.cancel(tasks)           Ctrl-C: stop what still runs (the driver wrote only whole results)
    executor.map(fn, args)           every unit, results in the order given

A worker on another machine cannot read the driver's disk, so a model travels as its files
(:class:`PackedFolder`): a loaded model pickles as its folder and loads again in the worker, with the same
loader and the same checks. Each Ray task declares the CPUs and memory it needs, and its torch uses as many
threads as it declared CPUs: tasks never share a core that the scheduler gave to another, so what a task
times is not inflated by its neighbours.

Example (a local executor runs the unit at once)::

    >>> ex = LocalExecutor()
    >>> ex.map(pow, [(2, 3), (3, 2)])
    [8, 9]
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from assay.errors import MissingExtraError, UsageError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(eq=False)
class Task(Generic[T]):
    """One submitted unit: its label, and its result or the Ray reference that will hold it."""

    label: str
    ref: Any = None  # a Ray ObjectRef
    value: Any = None  # the local executor's result
    error: BaseException | None = None  # the local executor's exception

    def result(self) -> T:
        """The unit's value, or its exception raised here: a unit that raised Skipped raises Skipped."""
        if self.ref is None:
            if self.error is not None:
                raise self.error
            return cast(T, self.value)
        import ray

        try:
            return cast(T, ray.get(self.ref))
        except ray.exceptions.RayTaskError as e:
            log.debug("task %s failed in its worker:\n%s", self.label, e)
            raise (e.cause if isinstance(e.cause, Exception) else e) from None


class Executor:
    """What runs a job's units. Subclasses: :class:`LocalExecutor`, :class:`RayExecutor`."""

    kind: ClassVar[str]
    slots: int = 1  # units worth running at once; a job starts no more than this
    shares_disk: bool = True  # the units can read the driver's files (its cache, its store) by path

    def share(self, obj: T) -> T:
        """``obj`` as an argument many units read: sent once, not with every unit."""
        return obj

    def submit(self, fn: Callable[..., T], *args: Any, label: str = "") -> Task[T]:
        raise NotImplementedError

    def wait(self, tasks: Sequence[Task[Any]]) -> Task[Any]:
        """The first of ``tasks`` to finish (blocks until one has)."""
        raise NotImplementedError

    def cancel(self, tasks: Sequence[Task[Any]]) -> None:
        """Stop ``tasks``; their results are lost, and nothing the driver wrote depends on them."""

    def describe(self) -> dict[str, Any]:
        """What ran the work, for the job's document."""
        return {"kind": self.kind}

    def close(self) -> None:
        """Stop the progress bar; a cluster stays up for the next job."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(
        self,
        fn: Callable[..., T],
        args: Sequence[tuple[Any, ...]],
        labels: Sequence[str] | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> list[T]:
        """``fn(*a)`` for every ``a`` in ``args``, the results in that order; ``on_start(label)`` as each
        is submitted (here: as it starts). The first unit to raise has its exception raised here, and
        the units still running are cancelled; so does Ctrl-C."""
        names = list(labels) if labels is not None else [f"{fn.__name__}[{i}]" for i in range(len(args))]
        tasks: list[Task[T]] = []
        pending: list[Task[Any]] = []
        try:
            for a, name in zip(args, names, strict=True):
                if on_start is not None:
                    on_start(name)
                task = self.submit(fn, *a, label=name)
                tasks.append(task)
                pending.append(task)
                if task.error is not None:  # a local unit has run already: its failure stops the rest
                    task.result()
            results: dict[int, T] = {}
            while pending:
                done = self.wait(pending)
                pending.remove(done)
                results[id(done)] = done.result()
            return [results[id(t)] for t in tasks]
        except BaseException:
            self.cancel(pending)
            raise


class LocalExecutor(Executor):
    """Every unit in this process, at the moment it is submitted: a job runs as it would without an
    executor, one unit after another, with its own progress bars."""

    kind = "local"

    def submit(self, fn: Callable[..., T], *args: Any, label: str = "") -> Task[T]:
        task: Task[T] = Task(label)
        try:
            task.value = fn(*args)
        except Exception as e:  # kept for result(), as a worker's would be; Ctrl-C is no Exception
            task.error = e
        return task

    def wait(self, tasks: Sequence[Task[Any]]) -> Task[Any]:
        return tasks[0]


def _in_worker(fn: Callable[..., T], threads: int, *args: Any) -> T:
    """A unit in a Ray worker: torch on the CPUs the task declared, then the unit."""
    import torch

    torch.set_num_threads(threads)
    return fn(*args)


class RayExecutor(Executor):
    """Units as Ray tasks, each declaring ``cpus`` CPUs and ``memory_gb`` GiB of memory.

    ``address``: ``auto`` (the cluster this machine belongs to, or the one ``RAY_ADDRESS`` names, else a
    new local one), ``host:port`` of a head node, or ``ray://host:10001`` through Ray Client. Worker logs
    stay in the cluster's session logs (``/tmp/ray/session_latest/logs``), not on this terminal: a
    unit's failure comes back as its result."""

    kind = "ray"
    shares_disk = False  # a worker may sit on another machine; models travel as their files

    def __init__(
        self, address: str = "auto", *, cpus: float = 1, memory_gb: float | None = 2.0, progress: bool = False
    ) -> None:
        try:
            import ray
        except ImportError:
            raise MissingExtraError("ray", "ray") from None
        if cpus <= 0 or (memory_gb is not None and memory_gb <= 0):
            raise UsageError(f"A Ray task needs positive CPUs and GiB; got {cpus} and {memory_gb}.")
        self.address, self.cpus, self.memory_gb = address, cpus, memory_gb
        if not ray.is_initialized():
            try:
                ray.init(
                    address=None if address == "auto" else address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise UsageError(
                    f"--ray {address}: no Ray cluster answered there ({e}). Give the head node's address "
                    "(host:6379, or ray://host:10001 through Ray Client), or `auto` for a local cluster."
                ) from None
        total = float(ray.cluster_resources().get("CPU", 1.0))
        if total < cpus:
            raise UsageError(f"Each task asks for {cpus} CPUs; the Ray cluster has {total:g}. Ask for fewer.")
        self.slots = max(1, int(total // cpus))
        self._remote = ray.remote(_in_worker)
        self._progress = Progress(
            TextColumn("[bold]ray tasks"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True), disable=not progress, transient=False,
        )  # fmt: skip  # on stderr, beside the command's own progress lines
        self._bar = self._progress.add_task("ray tasks", total=0)

    def share(self, obj: T) -> T:
        import ray

        return cast(T, ray.put(obj))  # a reference, which Ray resolves into the object for each unit

    def submit(self, fn: Callable[..., T], *args: Any, label: str = "") -> Task[T]:
        options: dict[str, Any] = {"num_cpus": self.cpus, "name": label or fn.__name__}
        if self.memory_gb is not None:
            options["memory"] = int(self.memory_gb * 2**30)
        ref = self._remote.options(**options).remote(fn, max(1, int(self.cpus)), *args)
        self._progress.start()
        self._progress.update(self._bar, total=(self._progress.tasks[0].total or 0) + 1)
        return Task(label, ref=ref)

    def wait(self, tasks: Sequence[Task[Any]]) -> Task[Any]:
        import ray

        by_ref = {t.ref: t for t in tasks}
        ready, _ = ray.wait(list(by_ref), num_returns=1)
        self._progress.advance(self._bar)
        return by_ref[ready[0]]

    def cancel(self, tasks: Sequence[Task[Any]]) -> None:
        import ray

        for t in tasks:
            try:
                ray.cancel(t.ref, force=True)
            except Exception:  # already finished, or its worker gone: nothing left to stop
                log.debug("cancelling %s", t.label, exc_info=True)

    def describe(self) -> dict[str, Any]:
        import ray

        resources = ray.cluster_resources()
        return {
            "kind": self.kind,
            "address": self.address,
            "ray": ray.__version__,
            "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
            "cluster_cpus": resources.get("CPU"),
            "task_cpus": self.cpus,
            "task_memory_gb": self.memory_gb,
        }

    def close(self) -> None:
        self._progress.stop()


def executor_for(
    ray: str | None, *, cpus: float = 1, memory_gb: float | None = 2.0, progress: bool = False
) -> Executor:
    """The executor a command's ``--ray`` option names: none, this process; else a :class:`RayExecutor`."""
    if ray is None:
        return LocalExecutor()
    return RayExecutor(ray, cpus=cpus, memory_gb=memory_gb, progress=progress)


@dataclass(frozen=True)
class PackedFolder:
    """A folder's files in memory, so that a model travels to a worker that cannot read this disk.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "weights.bin").write_bytes(b"\\x00\\x01")
    ...     packed = PackedFolder.of(Path(tmp))
    >>> class Model:
    ...     def __init__(self, folder: Path) -> None:
    ...         self.weights = (folder / "weights.bin").read_bytes()
    >>> packed.load(Model).weights
    b'\\x00\\x01'
    """

    files: dict[str, bytes] = field(repr=False)

    @classmethod
    def of(cls, folder: Path) -> PackedFolder:
        return cls(
            {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        )

    def write_to(self, folder: Path) -> Path:
        """These files under ``folder`` (made if missing); returns ``folder``."""
        for rel, data in self.files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
        return folder

    def load(self, loader: Callable[[Path], T]) -> T:
        """``loader`` on these files in a private folder, which lives as long as what it returned (an
        object that takes a weak reference, as any class instance does): a worker that loads many models
        keeps none of their files once it has dropped them."""
        folder = Path(tempfile.mkdtemp(prefix="assay-unpacked-"))
        try:
            loaded = loader(self.write_to(folder))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        weakref.finalize(loaded, shutil.rmtree, folder, True)
        return loaded

"""The accuracy-aware compression search: every candidate built, measured, gated, registered and kept.

    root version --plan--> candidates (method + settings, optionally on top of another candidate)
        for each: build (a compressor) -> register (lineage: parent, recipe) -> evaluate on the root's
        test split (same evaluator, same examples, efficiency on this machine) -> gate against the root
        -> a trial: passed / failed (a verdict, never an exception) / skipped (with the reason) / error
        a failed static-int8 candidate adds fallbacks that keep its most damaging layers in fp32
    after every trial: the search document (JSON + HTML, atomically) with the Pareto frontier and the
    outcome (:func:`choose_best`), so an interruption or a search where nothing passes still leaves a
    complete record of what was tried.

The best variant passes the gate, has plausible timings, and is better than the parent on the objective
beyond the noise of the measurement: the gate's own comparison of the two (the 95% interval of the
difference, from independent bootstrap resamples of each side's timings; size on disk is exact) lies wholly
on the better side. When no passing variant does, the search names none and says which came closest.

Every variant is gated against the root (the model being compressed), also when it is built on another
variant (pruned, then quantized): non-inferiority must hold against what is in production, not drift
along a chain. Its lineage names the model it was built from as parent, and the root in its recipe.

Building and assessing are units of an executor (:mod:`assay.compress.units`, :mod:`assay.executor`):
here, one after another; on Ray, every candidate whose base is done at once, each in a task. This
process alone registers, gates and writes, and the document lists the trials in the plan's order.
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from assay.compress import units
from assay.compress.base import Built, Context, Skipped
from assay.compress.hardware import flops, speedup_bound
from assay.compress.quantize import layer_sensitivity
from assay.compress.text import (
    TextContext,
    TextSource,
    is_text_model,
    text_flops,
)
from assay.compress.text import layer_sensitivity as text_layer_sensitivity
from assay.cost import Catalogue, Machine, cost_table, load_catalogue
from assay.env import environment
from assay.errors import AssayError, NotFoundError, UsageError
from assay.evaluate import Assessment
from assay.executor import Executor, LocalExecutor, PackedFolder, Task
from assay.format import format_delta, format_interval
from assay.gate import Policy
from assay.measurement import Comparison
from assay.metrics.efficiency import TEXT_TOKENS, moves_the_statistic
from assay.models import ZooModel
from assay.models.loaded import LoadedModel
from assay.release import (
    Workspace,
    _hash,
    data_for,
    dataset_info,
    model_of,
    record_comparison,
)
from assay.report.compression import ratio_words, write_compression_report
from assay.store.records import VersionInfo

log = logging.getLogger(__name__)

SCHEMA = "assay.compression/1"
# objective -> (measurement, higher is better)
OBJECTIVES: dict[str, tuple[str, bool]] = {
    "latency_b1": ("latency_p50_b1", False),
    "throughput": ("throughput", True),
    "size": ("size_on_disk", False),
}
COST_AXES = ("latency_p50_b1", "latency_p50_batch", "size_on_disk", "peak_memory")
POINT_METRICS = ("accuracy", *COST_AXES, "throughput", "parameters")
FALLBACK_LAYERS = 2  # a failed static-int8 candidate is retried with its 1, then 2 worst layers in fp32
Status = Literal["passed", "failed", "skipped", "error"]


@dataclass(frozen=True)
class Candidate:
    key: str  # unique within a search, e.g. "pruned50+ort_static_int8"
    method: str  # a COMPRESSORS name
    params: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # the candidate whose model this one compresses; None: the root


@dataclass
class Trial:
    key: str
    method: str
    params: dict[str, Any]
    base: str | None
    status: Status
    reason: str = ""
    version: str | None = None
    parent: str | None = None
    report: str | None = None  # the gate report (HTML)
    run_id: int | None = None
    backend: str | None = None
    precision: str | None = None
    spec: dict[str, Any] | None = None
    flops: int | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    accuracy_delta: dict[str, Any] | None = None
    versus_parent: dict[str, dict[str, Any]] = field(default_factory=dict)  # objective metric -> vs_parent()
    gate_summary: str = ""
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def evaluated(self) -> bool:
        return self.status in ("passed", "failed")


def _student(spec: dict[str, Any], width: float = 0.375) -> dict[str, Any]:
    """A zoo student with every layer at ``width`` of ``spec``'s: by default 3/8, between the 50% and 75%
    structured-pruning ratios of the plan, so the student explores a point of the trade-off they do not."""

    def scaled(n: int) -> int:
        return max(1, round(n * width))

    if spec["arch"] == "cnn":
        return {"channels": [scaled(c) for c in spec["channels"]], "hidden": scaled(spec["hidden"])}
    return {"hidden": [scaled(h) for h in spec["hidden"]]}


def text_plan() -> list[Candidate]:
    """A text classifier's candidates (:mod:`assay.compress.text`), the "ORT defaults" anchor among them:
    conversions of the parent first, then the bottom half of its encoder layers fine-tuned on the labels,
    and distilled from it, each quantized with both dynamic int8 forms."""
    plan = [
        Candidate("onnx_fp32", "onnx_fp32"),
        Candidate("ort_defaults", "ort_dynamic_int8", {"defaults": True}),
        Candidate("ort_dynamic_int8", "ort_dynamic_int8"),
        Candidate("ort_static_int8", "ort_static_int8"),
        Candidate("bf16", "bf16"),
        Candidate("torchao_int8_weight_only", "torchao", {"config": "int8_weight_only"}),
        Candidate("torchao_int8_dynamic", "torchao", {"config": "int8_dynamic"}),
    ]
    # A shallower student starts far from its optimum: 3 epochs at the parent's 5e-5 left MiniLM's 3-layer
    # student 2.8 points short on fortunes; 8 epochs at 1e-4 with alpha 0.9 (mostly the teacher's signal)
    # took it past its parent (docs/compression.md). The best epoch by validation loss is kept.
    student = {"epochs": 8, "lr": 1e-4, "patience": 8}
    for key, extra in (("half_layers", {}), ("half_layers_distilled", {"distill": True, "alpha": 0.9})):
        plan += [
            Candidate(key, "drop_layers", {**student, **extra}),
            Candidate(f"{key}+ort_defaults", "ort_dynamic_int8", {"defaults": True}, base=key),
            Candidate(f"{key}+ort_dynamic_int8", "ort_dynamic_int8", base=key),
        ]
    return plan


def is_text_spec(spec: dict[str, Any]) -> bool:
    """The spec of an imported hf text classifier, whose plan is :func:`text_plan`."""
    return spec.get("arch") == "hf" and spec.get("input_kind") == "text"


def default_plan(spec: dict[str, Any], ratios: Iterable[float] = (0.25, 0.5, 0.75)) -> list[Candidate]:
    """Cheap conversions first, then the ones that train (pruning, distillation) with their exports; for a
    Hugging Face text classifier, :func:`text_plan`."""
    if spec.get("task") == "causal-lm":
        raise UsageError(
            "A language model's variants are made with `assay llm quantize REF --precision P` and gated with "
            "`assay llm gate REF VARIANT` (docs/llm.md)."
        )
    if is_text_spec(spec):
        return text_plan()
    plan = [
        Candidate("torch_bf16", "torch_bf16"),
        Candidate("onnx_fp32", "onnx_fp32"),
        Candidate("ort_dynamic_int8", "ort_dynamic_int8"),
        Candidate("ort_static_int8", "ort_static_int8"),
        Candidate("ort_static_defaults", "ort_static_int8", {"defaults": True}),
        Candidate("torchao_int8_dynamic", "torchao", {"config": "int8_dynamic"}),
        Candidate("torchao_int8_weight_only", "torchao", {"config": "int8_weight_only"}),
    ]
    for ratio in ratios:
        key = f"pruned{round(ratio * 100)}"
        plan += [
            Candidate(key, "prune_structured", {"ratio": ratio}),
            Candidate(f"{key}+onnx_fp32", "onnx_fp32", base=key),
            Candidate(f"{key}+ort_static_int8", "ort_static_int8", base=key),
        ]
    plan += [
        Candidate("distilled", "distill", {"spec": _student(spec)}),
        Candidate("distilled+onnx_fp32", "onnx_fp32", base="distilled"),
        Candidate("distilled+ort_static_int8", "ort_static_int8", base="distilled"),
        Candidate("magnitude50", "prune_magnitude", {"ratio": 0.5}),
    ]
    return plan


@dataclass
class Budget:
    max_trials: int | None = None
    max_seconds: float | None = None

    def exhausted(self, trials: int, started: float) -> str | None:
        if self.max_trials is not None and trials >= self.max_trials:
            return f"trial budget of {self.max_trials} reached"
        if self.max_seconds is not None and time.monotonic() - started >= self.max_seconds:
            return f"time budget of {self.max_seconds:g} s reached"
        return None


@dataclass
class SearchResult:
    document: dict[str, Any]
    html: Path
    json: Path

    @property
    def best(self) -> dict[str, Any] | None:
        key = self.document["best"]
        return next((t for t in self.document["trials"] if t["key"] == key), None)

    @property
    def message(self) -> str:
        """The outcome in one line: the best variant against the parent, or why there is none."""
        return str(self.document["outcome"]["message"])

    @property
    def exit_code(self) -> int:
        """0 when a variant improves on the parent (``assay compress`` exits with it), 1 otherwise."""
        return 0 if self.best is not None else 1


def _point(assessment: Assessment) -> dict[str, dict[str, Any]]:
    out = {}
    for m in assessment.measurements:
        if m.name in POINT_METRICS and m.status == "ok" and m.value is not None:
            out[m.name] = {"value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "unit": m.unit}
            if "batch_size" in m.details:  # a timing: the batch it was taken at (the cost table's)
                out[m.name]["batch_size"] = m.details["batch_size"]
    return out


def vs_parent(comparison: Comparison) -> dict[str, Any]:
    """A variant's measurement against the parent's, from the gate's comparison of the two, with its
    ratio in words and whether it ``improves``: the whole 95% interval of the difference on the better
    side (for an exact quantity such as the size on disk, whose interval is the point: strictly better).
    A better point estimate alone is not enough: two timings of the same model differ by their noise."""
    higher = bool(comparison.higher_is_better)
    bound = comparison.delta_ci_low if higher else comparison.delta_ci_high
    return {
        "parent": comparison.baseline,
        "variant": comparison.candidate,
        "delta": comparison.delta,
        "ci_low": comparison.delta_ci_low,
        "ci_high": comparison.delta_ci_high,
        "unit": comparison.unit,
        "higher_is_better": higher,
        "test": comparison.test,
        "ratio": ratio_words(comparison.name, comparison.baseline, comparison.candidate),
        "improves": bound is not None and (bound > 0 if higher else bound < 0),
        "flags": comparison.details.get("flags") or {},  # either side's timings flagged, by side
    }


Verdict = Literal["improves", "no_improvement", "none_plausible", "none_passed"]


@dataclass(frozen=True)
class Outcome:
    """What a search concludes: the best variant's key, or none and the passing one that came closest."""

    verdict: Verdict
    best: str | None
    closest: str | None
    message: str


def _timing_doubts(trial: dict[str, Any], metric: str) -> str:
    """Why ``trial``'s comparison on ``metric`` cannot be trusted, or "": an implausible speedup, or the
    variant's or the parent's figure moved by its own timings (outliers, blocks that disagree). A busy
    machine alone is shown, not held against a variant: both were timed in it, and a parent slowed far
    more than its variants makes their speedups implausible. Size is measured exactly: no timing doubt
    applies to it."""
    if metric == "size_on_disk":
        return ""
    by_side = trial["versus_parent"][metric].get("flags") or {}
    sides = [
        f"the {'parent' if side == 'baseline' else 'variant'}'s timings: {'; '.join(moved)}"
        for side, flags in by_side.items()
        if (moved := [f for f in flags if moves_the_statistic(f)])
    ]
    return ", ".join([*trial["flags"], *sides])


def _against_parent(trial: dict[str, Any], root: dict[str, Any] | None, metric: str) -> str:
    """``"0.020 ms [0.019, 0.021] against the parent's 0.041 ms [0.040, 0.042] (2.05x faster)"``."""
    parent = (root or {}).get("metrics", {}).get(metric, {})
    mine = trial["metrics"].get(metric, {})
    ratio = trial["versus_parent"][metric]["ratio"]
    return (
        f"{format_interval({'name': metric, **mine})} against the parent's "
        f"{format_interval({'name': metric, **parent})} ({ratio})"
    )


def choose_best(evaluated: list[dict[str, Any]], root: dict[str, Any] | None, objective: str) -> Outcome:
    """The best variant of a search for ``objective``, or none and why.

    ``evaluated``: the trials that were gated, their plausibility ``flags`` set. The best passes the
    gate, is not flagged implausible where the objective is a timing (size is measured exactly, so a
    suspect timing says nothing about it), and improves on the parent (:func:`vs_parent`); among several,
    the one with the best point estimate. With none, the message names the passing variant closest to the
    parent's figure and says how it compares, so a slower or larger variant is never called best.
    """
    metric, higher = OBJECTIVES[objective]
    passing = [t for t in evaluated if t["status"] == "passed"]
    if not passing:
        return Outcome("none_passed", None, None, "no variant passed the gate")
    compared = [t for t in passing if metric in t.get("versus_parent", {})]
    if not compared:
        message = f"no passing variant has a {metric} measurement to compare with the parent's"
        return Outcome("none_passed", None, None, message)
    doubts = {t["key"]: _timing_doubts(t, metric) for t in compared}
    plausible = [t for t in compared if not doubts[t["key"]]]
    if not plausible:
        flagged = "; ".join(f"{key}: {why}" for key, why in doubts.items())
        message = f"no variant passed the gate with timings to trust ({flagged})"
        return Outcome("none_plausible", None, None, message)

    def value(t: dict[str, Any]) -> float:
        return float(t["versus_parent"][metric]["variant"])

    pick = max if higher else min
    improving = [t for t in plausible if t["versus_parent"][metric]["improves"]]
    if improving:
        best = pick(improving, key=value)
        return Outcome(
            "improves",
            best["key"],
            None,
            f"best passing variant for {objective}: {best['key']} ({best['version']}) at "
            f"{_against_parent(best, root, metric)}",
        )
    closest = pick(plausible, key=value)
    vs = closest["versus_parent"][metric]
    noise = ""
    if (vs["delta"] > 0) == higher and vs["delta"] != 0:  # better by the point estimate, not beyond noise
        interval = format_delta(vs["delta"], vs["ci_low"], vs["ci_high"], metric, vs["unit"])
        noise = f"; within the noise: the 95% interval of the difference is {interval}"
    return Outcome(
        "no_improvement",
        None,
        closest["key"],
        f"no variant improves on the parent for {objective}: best passing was {closest['key']} "
        f"({closest['version']}) at {_against_parent(closest, root, metric)}{noise}",
    )


def pareto_front(points: list[dict[str, Any]], cost: str) -> list[str]:
    """Keys of the points no other point beats: at least as accurate and at most as costly, one strictly."""
    usable = [p for p in points if cost in p["metrics"] and "accuracy" in p["metrics"]]

    def dominated(p: dict[str, Any]) -> bool:
        acc, c = p["metrics"]["accuracy"]["value"], p["metrics"][cost]["value"]
        return any(
            q["metrics"]["accuracy"]["value"] >= acc
            and q["metrics"][cost]["value"] <= c
            and (q["metrics"]["accuracy"]["value"] > acc or q["metrics"][cost]["value"] < c)
            for q in usable
        )

    return [p["key"] for p in usable if not dominated(p)]


def _runtime(point: dict[str, Any]) -> str:
    return "onnxruntime" if point.get("backend") == "onnxruntime" else "torch"  # torchao runs in torch


def _reference(trial: dict[str, Any], points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fp32 point on the trial's runtime to bound its speedup against: of the same architecture if
    there is one (the same model before quantization), else the earliest (the root, or its ONNX export).
    One reference, not every fp32 point: each timing has its own noise, and the slowest of many
    references would flag honest variants."""
    candidates = [
        p for p in points
        if p is not trial and _runtime(p) == _runtime(trial) and p.get("precision") == "fp32"
        and p["metrics"].get("latency_p50_b1", {}).get("value")
    ]  # fmt: skip
    same = [p for p in candidates if p.get("spec") == trial.get("spec")]
    pool = same or candidates
    return pool[0] if pool else None


def plausibility_flags(
    trial: dict[str, Any], points: list[dict[str, Any]], cpu_flags: list[str]
) -> list[str]:
    """Flags a speedup over its fp32 reference on the same runtime that exceeds the hardware's bound."""
    latency = trial["metrics"].get("latency_p50_b1", {}).get("value")
    ref = _reference(trial, points)
    if not latency or ref is None:
        return []
    ref_latency = ref["metrics"]["latency_p50_b1"]["value"]
    bound = speedup_bound(
        precision=str(trial.get("precision") or "fp32"),
        flops_reference=int(ref["flops"]),
        flops_variant=int(trial["flops"]),
        cpu_flags=cpu_flags,
    )
    if ref_latency / latency <= bound:
        return []
    return [
        f"implausible: {ref_latency / latency:.1f}x faster than {ref['key']} at batch 1, above the "
        f"{bound:.1f}x this CPU allows for {trial.get('precision')} at this FLOP ratio"
    ]


@dataclass
class _Running:
    """A candidate out with the executor: being built, or (once registered as ``version``) assessed."""

    candidate: Candidate
    started: float
    version: VersionInfo | None = None
    loaded: LoadedModel | None = None
    notes: list[str] = field(default_factory=list)


class Search:
    """One search: its state, and the document written after every trial."""

    def __init__(
        self,
        ws: Workspace,
        ref: str,
        policy: Policy,
        *,
        objective: str = "latency_b1",
        plan: list[Candidate] | None = None,
        budget: Budget | None = None,
        finetune_epochs: int = 3,
        progress: bool = False,
        out_dir: Path | None = None,
        on_trial: Callable[[Trial], None] | None = None,
        targets: Catalogue | None = None,
        executor: Executor | None = None,
    ) -> None:
        if objective not in OBJECTIVES:
            raise UsageError(f"Unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}.")
        self.ws, self.ref, self.policy, self.objective = ws, ref, policy, objective
        self.plan, self.budget = plan, budget or Budget()
        self.finetune_epochs, self.progress = finetune_epochs, progress
        self.out_dir = out_dir or ws.reports_dir
        self.on_trial = on_trial
        self.catalogue = targets or load_catalogue()  # the cost table's targets, read before any work
        self.executor = executor or LocalExecutor()
        self.trials: list[Trial] = []  # in the order they finished
        self.tried = 0  # candidates started, the budget's count
        self.order: list[str] = []  # the plan's keys, each fallback after the candidate it retries
        self.root_point: dict[str, Any] | None = None  # set by run(), once the root is measured
        self._text_flops: dict[str, int] = {}  # TextSource.key() -> FLOPs
        self.dataset: dict[str, Any] | None = None
        self.status = "running"
        self.stop_reason = ""
        self.started_at = datetime.now(UTC).replace(microsecond=0).isoformat()
        # A random suffix, so two searches never share a file.
        self.stem = f"compress-{ref.replace('@', '-').replace('/', '_')}-{secrets.token_hex(4)}"

    # -- the loop ------------------------------------------------------------------------------------

    def run(self) -> SearchResult:
        self.root = self.ws.store.resolve(self.ref)
        loaded = model_of(self.ws, self.root)
        self.text = loaded.adapter == "hf" and loaded.manifest.get("task") == "text"
        if self.text and not is_text_model(loaded.manifest):
            raise UsageError(
                f"{self.root.ref} is a {loaded.predictor.name} variant; compress its fp32 transformers "
                f"parent ({self.root.parent or 'see assay models show'}) instead."
            )
        if loaded.adapter != "zoo" and not self.text:
            raise UsageError(
                f"{self.root.ref} was imported through the {loaded.adapter} adapter; assay compress builds "
                "on its own zoo models so far. Compress it with your own tools and gate the result against "
                f"it (`assay models import`, then `assay gate {self.root.ref} NAME@N`)."
            )
        if not self.text and (
            loaded.module is None
            or loaded.backend != "torch"
            or loaded.manifest.get("precision", "fp32") != "fp32"
        ):
            raise UsageError(
                f"{self.root.ref} is a {loaded.predictor.name} variant; compress its fp32 torch parent "
                f"({self.root.parent or 'see assay models show'}) instead."
            )
        self.root_module: ZooModel | TextSource = (
            TextSource(loaded.weights.parent, loaded.manifest) if self.text else cast(ZooModel, loaded.module)
        )
        queue = list(self.plan if self.plan is not None else default_plan(self.root.spec))
        keys = [c.key for c in queue]
        if len(set(keys)) != len(keys):
            raise UsageError(f"Candidate keys must be unique; got {keys}.")
        self.data, _ = data_for(self.root)
        self.dataset = dataset_info(self.data, "test")
        self.ctx: Context | TextContext = (
            TextContext(self.data, seed=self.policy.seed, progress=self.progress)
            if self.text
            else Context(
                self.data, seed=self.policy.seed, progress=self.progress, finetune_epochs=self.finetune_epochs
            )
        )
        # What the units read, sent to a cluster once; a worker's own bars would not reach this terminal.
        local = isinstance(self.executor, LocalExecutor)
        self.work_ctx = self.executor.share(self.ctx if local else replace(self.ctx, progress=False))
        self.cache_dir = self.ws.cache_dir if self.executor.shares_disk else None
        self.order = [c.key for c in queue]
        # The root is timed where the variants are, so the gate compares timings from like machines; the
        # cost table projects them with that machine's rates.
        assessed, self.machine = self._measure_root(loaded)
        self.root_notes = [n for n in [assessed.busy] if n]
        self.baseline = assessed.assessment
        self.root_point = {
            "key": "root",
            "version": self.root.ref,
            "backend": loaded.backend,
            "precision": "fp32",
            "spec": self.root.spec,
            "flops": self._flops(self.root.spec),
            "metrics": _point(self.baseline),
            "report": None,
            "notes": self.root_notes,
        }
        self.sources: dict[str, ZooModel | TextSource] = {}  # fp32 models later candidates build on
        self.versions: dict[str, VersionInfo] = {}
        clock = time.monotonic()
        running: dict[Task[Any], _Running] = {}
        try:
            self._save()
            while queue or running:
                exhausted = self._start(queue, running, clock)
                if not running:
                    if exhausted and queue:
                        self.stop_reason = f"{exhausted}; not tried: {', '.join(c.key for c in queue)}"
                    break
                self._finish(self.executor.wait(list(running)), running, queue)
        except KeyboardInterrupt:
            self.executor.cancel(list(running))
            self.status, self.stop_reason = "interrupted", "interrupted by the user"
            self._save()
            raise
        self.status = "complete"
        return self._save()

    def _measure_root(self, loaded: LoadedModel) -> tuple[units.Assessed, Machine]:
        tasks: list[Task[Any]] = [
            self.executor.submit(
                units.assess, loaded, self.root, self.work_ctx, self.policy.n_bootstrap, self.policy.seed,
                self.cache_dir, label="root",
            ),
            self.executor.submit(units.machine, label="machine"),
        ]  # fmt: skip
        try:
            return cast(units.Assessed, tasks[0].result()), cast(Machine, tasks[1].result())
        except BaseException:
            self.executor.cancel(tasks)
            raise

    def _start(self, queue: list[Candidate], running: dict[Task[Any], _Running], clock: float) -> str | None:
        """Start the queued candidates whose base is done, in plan order, while the executor has room and
        the budget allows; a candidate whose base was not evaluated is recorded skipped. Returns why the
        budget stopped it, if it did."""
        waiting = {c.key for c in queue} | {r.candidate.key for r in running.values()}
        for c in list(queue):
            if len(running) >= self.executor.slots:
                return None
            reason = self.budget.exhausted(self.tried, clock)
            if reason:
                return reason
            if c.base is not None and c.base in waiting:
                continue  # its base is still to be built and gated
            queue.remove(c)
            waiting.discard(c.key)
            self.tried += 1
            started = time.monotonic()
            try:
                source = self._source(c)
            except Skipped as e:
                self._record(c, Trial(c.key, c.method, c.params, c.base, "skipped", str(e)), started, queue)
                continue
            task = self.executor.submit(units.build, c.method, c.params, source, self.work_ctx, label=c.key)
            running[task] = _Running(c, started)
        return None

    def _finish(self, task: Task[Any], running: dict[Task[Any], _Running], queue: list[Candidate]) -> None:
        """What the finished unit returned: a built candidate is registered and sent to be assessed; an
        assessed one is gated and recorded, with its fallbacks queued next."""
        job = running.pop(task)
        c = job.candidate
        trial = Trial(key=c.key, method=c.method, params=c.params, base=c.base, status="skipped")
        try:
            if job.version is None:
                built, files = cast(tuple[Built, PackedFolder], task.result())
                with tempfile.TemporaryDirectory() as tmp:
                    out = files.write_to(Path(tmp) / "model")
                    version = self._register(c, out, built.spec, built.training, built.notes)
                loaded = model_of(self.ws, version)
                again = self.executor.submit(
                    units.assess, loaded, version, self.work_ctx, self.policy.n_bootstrap, self.policy.seed,
                    self.cache_dir, label=c.key,
                )  # fmt: skip
                running[again] = replace(job, version=version, loaded=loaded, notes=built.notes)
                return
            assert job.loaded is not None
            trial.notes = job.notes
            self._evaluate(trial, job.version, job.loaded, cast(units.Assessed, task.result()))
        except Skipped as e:
            trial.status, trial.reason = "skipped", str(e)
        except AssayError as e:
            trial.status, trial.reason = "error", str(e)
        except Exception as e:  # a plugin's own failure must not lose the search (Ctrl-C is no Exception)
            log.debug("candidate %s failed", c.key, exc_info=True)
            trial.status, trial.reason = "error", f"{type(e).__name__}: {e}"
        self._record(c, trial, job.started, queue)

    def _record(self, c: Candidate, trial: Trial, started: float, queue: list[Candidate]) -> None:
        trial.seconds = round(time.monotonic() - started, 2)
        self.trials.append(trial)
        if self.on_trial:
            self.on_trial(trial)
        fallbacks = self._fallbacks(c, trial, {k for k in self.order})
        queue[0:0] = fallbacks
        at = self.order.index(c.key) + 1
        self.order[at:at] = [f.key for f in fallbacks]
        self._save()

    def _flops(self, spec: dict[str, Any], source: TextSource | None = None) -> int:
        """FLOPs of one example. For a text model: of one text of ``TEXT_TOKENS`` tokens (the timed
        length) through ``source``, the transformers fp32 model a variant runs (default: the root)."""
        if isinstance(self.root_module, TextSource):
            source = source or self.root_module
            key = source.key()
            if key not in self._text_flops:
                self._text_flops[key] = text_flops(source, TEXT_TOKENS)
            return self._text_flops[key]
        return flops(spec, self.data.input_shape)

    def _source(self, c: Candidate) -> ZooModel | TextSource:
        if c.base is None:
            return self.root_module
        base = next((t for t in self.trials if t.key == c.base), None)
        if base is None:
            raise Skipped(f"its base candidate '{c.base}' was not tried")
        if not base.evaluated:
            raise Skipped(f"its base candidate '{c.base}' was not evaluated ({base.status})")
        if c.base not in self.sources:
            raise Skipped(f"its base candidate '{c.base}' has no torch fp32 model to build on")
        return self.sources[c.base]

    def _register(
        self, c: Candidate, out: Path, spec: dict[str, Any], training: dict[str, Any] | None, notes: list[str]
    ) -> VersionInfo:
        parent = self.versions[c.base] if c.base else self.root
        recipe = {
            "kind": "compress",
            "label": c.key,
            "method": c.method,
            "params": c.params,
            "root": self.root.ref,
            "parent": parent.ref,
            "data": self.root.lineage["recipe"]["data"],
        }
        config_hash = _hash({"recipe": recipe, "root_config": self.root.config_hash})
        # A rerun that builds the very same files from the same recipe re-gates that version rather than
        # registering a copy (exports and calibration are deterministic, so reruns usually do).
        digest = self.ws.store.artifacts.put_dir(out)
        for known in self.ws.store.list_versions(self.root.model):
            if known.artifact_digest == digest and known.config_hash == config_hash:
                notes.append(f"the same model as {known.ref}: gated again, not registered again")
                self.versions[c.key] = known
                return known
        version = self.ws.store.register_version(
            self.root.model,
            artifact_dir=out,
            spec=spec,
            config_hash=config_hash,
            parent=parent.ref,
            lineage={
                "datasets": self.root.lineage.get("datasets", {}),
                "dataset": self.root.lineage.get("dataset"),
                "recipe": recipe,
                # A variant takes its root's inputs; versions from before contracts derive it on use.
                **({"contract": self.root.lineage["contract"]} if "contract" in self.root.lineage else {}),
                "training": training or {},
                "description": f"{c.key} of {self.root.ref}",
                "licence": self.root.lineage.get("licence"),
                "notes": notes,
            },
            environment=environment({"compress": self.policy.seed}),
        )
        self.versions[c.key] = version
        return version

    def _evaluate(
        self, trial: Trial, version: VersionInfo, loaded: LoadedModel, assessed: units.Assessed
    ) -> None:
        if assessed.busy:
            trial.notes.append(assessed.busy)
        assessment = assessed.assessment
        assert self.dataset is not None  # run() measured the root first
        gated = record_comparison(
            self.ws,
            self.baseline,
            assessment,
            self.policy,
            self.dataset,
            baseline_version=self.root,
            candidate_version=version,
            out_dir=self.out_dir,
            inputs=self.data.test.x,
        )
        assert gated.verdict is not None
        accuracy = next((c for c in gated.verdict.comparisons if c.name == "accuracy"), None)
        trial.status = "passed" if gated.verdict.passed else "failed"
        trial.reason = gated.verdict.summary()
        trial.gate_summary = gated.verdict.summary()
        trial.version, trial.parent, trial.run_id = version.ref, version.parent, gated.run_id
        trial.report = str(gated.html)
        trial.backend, trial.precision = loaded.backend, str(loaded.manifest.get("precision", "fp32"))
        runs = self._text_model(trial, loaded) if self.text else None
        trial.spec, trial.flops = version.spec, self._flops(version.spec, runs)
        trial.metrics = _point(assessment)
        objectives = {metric for metric, _ in OBJECTIVES.values()}
        trial.versus_parent = {
            c.name: vs_parent(c)
            for c in gated.verdict.comparisons
            if c.name in objectives and c.status == "ok"
        }
        if accuracy is not None:
            trial.accuracy_delta = {
                "delta": accuracy.delta,
                "ci_low": accuracy.delta_ci_low,
                "ci_high": accuracy.delta_ci_high,
                "p_value": accuracy.p_value,
            }
        if loaded.backend == "torch" and trial.precision == "fp32" and loaded.module is not None:
            self.sources[trial.key] = loaded.module  # later candidates may build on it
        elif self.text and is_text_model(loaded.manifest):
            assert runs is not None
            self.sources[trial.key] = runs  # a dropped-layer model: exported and quantized next

    def _text_model(self, trial: Trial, loaded: LoadedModel) -> TextSource:
        """The transformers fp32 model whose architecture a text variant runs: its own (a dropped-layer
        model), its base's (that model exported or quantized), or the root's."""
        if is_text_model(loaded.manifest):
            return TextSource(loaded.weights.parent, loaded.manifest)
        base = self.sources.get(trial.base) if trial.base else None
        return base if isinstance(base, TextSource) else cast(TextSource, self.root_module)

    def _fallbacks(self, c: Candidate, trial: Trial, taken: set[str]) -> list[Candidate]:
        """A static-int8 candidate that failed the gate is retried with its most damaging layers in fp32."""
        if c.method != "ort_static_int8" or trial.status != "failed" or c.params.get("defaults"):
            return []
        if c.params.get("exclude"):
            return []  # a fallback itself: its successors are already queued
        base = next((t for t in self.trials if t.key == c.base), None)
        if base is not None and base.status != "passed":
            return []  # gated against the root like its base, which already failed: no fallback can pass
        try:
            source = self._source(c)
            if isinstance(source, TextSource):
                assert isinstance(self.ctx, TextContext)
                ranked = text_layer_sensitivity(source, self.ctx)
            else:
                assert isinstance(self.ctx, Context)
                ranked = layer_sensitivity(source, self.ctx)
        except Skipped:
            return []
        out = []
        for k in range(1, min(FALLBACK_LAYERS, len(ranked) - 1) + 1):
            layers = [name for name, _ in ranked[:k]]
            key = f"{c.key}-fp32[{','.join(layers)}]"
            if key not in taken:
                out.append(Candidate(key, c.method, {**c.params, "exclude": layers}, c.base))
        return out

    # -- the document ---------------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        # In plan order, whichever finished first: a cluster's documents read as the local run's.
        trials = [asdict(t) for t in sorted(self.trials, key=lambda t: self.order.index(t.key))]
        root = self.root_point
        evaluated = [t for t in trials if t["status"] in ("passed", "failed")]
        points = ([root] if root else []) + evaluated
        cpu_flags = environment()["cpu"]["flags"]
        for t in evaluated:
            t["flags"] = plausibility_flags(t, points, cpu_flags)
        metric, higher = OBJECTIVES[self.objective]
        outcome = choose_best(evaluated, root, self.objective)
        return {
            "schema": SCHEMA,
            "kind": "compression",
            "status": self.status,
            "stop_reason": self.stop_reason,
            "model": self.ref,
            "root": root,
            "objective": {"name": self.objective, "metric": metric, "higher_is_better": higher},
            "policy": self.policy.to_dict(),
            "budget": asdict(self.budget),
            "dataset": self.dataset,
            "trials": trials,
            "best": outcome.best,
            "outcome": asdict(outcome),
            "frontier": {axis: pareto_front(points, axis) for axis in COST_AXES},
            "machine": self.machine.to_dict(),
            "executor": self.executor.describe(),
            "cost": cost_table(points, self.catalogue, self.machine) if root else None,
            "started_at": self.started_at,
            "updated_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "environment": environment(),
        }

    def _save(self) -> SearchResult:
        document = self.document()
        paths = write_compression_report(document, self.out_dir, self.stem)
        return SearchResult(document, paths.html, paths.json)


def compress(ws: Workspace, ref: str, policy: Policy, **options: Any) -> SearchResult:
    """``assay compress``: search variants of ``ref`` under ``policy``; see :class:`Search` for options."""
    return Search(ws, ref, policy, **options).run()


def latest_search(ws: Workspace, model: str, folder: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The newest compression search document of ``model`` (a name: any of its versions; a ref: that
    version) in ``folder`` (default: the workspace's reports), and its path."""
    versions = [ws.store.resolve(model)] if "@" in model else ws.store.list_versions(model)
    wanted = {v.ref for v in versions}
    found = []
    for path in Path(folder or ws.reports_dir).glob("compress-*.json"):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not a search document (or being replaced): the others still count
        if doc.get("kind") == "compression" and (doc.get("root") or {}).get("version") in wanted:
            found.append((str(doc.get("updated_at", "")), path, doc))
    if not found:
        raise NotFoundError(
            f"No compression search of {model} in {folder or ws.reports_dir}; run `assay compress {model}` "
            "first (or pass --search FILE for a search document written elsewhere)."
        )
    _, path, doc = max(found, key=lambda f: (f[0], str(f[1])))
    return path, doc


def search_cost(document: dict[str, Any], catalogue: Catalogue | None = None) -> dict[str, Any]:
    """The cost table of a search document on ``catalogue``'s targets (default: assay's), projected from
    the rates of the machine that timed the search (recorded in the document)."""
    if not document.get("machine") or not document.get("root"):
        raise UsageError(
            "This search document records no machine rates (written by an older assay, or before the "
            "parent was measured); run `assay compress` again to cost its variants."
        )
    evaluated = [t for t in document["trials"] if t["status"] in ("passed", "failed")]
    return cost_table([document["root"], *evaluated], catalogue or load_catalogue(),
                      Machine.from_dict(document["machine"]))  # fmt: skip


def list_variants(ws: Workspace, name: str) -> list[dict[str, Any]]:
    """Every registered compressed variant of model ``name``, with its recipe and gate outcome."""
    rows = []
    for v in ws.store.list_versions(name):
        recipe = v.lineage.get("recipe", {})
        if recipe.get("kind") != "compress":
            continue
        metrics: dict[str, Any] = {}
        if v.gate_run_id is not None:
            run = ws.store.get_run(v.gate_run_id)
            metrics = {m.name: m.value for m in run.measurements if m.name in POINT_METRICS}
        rows.append(
            {
                "version": v.ref,
                "recipe": recipe.get("label"),
                "method": recipe.get("method"),
                "parent": v.parent,
                "root": recipe.get("root"),
                "gate": v.gate_status,
                "gate_run_id": v.gate_run_id,
                "metrics": metrics,
            }
        )
    return rows

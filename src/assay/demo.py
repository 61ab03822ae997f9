"""``assay demo``: the whole release loop on Fashion-MNIST in a few minutes on two cores.

1. train a baseline CNN, register it, and promote it to ``production`` (or gate it first, when a
   production version already exists from an earlier demo);
2. train a cheaper candidate (half the channels of each layer) as a child of production;
3. gate the candidate against production under the default policy and register it with its verdict;
   promote it only if it passes.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from assay.format import format_interval, headline_calibration
from assay.pipeline import PipelineResult, pipeline_from_dict, run_pipeline
from assay.workspace import Workspace

MODEL = "fmnist-cnn"
BASELINE = {
    "model": {
        "name": MODEL,
        "arch": "cnn",
        "description": "Fashion-MNIST clothing classifier (demo baseline)",
        "licence": "Apache-2.0",
    },
    "train": {"epochs": 3},
}
CANDIDATE = {
    "model": {
        "name": MODEL,
        "arch": "cnn",
        "spec": {"channels": [16, 32], "hidden": 64},
        "description": "Fashion-MNIST clothing classifier, half the channels (demo candidate)",
        "licence": "Apache-2.0",
    },
    "train": {"epochs": 3},
}


def _row(step: str, result: PipelineResult) -> dict[str, Any]:
    measurements = result.evaluation.document["measurements"]
    by_name = {m["name"]: m for m in measurements}
    calibration = headline_calibration(measurements)  # the debiased ECE, whose interval covers 0
    verdict = result.evaluation.verdict
    return {
        "step": step,
        "version": result.version.ref,
        **{key: format_interval(by_name[name]) if name in by_name else "n/a"
           for key, name in (("accuracy", "accuracy"), ("latency", "latency_p50_b1"))},
        "calibration": format_interval(calibration) if calibration else "n/a",
        "calibration_metric": calibration["name"] if calibration else None,
        "verdict": "first release" if verdict is None else ("passed" if verdict.passed else "failed"),
        "alias": "production" if result.promotion else "",
    }  # fmt: skip


def run_demo(
    ws: Workspace, *, limit: int | None = None, progress: bool = True, console: Console | None = None
) -> dict[str, Any]:
    console = console or Console(stderr=True)
    data = {"source": "fashion-mnist", **({"limit": limit} if limit else {})}
    steps = []
    for step, config in (("baseline", BASELINE), ("candidate", CANDIDATE)):
        console.rule(f"[bold]{step}")
        pipeline = pipeline_from_dict({**config, "data": data}, source=f"demo {step}")
        result = run_pipeline(ws, pipeline, progress=progress)
        console.print(result.evaluation.document["summary"]["headline"], highlight=False)
        steps.append((step, result))
    last = steps[-1][1]
    return {
        "steps": [_row(step, result) for step, result in steps],
        "gate": last.evaluation.document["summary"],
        "report": str(last.evaluation.html),
        "reports": {step: str(result.evaluation.html) for step, result in steps},
        "production": ws.store.current_alias(MODEL, "production").ref,  # type: ignore[union-attr]
    }

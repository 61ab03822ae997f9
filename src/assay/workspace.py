"""The workspace (the store plus its report and outputs folders) and how a run is recorded there.

A number reaches the store only through :func:`record_evaluation` or :func:`record_comparison`, which
write the report files first (atomically) and the database rows in one transaction after, so an
interruption leaves no run without its report. Nothing here runs a model: evaluating and gating
predictions files (:func:`evaluate_predictions`, :func:`gate_predictions`) imports no PyTorch; the
model paths are in :mod:`assay.release`.
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.compare import align
from assay.data import Dataset
from assay.env import environment
from assay.errors import DataError
from assay.evaluate import Assessment, assess, compare, comparison_document, evaluation_document
from assay.gate import Policy, Verdict
from assay.llm import lmeval
from assay.llm.items import log_measurements
from assay.outputs import PREDICTION_SUFFIXES, Outputs, load_predictions
from assay.report import write_report
from assay.serve.reference import build_reference
from assay.store import Store
from assay.store.records import VersionInfo


@dataclass
class Workspace:
    """The store plus the folders beside it: reports and the per-example outputs cache."""

    store: Store

    @classmethod
    def open(cls, home: str | Path | None = None, url: str | None = None) -> Workspace:
        return cls(Store(url=url, home=home))

    @property
    def reports_dir(self) -> Path:
        return self.store.home / "reports"

    @property
    def cache_dir(self) -> Path:
        return self.store.home / "outputs"


@dataclass
class Evaluated:
    document: dict[str, Any]
    html: Path
    json: Path
    run_id: int
    verdict: Verdict | None = None


def dataset_info(data: Dataset, split: str) -> dict[str, Any]:
    return {
        "name": data.name,
        "split": split,
        "n": data.split(split).n,
        "fingerprint": data.split(split).fingerprint(),
        "class_names": data.class_names,
        "source": data.source,
        "licence": data.licence,
    }


def _file_info(path: Path, architecture: str) -> dict[str, Any]:
    return {"ref": path.name, "name": path.stem, "version": None, "card": {"architecture": architecture}}


def assess_predictions(path: Path, outputs: Outputs, *, n_boot: int = 1000, seed: int = 0) -> Assessment:
    return assess(outputs, info=_file_info(path, "external predictions"), n_boot=n_boot, seed=seed)


def assess_generation_log(
    path: Path, log: lmeval.GenerationLog, *, n_boot: int = 1000, seed: int = 0
) -> Assessment:
    """An lm-eval generation task's log: each per-document metric with its interval and evidence, and
    outputs that hold only each document's hit (:meth:`~assay.llm.lmeval.GenerationLog.outputs`), so no
    metric of the outputs is measured or compared (they have no probabilities)."""
    measurements, evidence = log_measurements(log, n_boot=n_boot, seed=seed)
    info = _file_info(path, "lm-evaluation-harness generation log")
    info["lm_eval"] = {
        "task": log.task, "filter": log.filter, "metrics": list(log.scores), "outcome": log.primary,
    }  # fmt: skip
    return Assessment(
        info=info, outputs=log.outputs(), measurements=measurements, plots={}, per_example=evidence,
        output_metrics=False,
    )  # fmt: skip


def read_file(path: Path) -> Outputs | lmeval.GenerationLog:
    """A predictions file as outputs; an lm-eval log as outputs or, of a generation task, its metrics."""
    return lmeval.read_log(path) if lmeval.names_samples(path) else load_predictions(path)


def predictions_dataset_info(path: Path, assessment: Assessment) -> dict[str, Any]:
    outputs = assessment.outputs
    return {
        "name": path.stem,
        "split": "predictions",
        "n": outputs.n,
        "fingerprint": outputs.fingerprint(),
        "class_names": [str(c) for c in range(outputs.n_classes)]
        if assessment.output_metrics
        else lmeval.HIT_CLASSES,
        "source": str(path),
        "licence": "not declared",
    }


def _stem(kind: str, *refs: str) -> str:
    safe = "_vs_".join(r.replace("@", "-").replace("/", "_") for r in refs)
    return f"{kind}-{safe}-{secrets.token_hex(4)}"  # a suffix, so two runs never share a file


def monitoring_reference(ws: Workspace, outputs: Outputs, inputs: np.ndarray) -> dict[str, Any] | None:
    """Store the reference statistics of the evaluated split, what ``assay serve`` monitors against; the
    run document keeps its digest. The thresholds are calibrated from it when a server loads the version
    (deterministic given the reference, window, budget and seed; about 2 s), not here, so that gating
    does not pay for a window size nobody may serve with."""
    if outputs.logits is None:
        return None  # external predictions without logits: there is nothing to monitor a model with
    reference = build_reference(inputs, outputs.logits, outputs.features, outputs.labels)
    with tempfile.TemporaryDirectory() as tmp:
        digest = ws.store.artifacts.put_file(reference.save(Path(tmp) / "reference.npz"))
    return {"reference": digest, "n": reference.n}


def record_evaluation(
    ws: Workspace,
    candidate: Assessment,
    dataset: dict[str, Any],
    *,
    version: VersionInfo | None,
    out_dir: Path | None = None,
    inputs: np.ndarray | None = None,
    input_contract: dict[str, Any] | None = None,
) -> Evaluated:
    """``inputs``: the evaluated split's inputs; with a registered version, the run stores the monitoring
    reference built from them (see :func:`monitoring_reference`). ``input_contract``: what
    :func:`contract_record` says of the inputs, kept in the document."""
    document = evaluation_document(candidate, dataset=dataset, environment=environment())
    if input_contract is not None:
        document["input_contract"] = input_contract
    if version is not None and inputs is not None:
        document["monitoring"] = monitoring_reference(ws, candidate.outputs, inputs)
    paths = write_report(document, out_dir or ws.reports_dir, _stem("eval", candidate.info["ref"]))
    run_id = ws.store.record_run(
        kind="evaluation",
        document=document,
        measurements=candidate.measurements,
        version=version.ref if version else None,
        baseline=None,
        dataset_fingerprint=dataset["fingerprint"],
        split=dataset["split"],
        passed=None,
        report_path=str(paths.html),
    )
    return Evaluated(document, paths.html, paths.json, run_id)


def record_comparison(
    ws: Workspace,
    baseline: Assessment,
    candidate: Assessment,
    policy: Policy,
    dataset: dict[str, Any],
    *,
    baseline_version: VersionInfo | None,
    candidate_version: VersionInfo | None,
    out_dir: Path | None = None,
    inputs: np.ndarray | None = None,
    input_contract: dict[str, Any] | None = None,
) -> Evaluated:
    """``inputs`` and ``input_contract`` as for :func:`record_evaluation`: the gated version keeps its
    gating set's reference."""
    verdict = compare(baseline, candidate, policy)
    document = comparison_document(baseline, candidate, verdict, dataset=dataset, environment=environment())
    if input_contract is not None:
        document["input_contract"] = input_contract
    if candidate_version is not None and inputs is not None:
        document["monitoring"] = monitoring_reference(ws, candidate.outputs, inputs)
    paths = write_report(
        document, out_dir or ws.reports_dir, _stem("gate", baseline.info["ref"], candidate.info["ref"])
    )
    run_id = ws.store.record_run(
        kind="comparison",
        document=document,
        measurements=candidate.measurements,
        baseline_measurements=baseline.measurements,
        comparisons=verdict.comparisons,
        version=candidate_version.ref if candidate_version else None,
        baseline=baseline_version.ref if baseline_version else None,
        dataset_fingerprint=dataset["fingerprint"],
        split=dataset["split"],
        passed=verdict.passed,
        report_path=str(paths.html),
        # Only a gate against a registered baseline decides promotion: a predictions file has no lineage.
        gate=candidate_version is not None and baseline_version is not None,
    )
    return Evaluated(document, paths.html, paths.json, run_id, verdict)


def is_predictions(target: str) -> bool:
    """A target naming a .npz/.parquet file or an lm-eval log (.jsonl, perhaps with ``#FILTER``) is a
    predictions file; anything else is a model ref."""
    return Path(target).suffix.lower() in PREDICTION_SUFFIXES or lmeval.names_samples(target)


def evaluate_predictions(
    ws: Workspace, path: Path, *, n_boot: int = 1000, seed: int = 0, out_dir: Path | None = None
) -> Evaluated:
    """``assay eval FILE``: a predictions file, or an lm-eval log, evaluated and recorded (no model runs)."""
    read = read_file(path)
    if isinstance(read, lmeval.GenerationLog):
        assessment = assess_generation_log(path, read, n_boot=n_boot, seed=seed)
    else:
        assessment = assess_predictions(path, read, n_boot=n_boot, seed=seed)
    return record_evaluation(
        ws, assessment, predictions_dataset_info(path, assessment), version=None, out_dir=out_dir
    )


def gate_predictions(
    ws: Workspace,
    baseline: Path,
    candidate: Path,
    policy: Policy | str | Path | None,
    *,
    out_dir: Path | None = None,
) -> Evaluated:
    """``assay gate A.npz B.npz``: two predictions files paired by example id and gated under ``policy``
    (a policy or its TOML file; ``None``: the default policy for the files). Two lm-eval generation logs
    are gated on their per-document metrics, by default under :data:`GENERATION_LOG_POLICY_TOML`, and a
    policy file's rules may name any metric the logs hold (``f1``, ``pass@1``)."""
    b_read, c_read = read_file(baseline), read_file(candidate)
    if isinstance(b_read, lmeval.GenerationLog) and isinstance(c_read, lmeval.GenerationLog):
        logged = {*b_read.scores, *c_read.scores}
        policy = Policy.load(policy, default=generation_log_policy, extra_metrics=logged)
        stats = {"n_boot": policy.n_bootstrap, "seed": policy.seed}
        b = assess_generation_log(baseline, b_read, **stats)
        c = assess_generation_log(candidate, c_read, **stats)
        align(b.outputs, c.outputs)  # fail fast if unpaired
    elif isinstance(b_read, lmeval.GenerationLog) or isinstance(c_read, lmeval.GenerationLog):
        raise DataError(
            f"{baseline if isinstance(b_read, lmeval.GenerationLog) else candidate} is an lm-eval generation "
            "log and the other file is not; gate a generation log against a log of the same task."
        )
    else:
        policy = Policy.load(policy)
        stats = {"n_boot": policy.n_bootstrap, "seed": policy.seed}
        b_out, c_out = align(b_read, c_read)  # fail fast if unpaired
        b, c = assess_predictions(baseline, b_out, **stats), assess_predictions(candidate, c_out, **stats)
    return record_comparison(
        ws, b, c, policy, predictions_dataset_info(candidate, c),
        baseline_version=None, candidate_version=None, out_dir=out_dir,
    )  # fmt: skip


GENERATION_LOG_POLICY_TOML = """\
# assay's default policy for two lm-evaluation-harness generation logs of the same task: on the same
# documents, exact match (as the task scored it) may not drop by 1 point or more.
[policy]
name = "generation-log"
alpha = 0.05
n_bootstrap = 1000
seed = 0

[[rules]]
metric = "exact_match"
kind = "non_inferiority"
margin = 0.01
"""


def generation_log_policy() -> Policy:
    """:data:`GENERATION_LOG_POLICY_TOML`."""
    return Policy.from_toml_text(GENERATION_LOG_POLICY_TOML, source="default generation-log policy")

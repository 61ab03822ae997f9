"""``assay trust`` on a registered version: the trust suite (:mod:`assay.trust`) orchestrated on the
workspace, recorded as an evaluation run with its report.

The suite engine knows models and datasets, never the store; this module is where a version is resolved,
its parent found, its outputs read through the cache ``assay eval`` fills, and the run recorded. It sits
above the release layer (:mod:`assay.release`), which it uses to load versions and assess them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.data import DataSpec
from assay.executor import Executor, LocalExecutor
from assay.release import assess_version, check_fits, data_for, model_of
from assay.trust import TrustConfig, TrustResult, cached_outputs, run_trust
from assay.workspace import Workspace, dataset_info, record_evaluation

logger = logging.getLogger(__name__)


@dataclass
class TrustRun:
    """A recorded trust run: the suite's result, the report document and files, the run's id."""

    result: TrustResult
    document: dict[str, Any]
    html: Path
    json: Path
    run_id: int


def trust_version(
    ws: Workspace,
    target: str,
    *,
    data_spec: DataSpec | None = None,
    split: str = "test",
    config: TrustConfig | None = None,
    out_dir: Path | None = None,
    against_parent: bool = True,
    progress: bool = False,
    executor: Executor | None = None,
) -> TrustRun:
    """``assay trust``: the suite on a registered version, recorded as an evaluation run with a report.

    Outputs go through the cache ``assay eval`` fills (keyed by artifact digest and split fingerprint),
    so the test, validation and training splits run once per version. With ``against_parent`` and a
    parent in the lineage, the parent is the baseline for corruption error and, for a variant without
    gradients, the model its transfer attack is crafted on. The report is the standard evaluation
    report: its metrics sections group the trust families, and its robustness-curves section draws
    robust accuracy against eps and accuracy against corruption severity. ``executor`` runs the families
    (:func:`assay.trust.run_trust`); this process alone records the run.
    """
    config = config or TrustConfig()
    version = ws.store.resolve(target)
    data, _ = data_for(version, data_spec)
    model = model_of(ws, version)
    parent = None
    if against_parent and version.parent:
        try:
            parent_version = ws.store.resolve(version.parent)
            check_fits(parent_version, data)  # the parent must take the same inputs
            parent = model_of(ws, parent_version)
        except Exception:  # a parent that no longer loads only loses the comparison, never the run
            logger.warning("parent %s of %s does not load; no baseline", version.parent, version.ref)
    standard = assess_version(
        ws, version, data, split, efficiency=False, n_boot=config.n_boot, seed=config.seed,
        progress=progress, model=model,
    )  # fmt: skip
    executor = executor or LocalExecutor()
    # A worker on another machine has no workspace to cache outputs in: it runs the model.
    cache = ws.cache_dir if executor.shares_disk else None
    outputs_of = cached_outputs(model, cache, version.artifact_digest)
    result = run_trust(
        model, data, split=split, config=config, outputs_of=outputs_of, parent=parent, baseline=parent,
        executor=executor,
    )  # fmt: skip
    about = {
        "config": config.__dict__,
        "baseline": version.parent if parent else None,
        "executor": executor.describe(),
    }
    assessment = standard.with_trust(result, about)
    evaluated = record_evaluation(ws, assessment, dataset_info(data, split), version=version, out_dir=out_dir)
    return TrustRun(result, evaluated.document, evaluated.html, evaluated.json, evaluated.run_id)

"""Run the registered checks over one dataset and gather their measurements into an audit result."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.data.audit.findings import FAMILY, unreliable
from assay.data.audit.registry import CHECKS, AuditContext
from assay.errors import UsageError
from assay.executor import Executor, LocalExecutor
from assay.measurement import Measurement
from assay.outputs import Outputs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditResult:
    measurements: list[Measurement]
    seconds: dict[str, float]  # wall time per check
    context: AuditContext = field(repr=False)

    def by_check(self, check: str) -> list[Measurement]:
        return [m for m in self.measurements if m.details.get("check") == check or m.name == check]

    def get(self, name: str) -> Measurement:
        for m in self.measurements:
            if m.name == name:
                return m
        raise KeyError(name)


def select_checks(only: Sequence[str] | None = None, skip: Sequence[str] = ()) -> list[str]:
    names = CHECKS.names()
    for name in [*(only or []), *skip]:
        CHECKS.get(name)  # unknown names raise, listing the known ones
    chosen = list(only) if only else names
    return [n for n in chosen if n not in skip]


def run_audit(
    ctx: AuditContext,
    checks: Sequence[str] | None = None,
    *,
    on_check: Callable[[str], None] | None = None,
    executor: Executor | None = None,
) -> AuditResult:
    """Run ``checks`` (default: every registered one) in a stable order; a check that raises becomes an
    ``error`` measurement and the others go on. ``KeyboardInterrupt`` is not caught: nothing is written.

    Each check is one unit of ``executor`` (default: here, one after another, sharing the context's
    cached work, such as the neighbour search that leakage and near-duplicates both read); on Ray each
    task has its own copy of the context, and what a check hands the datasheet comes back with it."""
    names = select_checks(checks)
    executor = executor or LocalExecutor()
    shared = executor.share(ctx)
    found = executor.map(_check, [(shared, name) for name in names], names, on_start=on_check)
    measurements: list[Measurement] = []
    seconds: dict[str, float] = {}
    for name, (ms, extra, took) in zip(names, found, strict=True):
        measurements += ms
        ctx.extra.update(extra)
        seconds[name] = took
    return AuditResult(measurements, seconds, ctx)


def _check(ctx: AuditContext, name: str) -> tuple[list[Measurement], dict[str, Any], float]:
    """One check on ``ctx``: its measurements, what it added to ``ctx.extra``, its wall time (s)."""
    check = CHECKS.get(name)
    before = set(ctx.extra)
    started = time.perf_counter()
    if ctx.data.kind not in check.kinds:
        found = [Measurement.skipped(name, FAMILY, f"applies to {' and '.join(sorted(check.kinds))} data")]
    elif check.needs == "reference" and ctx.reference is None and ctx.reference_texts is None:
        found = [Measurement.skipped(name, FAMILY, "no reference corpus (--reference)")]
    else:
        try:
            found = check.run(ctx)
        except UsageError:
            raise  # a bad threshold is the user's to fix, not a finding
        except Exception as e:
            logger.debug("audit check %s failed", name, exc_info=True)
            found = [Measurement.error(name, FAMILY, f"{type(e).__name__}: {e}")]
    added = {k: v for k, v in ctx.extra.items() if k not in before}
    return found, added, time.perf_counter() - started


def clean_scores(outputs: Outputs, flagged_ids: Sequence[str], tag: str) -> list[Measurement]:
    """Accuracy on all examples and on those not flagged (``tag``: leakage or contamination), with Wilson
    intervals: the score a contaminated benchmark would have reported next to its clean-subset score."""
    flagged = np.isin(outputs.ids, np.asarray(list(flagged_ids), dtype=str))
    out = []
    for name, mask in (("accuracy[all]", np.ones(outputs.n, bool)), (f"accuracy[clean of {tag}]", ~flagged)):
        n = int(mask.sum())
        if n == 0:
            out.append(Measurement.skipped(name, "quality", f"every example is flagged by {tag}"))
            continue
        out.append(
            Measurement.proportion(
                name,
                "quality",
                int(outputs.correct[mask].sum()),
                n,
                higher_is_better=True,
                estimator="share of examples whose top-1 prediction is the label",
                details={"excluded": int(flagged.sum()), "by": tag},
            )
        )
    return out


def flagged_ids(result: AuditResult, check: str, split: str = "test") -> list[str]:
    """Ids of ``split`` examples that a pair check (leakage, contamination) flagged."""
    ctx = result.context
    if check == "leakage":
        from assay.data.audit.duplicates import by_split, leaked_pairs

        ids: set[str] = set()
        for group in by_split(ctx, leaked_pairs(ctx)):
            if group.later == split and group.earlier != split:
                ids.update(ctx.ids[group.flagged()].tolist())
        return sorted(ids)
    out: list[str] = []
    for m in result.by_check(check):
        if m.details.get("split") == split:
            out += m.details.get("flagged_ids", [])
    return sorted(set(out))


def summary(result: AuditResult) -> dict[str, Any]:
    """The headline numbers a datasheet and a CLI table need. A finding marked unreliable reads None here
    (it is no headline fact) and is listed under ``unreliable`` with the reason."""

    def value(name: str) -> float | None:
        """The finding's value; None when absent, and when unreliable (see ``unreliable`` for why)."""
        try:
            m = result.get(name)
        except KeyError:
            return None
        return None if unreliable(m.to_dict()) else m.value

    return {
        "leakage_test_train": value("leakage[test:train]"),
        "leakage_val_train": value("leakage[val:train]"),
        "exact_duplicates_train": value("exact_duplicates[train]"),
        "near_duplicates_train": value("near_duplicates[train]"),
        "label_issues_train": value("label_issues[train]"),
        "label_model_accuracy_train": value("label_model_accuracy[train]"),
        "imbalance_ratio_train": value("imbalance_ratio[train]"),
        "pii_counts": result.context.extra.get("pii_counts"),
        "errors": [m.name for m in result.measurements if m.status == "error"],
        "unreliable": {
            m.name: reason for m in result.measurements if (reason := unreliable(m.to_dict())) is not None
        },
    }

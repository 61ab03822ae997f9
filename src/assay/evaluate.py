"""From per-example outputs to one evaluation or comparison document (what the report and JSON show).

The flow a reader can follow for any number:  outputs -> metrics (assay.metrics) -> stats (assay.stats)
-> gate (assay.gate) -> this document -> report (assay.report). Nothing here computes a metric itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from assay import __version__
from assay.compare import PerExample
from assay.errors import UsageError
from assay.format import format_interval, headline_calibration
from assay.gate import Policy, Verdict, evaluate_policy
from assay.measurement import Measurement
from assay.metrics import calibration_report, measure
from assay.outputs import Outputs
from assay.stats import MIN_BOOTSTRAP

if TYPE_CHECKING:
    from assay.trust import TrustResult


@dataclass
class Assessment:
    """One model's results on one split: its measurements and the data behind its plots."""

    info: dict[str, Any]
    outputs: Outputs
    measurements: list[Measurement]
    plots: dict[str, Any]
    efficiency: list[Measurement] = field(default_factory=list)
    training_curve: dict[str, list[float]] | None = None
    # Evidence behind measurements beyond the outputs (the trust suite's), for paired gate rules.
    per_example: dict[str, PerExample] = field(default_factory=dict)
    # False where the outputs hold no probabilities (an lm-eval generation log's hits): the gate compares
    # no metric of the outputs, only the per-example evidence.
    output_metrics: bool = True

    def with_trust(self, result: TrustResult, about: dict[str, Any] | None = None) -> Assessment:
        """This assessment plus the trust suite's ``result``: its measurements (for the report), its
        plots (the robustness curves) and its per-example evidence (for paired gate rules). The info
        records the families run and their seconds, with ``about`` (the configuration, a baseline)."""
        trust = {"families": list(result.seconds), "seconds": result.seconds, **(about or {})}
        return replace(
            self,
            info={**self.info, "trust": trust},
            measurements=[*self.measurements, *result.measurements],
            plots={**self.plots, "trust": result.plots},
            per_example={**self.per_example, **result.per_example},
        )


def assess(
    outputs: Outputs,
    *,
    info: dict[str, Any],
    val_outputs: Outputs | None = None,
    efficiency: list[Measurement] | None = None,
    class_names: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    training_curve: dict[str, list[float]] | None = None,
) -> Assessment:
    if n_boot < MIN_BOOTSTRAP:
        raise UsageError(f"--n-boot must be at least {MIN_BOOTSTRAP} for stable 95% intervals; got {n_boot}.")
    measurements = measure(outputs, n_boot=n_boot, seed=seed, class_names=class_names)
    calibration, plots = calibration_report(outputs, val_outputs, n_boot=n_boot, seed=seed)
    return Assessment(
        info=info,
        outputs=outputs,
        measurements=[*measurements, *calibration, *(efficiency or [])],
        plots=plots,
        efficiency=list(efficiency or []),
        training_curve=training_curve,
    )


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _calibration_line(measurements: list[Measurement]) -> list[str]:
    """The headline calibration error, saying which estimator it is (the debiased ECE when measured)."""
    m = headline_calibration(x.to_dict() for x in measurements)
    if m is None:
        return []
    return [f"calibration (headline: {m['name']}, {m['estimator']}): {format_interval(m)}"]


def _flagged_line(sides: dict[str, Assessment]) -> list[str]:
    """Which timings carry flags (outliers, drift, a busy machine): their numbers are not to be trusted."""
    flagged = [
        f"{role} {', '.join(names)}"
        for role, assessment in sides.items()
        if (names := [m.name for m in assessment.efficiency if m.details.get("flags")])
    ]
    return [f"timings flagged, see Efficiency: {'; '.join(flagged)}"] if flagged else []


def _plots(candidate: Assessment, baseline: Assessment | None) -> dict[str, Any]:
    plots: dict[str, Any] = {
        "reliability": {
            "candidate": candidate.plots.get("reliability"),
            "baseline": baseline.plots.get("reliability") if baseline else None,
            "candidate_after_temperature": candidate.plots.get("reliability_after_temperature"),
        },
        "confusion_matrix": {
            "candidate": candidate.plots.get("confusion_matrix"),
            "baseline": baseline.plots.get("confusion_matrix") if baseline else None,
        },
    }
    if candidate.training_curve:
        plots["training_curve"] = candidate.training_curve
    if candidate.plots.get("trust"):  # robust-accuracy and corruption curves from `assay trust`
        plots["trust"] = candidate.plots["trust"]
    return plots


def evaluation_document(
    candidate: Assessment, *, dataset: dict[str, Any], environment: dict[str, Any], title: str | None = None
) -> dict[str, Any]:
    accuracy = next((m for m in candidate.measurements if m.name == "accuracy" and m.value is not None), None)
    ref = candidate.info.get("ref", "predictions")
    headline = f"Evaluation of {ref} on {dataset.get('name')}/{dataset.get('split')}"
    lines = []
    if accuracy is not None and accuracy.ci_low is not None and accuracy.ci_high is not None:
        lines.append(
            f"accuracy {accuracy.value:.2%} [95% CI {accuracy.ci_low:.2%}, {accuracy.ci_high:.2%}], "
            f"n={accuracy.n}"
        )
    lines += _calibration_line(candidate.measurements)
    lines += _flagged_line({"candidate": candidate})
    failed = [m.name for m in candidate.measurements if m.status == "error"]
    if failed:
        lines.append(f"{len(failed)} measurement(s) failed: {', '.join(failed)}")
    return {
        "schema": "assay.report/1",
        "kind": "evaluation",
        "title": title or headline,
        "created_at": _now(),
        "assay_version": __version__,
        "summary": {"status": "info", "headline": headline, "lines": lines},
        "models": {"candidate": candidate.info, "baseline": None},
        "dataset": dataset,
        "measurements": [m.to_dict() for m in candidate.measurements],
        "plots": _plots(candidate, None),
        "environment": environment,
    }


def compare(baseline: Assessment, candidate: Assessment, policy: Policy) -> Verdict:
    return evaluate_policy(
        policy,
        baseline.outputs,
        candidate.outputs,
        baseline_efficiency=baseline.efficiency,
        candidate_efficiency=candidate.efficiency,
        baseline_per_example=baseline.per_example,
        candidate_per_example=candidate.per_example,
        output_metrics=baseline.output_metrics and candidate.output_metrics,
    )


def comparison_document(
    baseline: Assessment,
    candidate: Assessment,
    verdict: Verdict,
    *,
    dataset: dict[str, Any],
    environment: dict[str, Any],
    title: str | None = None,
) -> dict[str, Any]:
    ref_b, ref_c = baseline.info.get("ref", "baseline"), candidate.info.get("ref", "candidate")
    verdict_dict = verdict.to_dict()
    failed = [r for r in verdict_dict["rules"] if r.get("gated", True) and not r["passed"]]
    headline = (
        f"{ref_c} {'passes' if verdict.passed else 'fails'} the gate against {ref_b} "
        f"(policy '{verdict_dict['policy'].get('name', '')}')"
    )
    lines = [r["message"] for r in verdict_dict["rules"]]
    lines += _flagged_line({"baseline": baseline, "candidate": candidate})
    if failed:
        lines.insert(0, f"{len(failed)} gated rule(s) failed: {', '.join(r['metric'] for r in failed)}")
    return {
        "schema": "assay.report/1",
        "kind": "comparison",
        "title": title or f"{ref_c} vs {ref_b}",
        "created_at": _now(),
        "assay_version": __version__,
        "summary": {"status": "passed" if verdict.passed else "failed", "headline": headline, "lines": lines},
        "models": {"candidate": candidate.info, "baseline": baseline.info},
        "dataset": dataset,
        "measurements": [m.to_dict() for m in candidate.measurements],
        "baseline_measurements": [m.to_dict() for m in baseline.measurements],
        "verdict": verdict_dict,
        "plots": _plots(candidate, baseline),
        "environment": environment,
    }

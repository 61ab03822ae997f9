"""A realistic report document: a Fashion-MNIST CNN compared with its parent, every section filled.

Numbers are made up but shaped like a real run (10,000 test examples, 15 reliability bins, a 10x10
confusion matrix, efficiency with units, a skipped and a failed measurement), so the rendering sees what
assay.evaluate produces. It also holds what a reader could misread: a biased MCE whose estimate lies
outside its percentile interval (as the issue saw, 22.5% [23.8, 66.0]), a debiased ECE with its
calibration test, rules that name their one-sided tests beside two-sided comparisons, an informational
rule, and a baseline latency timed on a busy machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from assay.cost import Machine, cost_table, load_catalogue
from assay.data.sources import FASHION_MNIST_CLASSES
from assay.measurement import Measurement

if TYPE_CHECKING:
    from assay.evaluate import Assessment

CLASS_NAMES = FASHION_MNIST_CLASSES
RECALL = [0.86, 0.98, 0.85, 0.91, 0.86, 0.98, 0.72, 0.96, 0.98, 0.96]
N = 10_000


def measurement(
    name: str,
    family: str,
    value: float | None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    n: int | None = N,
    unit: str | None = None,
    higher_is_better: bool | None = True,
    estimator: str = "",
    status: str = "ok",
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "family": family,
        "value": value,
        "ci_low": lo,
        "ci_high": hi,
        "n": n,
        "unit": unit,
        "higher_is_better": higher_is_better,
        "estimator": estimator,
        "status": status,
        "details": details or {},
    }


def comparison(
    name: str,
    family: str,
    baseline: float,
    candidate: float,
    lo: float,
    hi: float,
    p: float | None,
    test: str,
    *,
    unit: str | None = None,
    higher_is_better: bool | None = True,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "family": family,
        "baseline": baseline,
        "candidate": candidate,
        "delta": candidate - baseline,
        "delta_ci_low": lo,
        "delta_ci_high": hi,
        "p_value": p,
        "test": test,
        "n": N,
        "unit": unit,
        "higher_is_better": higher_is_better,
        "estimator": "",
        "status": "ok",
        "details": {"alternative": "two-sided", **(details or {})},
    }


def confusion(seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i, recall in enumerate(RECALL):
        off = rng.dirichlet(np.ones(9)) * (1 - recall)
        shares = np.insert(off, i, recall)
        rows.append(rng.multinomial(1000, shares / shares.sum()).tolist())
    return rows


def reliability(shift: float) -> dict[str, list[Any]]:
    edges = np.linspace(0, 1, 16)
    counts = [0, 0, 3, 21, 64, 118, 160, 171, 190, 214, 245, 303, 418, 760, 7333]
    confidence = [
        None if c == 0 else round(float(lo + 0.6 * (hi - lo)), 4)
        for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)
    ]
    accuracy = [
        None if c is None else round(min(1.0, max(0.0, c - shift * (1 - c) * 2)), 4) for c in confidence
    ]
    return {
        "bin_lower": edges[:-1].round(4).tolist(),
        "bin_upper": edges[1:].round(4).tolist(),
        "confidence": confidence,
        "accuracy": accuracy,
        "count": counts,
    }


def quality(acc: float, shift: float) -> list[dict[str, Any]]:
    wilson = "top-1, Wilson 95% CI"
    rows = [
        measurement("accuracy", "quality", acc, acc - 0.0055, acc + 0.0054, estimator=wilson),
        measurement(
            "macro_f1",
            "quality",
            acc - 0.001,
            acc - 0.007,
            acc + 0.005,
            estimator="unweighted mean of per-class F1, bootstrap 95% CI",
        ),
        measurement(
            "nll",
            "quality",
            0.2561 + shift,
            0.248 + shift,
            0.265 + shift,
            higher_is_better=False,
            estimator="mean, nats, bootstrap",
        ),
        measurement(
            "brier",
            "quality",
            0.1302 + shift / 2,
            0.126 + shift / 2,
            0.135 + shift / 2,
            higher_is_better=False,
            estimator="multiclass, bootstrap",
        ),
    ]
    for cls, recall in zip(CLASS_NAMES[:3], RECALL[:3], strict=True):
        rows.append(
            measurement(
                f"recall[{cls}]", "quality", recall, recall - 0.022, recall + 0.02, n=1000, estimator=wilson
            )
        )
    rows.append(
        measurement(
            "top5_accuracy",
            "quality",
            None,
            status="skipped",
            details={"reason": "needs at least 6 classes in the predictions file"},
        )
    )
    return rows


PLUG_IN_NOTE = "binned plug-in estimate: biased upwards at finite n, and so is its percentile interval"
MCE_NOTE = (
    "the estimator is biased at this n: its resamples are biased again, so its percentile interval can "
    "sit beside the estimate"
)
BUSY = (
    "busy machine: other processes used 1.73 of its 2 cores while it was timed (its 2 threads leave 0 spare)"
)


def calibration(shift: float) -> list[dict[str, Any]]:
    consistency = {
        "test": "consistency resampling (Bröcker & Smith 2007)",
        "null": "perfect calibration",
        "statistic": 0.012 + shift,
        "p_value": 0.38 if shift == 0 else 0.0004,
        "n_resamples": 1000,
        "alternative": "greater",
    }
    return [
        measurement(
            "ece_debiased",
            "calibration",
            0.012 + shift,
            0.004 + shift,
            0.021 + shift,
            higher_is_better=False,
            estimator="top-label, 15 equal-width bins, L2, debiased per bin (Kumar, Liang & Ma 2019)",
            details={"calibration_test": consistency},
        ),
        measurement(
            "ece",
            "calibration",
            0.031 + shift,
            0.026 + shift,
            0.037 + shift,
            higher_is_better=False,
            estimator="top-label, 15 equal-width bins, L1",
            details={"note": PLUG_IN_NOTE},  # a note that applies although the estimate lies inside
        ),
        measurement(
            "mce",
            "calibration",
            0.225 + shift,
            0.238 + shift,
            0.66,
            higher_is_better=False,
            estimator="top-label, 15 equal-width bins, max",
            details={"note": MCE_NOTE},
        ),
        measurement(
            "temperature",
            "calibration",
            1.42,
            n=5000,
            higher_is_better=None,
            estimator="fitted on validation by NLL",
        ),
        measurement(
            "adaptive_ece",
            "calibration",
            None,
            status="error",
            details={"message": "ValueError: bins must be increasing"},
        ),
    ]


def efficiency(latency: float, size: float, flags: list[str] | None = None) -> list[dict[str, Any]]:
    ctx1 = {"threads": 2, "backend": "torch", "batch_size": 1, "flags": flags or []}
    ctxb = {"threads": 2, "backend": "torch", "batch_size": 256}
    est = "p50 of 100 timed calls after warm-up, percentile bootstrap 95% CI"
    return [
        measurement(
            "parameters",
            "efficiency",
            1_199_882,
            n=None,
            unit="count",
            higher_is_better=False,
            estimator="trainable and frozen parameters",
        ),
        measurement(
            "size_on_disk",
            "efficiency",
            size,
            n=None,
            unit="bytes",
            higher_is_better=False,
            estimator="size of model.safetensors",
        ),
        measurement(
            "latency_p50_b1",
            "efficiency",
            latency,
            latency * 0.97,
            latency * 1.04,
            n=100,
            unit="ms",
            higher_is_better=False,
            estimator=est,
            details=ctx1,
        ),
        measurement(
            "throughput",
            "efficiency",
            23_456.7,
            22_900.0,
            23_800.0,
            n=20,
            unit="examples/s",
            estimator=est,
            details=ctxb,
        ),
        measurement(
            "peak_memory",
            "efficiency",
            41.3,
            n=None,
            unit="MiB",
            higher_is_better=False,
            estimator="peak RSS added by one forward pass at batch 256",
            details=ctxb,
        ),
        measurement(
            "energy_per_example",
            "efficiency",
            None,
            status="skipped",
            details={"reason": "RAPL counters are not readable on this machine"},
        ),
    ]


def model_info(version: int, name: str = "fmnist-cnn") -> dict[str, Any]:
    return {
        "ref": f"{name}@{version}",
        "name": name,
        "version": version,
        "artifact_digest": f"sha256:{version:x}" + "ab12" * 15,
        "parent": f"{name}@{version - 1}" if version > 1 else None,
        "card": {
            "architecture": 'cnn {"channels": [32, 64], "dropout": 0.25}',
            "parameters": 1_199_882,
            "intended_use": "demonstration of the assay release loop on clothing images",
            "training_data": "fashion-mnist train split",
            "limitations": "measured only on the evaluation split named in this report",
            "licence": "MIT",
            "training": {
                "epochs": 8 + version,
                "seconds": 134.5 * version,
                "precision": "bf16",
                "energy_j": 4210.0 * version,
                "energy_method": "estimated",
                "co2_g": 0.468 * version,  # 4,210 J per version at 400 g CO2e/kWh
                "seed": version,
            },
        },
    }


def report_document(kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": "assay.report/1",
        "kind": kind,
        "title": "fmnist-cnn@2 vs fmnist-cnn@1"
        if kind == "comparison"
        else "Evaluation of fmnist-cnn@2 on fashion-mnist/test",
        "created_at": "2026-11-22T02:10:00+00:00",
        "assay_version": "0.1.0",
        "summary": {
            "status": "info",
            "headline": "Evaluation of fmnist-cnn@2 on fashion-mnist/test",
            "lines": ["accuracy 91.23% [95% CI 90.68%, 91.77%], n=10000"],
        },
        "models": {"candidate": model_info(2), "baseline": None},
        "dataset": {
            "name": "fashion-mnist",
            "split": "test",
            "n": N,
            "fingerprint": "sha256:" + "9f3c" * 16,
            "class_names": CLASS_NAMES,
            "source": "/usr/share/datasets/fashion-mnist",
            "licence": "MIT",
        },
        "measurements": [*quality(0.9123, 0.0), *calibration(0.0), *efficiency(3.214, 4_800_512)],
        "plots": {
            "reliability": {
                "candidate": reliability(0.02),
                "baseline": None,
                "candidate_after_temperature": reliability(0.002),
            },
            "confusion_matrix": {"candidate": confusion(2), "baseline": None},
            "training_curve": {
                "epoch": list(range(1, 11)),
                "train_loss": [0.62, 0.41, 0.35, 0.31, 0.29, 0.27, 0.25, 0.24, 0.23, 0.22],
                "val_loss": [0.45, 0.36, 0.32, 0.30, 0.28, 0.27, 0.265, 0.262, 0.266, 0.27],
                "val_accuracy": [0.84, 0.87, 0.885, 0.893, 0.9, 0.905, 0.908, 0.91, 0.909, 0.908],
            },
        },
        "efficiency": {"threads": 2, "batch_sizes": {"single": 1, "throughput": 256}, "device": "cpu"},
        "environment": {
            "python": "3.11.7",
            "platform": "Linux-6.1-x86_64",
            "packages": {"torch": "2.13.0", "numpy": "2.1.3", "assay": "0.1.0"},
            "cpu": {
                "model": "Intel(R) Xeon(R) Platinum 8481C",
                "flags": ["avx2", "avx512f", "avx512_vnni", "amx_tile"],
                "threads": 2,
            },
            "git_commit": "88dc264a1b2c3d4e5f60718293a4b5c6d7e8f901",
            "seeds": {"train": 2, "bootstrap": 0},
            "dataset_fingerprints": {"test": "sha256:" + "9f3c" * 16},
        },
    }
    if kind == "comparison":
        doc["summary"] = {
            "status": "passed",
            "headline": "fmnist-cnn@2 passes the gate against fmnist-cnn@1 (policy 'release')",
            "lines": [
                "accuracy: non-inferior within 0.5 pp (delta −0.30 pp, 95% CI [−0.60, +0.05])",
                "latency_p50_b1: 12% faster",
            ],
        }
        doc["models"]["baseline"] = model_info(1)
        doc["baseline_measurements"] = [
            *quality(0.9153, 0.01),
            *calibration(0.006),
            *efficiency(3.65, 4_800_512, flags=[BUSY]),
        ]
        doc["plots"]["reliability"]["baseline"] = reliability(0.04)
        doc["plots"]["confusion_matrix"]["baseline"] = confusion(1)
        doc["plots"]["per_class_recall"] = {
            "candidate": {c: [r - 0.022, r, r + 0.02] for c, r in zip(CLASS_NAMES, RECALL, strict=True)},
            "baseline": {
                c: [r - 0.025, r + 0.003, r + 0.023] for c, r in zip(CLASS_NAMES, RECALL, strict=True)
            },
        }
        mcnemar = "exact McNemar"
        doc["verdict"] = {
            "passed": True,
            "policy": {"name": "release", "alpha": 0.05, "source": "policy.toml"},
            "rules": [
                {
                    "metric": "accuracy",
                    "kind": "non_inferiority",
                    "margin": 0.005,
                    "threshold": None,
                    "baseline": 0.9153,
                    "candidate": 0.9123,
                    "delta": -0.003,
                    "delta_ci_low": -0.006,
                    "delta_ci_high": 0.0005,
                    "p_value": 0.01,
                    "p_adjusted": 0.02,
                    "passed": True,
                    "status": "ok",
                    "gated": True,
                    "test": "paired bootstrap",
                    "alternative": "greater",
                    "message": "accuracy: CI lower bound −0.60 pp is above the −0.50 pp margin",
                },
                {
                    "metric": "ece",
                    "kind": "non_inferiority",
                    "margin": 0.01,
                    "threshold": None,
                    "baseline": 0.037,
                    "candidate": 0.031,
                    "delta": -0.006,
                    "delta_ci_low": -0.009,
                    "delta_ci_high": -0.002,
                    "p_value": 0.004,
                    "p_adjusted": 0.012,
                    "passed": True,
                    "status": "ok",
                    "gated": True,
                    "test": "paired bootstrap",
                    "alternative": "less",
                    "message": "ece: improved by 0.60 pp",
                },
                {
                    "metric": "latency_p50_b1",
                    "kind": "max_ratio",
                    "margin": None,
                    "threshold": 1.1,
                    "baseline": 3.65,
                    "candidate": 3.214,
                    "delta": -0.436,
                    "delta_ci_low": -0.52,
                    "delta_ci_high": -0.35,
                    "p_value": 0.002,
                    "p_adjusted": None,
                    "passed": True,
                    "status": "ok",
                    "gated": False,
                    "test": "bootstrap (unpaired)",
                    "alternative": "less",
                    "flags": {"baseline": [BUSY]},
                    "message": "latency_p50_b1: 0.88x the baseline (informational); judged on flagged "
                    f"timings (baseline: {BUSY})",
                },
                {
                    "metric": "adversarial_accuracy",
                    "kind": "non_inferiority",
                    "margin": 0.02,
                    "threshold": None,
                    "baseline": None,
                    "candidate": None,
                    "delta": None,
                    "delta_ci_low": None,
                    "delta_ci_high": None,
                    "p_value": None,
                    "p_adjusted": None,
                    "passed": True,
                    "status": "skipped",
                    "gated": True,
                    "required": False,
                    "message": "adversarial_accuracy: skipped, the predictions file has no model to attack",
                },
            ],
            "comparisons": [
                comparison("accuracy", "quality", 0.9153, 0.9123, -0.006, 0.0005, 0.01, mcnemar),
                comparison("macro_f1", "quality", 0.9143, 0.9113, -0.0065, 0.0008, 0.09, "paired bootstrap"),
                comparison(
                    "nll",
                    "quality",
                    0.2661,
                    0.2561,
                    -0.016,
                    -0.004,
                    0.002,
                    "paired bootstrap",
                    higher_is_better=False,
                ),
                comparison(
                    "ece",
                    "calibration",
                    0.037,
                    0.031,
                    -0.009,
                    -0.002,
                    0.004,
                    "paired bootstrap",
                    higher_is_better=False,
                ),
                comparison(
                    "latency_p50_b1",
                    "efficiency",
                    3.65,
                    3.214,
                    -0.52,
                    -0.35,
                    0.001,
                    "Mann-Whitney U",
                    unit="ms",
                    higher_is_better=False,
                ),
            ],
            "churn": [
                measurement(
                    "churn",
                    "churn",
                    0.041,
                    0.0372,
                    0.0451,
                    higher_is_better=False,
                    estimator="share of examples whose prediction changed, Wilson",
                ),
                measurement(
                    "churn_correct_to_wrong",
                    "churn",
                    0.022,
                    0.0194,
                    0.0251,
                    higher_is_better=False,
                    estimator="Wilson",
                ),
                measurement("wrong_to_correct", "churn", 0.019, 0.0165, 0.0218, estimator="Wilson"),
            ],
            "mde": {"accuracy": 0.006, "n": N, "discordance": 0.04, "alpha": 0.05, "power": 0.8},
        }
    return doc


PLANTED_NOTE = "a maximum over classes: biased upwards at this n, and so is its percentile interval"


def _timing(name: str, samples: np.ndarray, q: float, busy: list[str]) -> Measurement:
    """A latency measurement as assay.metrics.efficiency makes it, from planted timings."""
    from assay.metrics.efficiency import checked_timings

    return Measurement(
        name,
        "efficiency",
        float(np.percentile(samples, q)),
        float(np.percentile(samples, q) * 0.98),
        float(np.percentile(samples, q) * 1.03),
        n=samples.size,
        unit="ms",
        higher_is_better=False,
        estimator=f"p{q:g} of {samples.size} timed calls after warm-up, percentile bootstrap 95% CI",
        details={
            "threads": 2,
            "batch_size": 1,
            "samples": samples.tolist(),
            "statistic": f"p{q:g}",
            **checked_timings(samples, q, None, busy),
        },
    )


def planted_assessments() -> tuple[Assessment, Assessment]:
    """Two planted models assessed by assay itself (metrics, intervals, timing flags), with two planted
    facts: the baseline's latency was timed on a busy machine (its /proc readings planted), and the
    candidate has a max-type plugin metric whose percentile interval misses its estimate."""
    from assay.evaluate import assess
    from assay.metrics.efficiency import CpuReading, machine_load
    from tests.unit.test_compare import baseline_case, flip, planted_outputs

    labels, preds = baseline_case(2000)
    base_out = planted_outputs(labels, preds)
    cand_out = planted_outputs(labels, flip(labels, preds, to_wrong=30, to_right=24))
    quiet = np.random.default_rng(0).gamma(400, 0.0001, 100)  # 0.04 ms, 5% spread
    before = CpuReading(busy=1000, own=400, seconds=0.0, cores=2, cpus=2, load_1m=3.1)
    after = CpuReading(busy=1180, own=450, seconds=1.0, cores=2, cpus=2, load_1m=3.4)
    _, busy = machine_load(before, after, threads=2, ticks_per_second=100)
    baseline = assess(
        base_out,
        info={"ref": "digits@v1"},
        n_boot=200,
        efficiency=[_timing("latency_p50_b1", quiet * 2, 50, busy)],
    )
    candidate = assess(
        cand_out, info={"ref": "digits@v2"}, n_boot=200, efficiency=[_timing("latency_p50_b1", quiet, 50, [])]
    )
    candidate.measurements.append(
        Measurement(
            "classwise_mce", "calibration", 0.225, 0.238, 0.66, n=2000, higher_is_better=False,
            estimator="class-wise, 15 equal-width bins, max over classes and bins, percentile bootstrap",
            details={"note": PLANTED_NOTE},
        )
    )  # fmt: skip
    return baseline, candidate


def gate_document() -> dict[str, Any]:
    """A gate report made by assay itself: :func:`planted_assessments` gated under the default policy."""
    from assay.evaluate import compare, comparison_document
    from assay.gate import Policy

    baseline, candidate = planted_assessments()
    verdict = compare(baseline, candidate, Policy.default())
    dataset = {"name": "planted", "split": "test", "n": 2000}
    return comparison_document(baseline, candidate, verdict, dataset=dataset, environment={})


@pytest.fixture
def make_document() -> Callable[..., dict[str, Any]]:
    """``make_document("comparison")`` or ``make_document("evaluation")``: a new document each call."""

    def make(kind: str = "comparison") -> dict[str, Any]:
        return report_document(kind)

    return make


@pytest.fixture(scope="session")
def rendered() -> Callable[[str], str]:
    """``rendered("comparison")``: the unmodified document's HTML, rendered once per session (about 1 s)."""
    from assay.report import render_html

    cache: dict[str, str] = {}

    def get(kind: str) -> str:
        if kind not in cache:
            cache[kind] = render_html(report_document(kind))
        return cache[kind]

    return get


def _trial_point(
    key: str, status: str, accuracy: float, latency: float, size: float, **extra: Any
) -> dict[str, Any]:
    half = 0.006
    return {
        "key": key,
        "method": extra.pop("method", key),
        "params": extra.pop("params", {}),
        "base": None,
        "status": status,
        "reason": extra.pop("reason", ""),
        "version": extra.pop("version", f"fmnist-cnn@{key}"),
        "parent": "fmnist-cnn@v1",
        "report": extra.pop("report", None),
        "backend": extra.pop("backend", "onnxruntime"),
        "precision": extra.pop("precision", "fp32"),
        "spec": {"arch": "cnn"},
        "flops": 8_000_000,
        "metrics": {
            "accuracy": {
                "value": accuracy,
                "ci_low": accuracy - half,
                "ci_high": accuracy + half,
                "unit": None,
            },
            "latency_p50_b1": {
                "value": latency,
                "ci_low": latency * 0.95,
                "ci_high": latency * 1.05,
                "unit": "ms",
            },
            "latency_p50_batch": {
                "value": latency * 40,
                "ci_low": latency * 38,
                "ci_high": latency * 42,
                "unit": "ms",
                "batch_size": 256,
            },
            "size_on_disk": {"value": size, "ci_low": None, "ci_high": None, "unit": "bytes"},
            "peak_memory": {"value": 12.0, "ci_low": 11.0, "ci_high": 13.0, "unit": "MiB"},
        },
        "accuracy_delta": {
            "delta": accuracy - 0.915,
            "ci_low": accuracy - 0.92,
            "ci_high": accuracy - 0.91,
            "p_value": 0.01,
        },
        "gate_summary": "",
        "notes": extra.pop("notes", []),
        "flags": extra.pop("flags", []),
        "seconds": 12.5,
    }


def compression_document(out_dir: Path) -> dict[str, Any]:
    """A search document as :class:`assay.compress.Search` writes it: a root, passed, failed, skipped and
    flagged trials, and a gate report file for the passed one (so its link resolves)."""
    gate_report = out_dir / "gate-onnx.html"
    gate_report.parent.mkdir(parents=True, exist_ok=True)
    gate_report.write_text("<html><body>gate</body></html>")
    root = _trial_point("root", "root", 0.915, 0.25, 1_688_976, backend="torch", version="fmnist-cnn@v1")
    failed = "FAIL: 1 of 3 gated rule(s) failed: accuracy (non_inferiority)"
    flag = "implausible: 125.0x faster than root at batch 1, above the 2.5x this CPU allows"
    skipped = _trial_point("torch_bf16", "skipped", 0, 0, 0, reason="this CPU has no native bf16")
    trials = [
        _trial_point("onnx_fp32", "passed", 0.915, 0.09, 1_702_123, report=str(gate_report)),
        _trial_point("pruned50+ort_static_int8", "passed", 0.911, 0.05, 120_000, precision="int8"),
        _trial_point("ort_static_int8", "failed", 0.905, 0.08, 443_007, precision="int8", reason=failed),
        _trial_point(
            "torchao_int8_weight_only", "passed", 0.914, 0.002, 483_522, backend="torchao", precision="int8",
            flags=[flag],
        ),
        {**skipped, "metrics": {}},
    ]  # fmt: skip
    machine = Machine(
        gflops={"fp32": 130.0, "bf16": 330.0, "int8": 600.0}, bandwidth_gb_s=52.0, clock_ghz=2.6, threads=2
    )
    evaluated = [t for t in trials if t["status"] in ("passed", "failed")]
    return {
        "schema": "assay.compression/1",
        "kind": "compression",
        "status": "complete",
        "stop_reason": "",
        "model": "fmnist-cnn@v1",
        "root": root,
        "objective": {"name": "latency_b1", "metric": "latency_p50_b1", "higher_is_better": False},
        "policy": {"name": "default", "alpha": 0.05},
        "budget": {"max_trials": None, "max_seconds": None},
        "dataset": {"name": "fashion-mnist", "split": "test", "n": 10000},
        "trials": trials,
        "best": "pruned50+ort_static_int8",
        "frontier": {
            "latency_p50_b1": ["root", "onnx_fp32", "pruned50+ort_static_int8"],
            "latency_p50_batch": ["root", "pruned50+ort_static_int8"],
            "size_on_disk": ["root", "pruned50+ort_static_int8"],
            "peak_memory": ["root"],
        },
        "machine": machine.to_dict(),
        "cost": cost_table([root, *evaluated], load_catalogue(), machine),
        "started_at": "2026-12-01T15:00:00+00:00",
        "updated_at": "2026-12-01T15:10:00+00:00",
        "environment": {"cpu": {"model": "AMD EPYC", "flags": ["avx2"], "torch_threads": 2},
                        "packages": {"torch": "2.13.0", "onnxruntime": "1.32.0"}, "python": "3.11.7"},
    }  # fmt: skip

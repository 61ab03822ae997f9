"""The catalogue of gateable metric names: every metric a release-policy rule may name, declared once.

A rule names a metric; the gate checks the name here, before anything is measured, without importing
the code that measures it (so reading a policy imports neither the trust suite nor PyTorch). What
measures a metric reads its name, direction and unit from here, and a contract test
(tests/contract/test_catalogue.py) holds the two together. Each :class:`Entry` says:

    family            the measurement family (quality, calibration, efficiency, robustness,
                      adversarial, ood); for the trust suite's entries, the trust family that runs
    higher_is_better  the direction: a margin is on the bad side of it
    evidence          what a paired rule is judged on:
                        outputs       the two models' per-example outputs, by the metric registered
                                      under the name (assay.metrics.registry), resampled in pairs
                        timings       timed calls of each model (assay.metrics.efficiency), resampled
                                      apart (two models' calls do not pair); counts are exact
                        per_example   evidence the trust family keeps per example
                                      (assay.trust.TrustResult.per_example), paired by example id
    per_example_mean  the value is the mean of per-example values (accuracy, NLL, robust accuracy), so
                      paired resampling of those values is its comparison (and exact McNemar where
                      they are 0/1); otherwise it is a statistic of the whole sample (an ECE, an AUROC)

Names of the trust suite's measurements are built from axes (attacks, norms and eps; corruptions and
severities; OOD sets, scores and metrics), and :func:`trust_entries` enumerates them for the default
threat models, the ones the gate runs. Metrics that plugins register at run time
(:data:`assay.metrics.METRICS`) are valid rule names too; the gate asks the registry for those.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Evidence = Literal["outputs", "timings", "per_example"]
Norm = Literal["linf", "l2"]


@dataclass(frozen=True)
class Entry:
    """One gateable metric (see the module docstring for the fields)."""

    name: str
    family: str
    higher_is_better: bool
    evidence: Evidence
    per_example_mean: bool
    unit: str | None = None


def _entries(*rows: Entry) -> dict[str, Entry]:
    return {row.name: row for row in rows}


# --- metrics of the outputs (registered in assay.metrics.registry) ---------------------------------

OUTPUT_METRICS: Mapping[str, Entry] = _entries(
    Entry("accuracy", "quality", True, "outputs", True),
    Entry("macro_f1", "quality", True, "outputs", False),
    Entry("nll", "quality", False, "outputs", True, unit="nats"),
    Entry("brier", "quality", False, "outputs", True),
    Entry("ece", "calibration", False, "outputs", False),
    Entry("ece_debiased", "calibration", False, "outputs", False),
    Entry("adaptive_ece", "calibration", False, "outputs", False),
    Entry("mce", "calibration", False, "outputs", False),
)

# --- efficiency (measured by assay.metrics.efficiency from timing a model, not from its outputs) ----

EFFICIENCY = "efficiency"
LATENCY_QUANTILES = (50, 95, 99)  # percentiles of batch-1 latency


def latency_b1(q: float) -> str:
    """``latency_p95_b1``: the ``q``-th percentile of batch-1 latency."""
    return f"latency_p{q:g}_b1"


EFFICIENCY_METRICS: Mapping[str, Entry] = _entries(
    *(Entry(latency_b1(q), EFFICIENCY, False, "timings", False, unit="ms") for q in LATENCY_QUANTILES),
    Entry("latency_p50_batch", EFFICIENCY, False, "timings", False, unit="ms"),
    Entry("throughput", EFFICIENCY, True, "timings", False, unit="examples/s"),
    Entry("peak_memory", EFFICIENCY, False, "timings", False, unit="MiB"),
    Entry("size_on_disk", EFFICIENCY, False, "timings", False, unit="bytes"),
    Entry("parameters", EFFICIENCY, False, "timings", False, unit="count"),
)

# --- language models (measured by assay.llm.perplexity on a corpus, paired per document) -------------

LANGUAGE_MODELING = "language_modeling"
LANGUAGE_MODEL_METRICS: Mapping[str, Entry] = _entries(
    Entry("nll_per_token", LANGUAGE_MODELING, False, "per_example", False, unit="nats/token"),
    Entry("perplexity", LANGUAGE_MODELING, False, "per_example", False, unit="perplexity"),
    Entry("bits_per_byte", LANGUAGE_MODELING, False, "per_example", False, unit="bits/byte"),
    Entry(
        "exact_match", LANGUAGE_MODELING, True, "per_example", True
    ),  # a generation task's (llm.generation)
)

# --- the trust suite (assay.trust; measured by assay.metrics.adversarial, robustness, ood) ---------

NORMS: tuple[Norm, ...] = ("linf", "l2")
DEFAULT_EPS: Mapping[Norm, tuple[float, ...]] = {"linf": (0.05, 0.1, 0.2), "l2": (0.5, 1.0, 2.0)}
WHITE_BOX_ATTACKS = ("fgsm", "pgd")  # on models with gradients, in every norm
# Score-based, L-inf only. Transfer is not gateable: a model with gradients is not attacked by transfer.
SQUARE = "square"


def adversarial_accuracy(attack: str, norm: str, eps: float) -> str:
    """``adv_accuracy[pgd-linf@0.1]``: robust accuracy under ``attack`` at ``eps``."""
    return f"adv_accuracy[{attack}-{norm}@{eps:g}]"


# Texts: the greedy character-level attack (assay.metrics.text_attack); its "norm" is a count of
# character edits, at most TEXT_EDIT_BUDGET (and a share of the text's length) per example.
TEXT_ATTACK = "char_greedy"
TEXT_EDITS = "edits"
TEXT_EDIT_BUDGET = 3


def text_attack_metric(metric: str, budget: int) -> str:
    """``adv_success[char_greedy-edits@3]``: ``metric`` (accuracy, success, edits, queries) of the text
    attack within ``budget`` edits; ``adv_accuracy[...]`` is :func:`adversarial_accuracy`'s name."""
    return f"adv_{metric}[{TEXT_ATTACK}-{TEXT_EDITS}@{budget}]"


SEVERITIES = (1, 2, 3, 4, 5)
# Every corruption (assay.metrics.robustness defines each one) and the kind of data it applies to.
CORRUPTIONS: Mapping[str, Literal["image", "table"]] = {
    "gaussian_noise": "image",
    "shot_noise": "image",
    "impulse_noise": "image",
    "gaussian_blur": "image",
    "contrast": "image",
    "brightness": "image",
    "pixelate": "image",
    "jpeg": "image",
    "rotate": "image",
    "translate": "image",
    "table_gaussian_noise": "table",
    "table_missing": "table",
    "table_scaling": "table",
}


# Text perturbations (assay.metrics.text_robustness defines each), measured and named as corruptions.
TEXT_PERTURBATIONS = (
    "text_typo",
    "text_keyboard",
    "text_casing",
    "text_punctuation",
    "text_word_deletion",
    "text_word_repetition",
)


def corruption_accuracy(corruption: str, severity: int) -> str:
    """``corruption_accuracy[jpeg@3]``: accuracy under ``corruption`` at ``severity``."""
    return f"corruption_accuracy[{corruption}@{severity}]"


def corruption_mca(corruption: str | None = None) -> str:
    """``corruption_mca[<corruption>]``, or the overall ``corruption_mca`` without one."""
    return "corruption_mca" if corruption is None else f"corruption_mca[{corruption}]"


OOD_SCORES = ("msp", "max_logit", "energy", "mahalanobis")
OOD_SHIFTS = ("noise", "inverted", "rotated")  # synthetic copies of in-distribution examples
# Images: the shifts and scikit-learn's digits (on 28x28 single-channel data). Texts: sentences of the
# Python standard library's docstrings, word-shuffled copies of in-distribution texts, and texts of the
# classes the data holds but did not label (Dataset.held_out; fortunes' smaller categories).
TEXT_OOD_SETS = ("docstrings", "shuffled", "held_out_classes")
OOD_SETS = (*OOD_SHIFTS, "digits", *TEXT_OOD_SETS)
# Detection metrics and whether higher is better.
OOD_METRICS: Mapping[str, bool] = {"auroc": True, "aupr": True, "fpr_at_95_tpr": False}


def ood_metric(metric: str, ood_set: str, score: str) -> str:
    """``ood_auroc[digits:energy]``: ``metric`` of ``score`` on ``ood_set``."""
    return f"ood_{metric}[{ood_set}:{score}]"


def attack_names(attacks: Iterable[str], norm: str, eps: Iterable[float]) -> set[str]:
    """The robust-accuracy names of ``attacks`` in ``norm`` at each of ``eps``."""
    levels = tuple(eps)
    return {adversarial_accuracy(attack, norm, e) for attack in attacks for e in levels}


def trust_entries(eps: Mapping[Norm, Sequence[float]] | None = None) -> dict[str, Entry]:
    """The trust measurements a rule can name: those the suite keeps per-example evidence for, named
    as they are produced with threat models ``eps`` (default :data:`DEFAULT_EPS`): white-box robust
    accuracy in each norm, Square's in L-inf, the text attack's at :data:`TEXT_EDIT_BUDGET`, accuracy
    under each corruption (and text perturbation) and severity and their means, and every OOD
    detection metric."""
    return dict(_trust_entries(tuple((norm, tuple(v)) for norm, v in (eps or DEFAULT_EPS).items())))


@functools.cache
def _trust_entries(eps: tuple[tuple[Norm, tuple[float, ...]], ...]) -> dict[str, Entry]:
    levels = dict(eps)
    names: dict[str, Entry] = {}

    def add(name: str, family: str, higher: bool, mean: bool) -> None:
        names[name] = Entry(name, family, higher, "per_example", mean)

    for name in sorted(attack_names([SQUARE], "linf", levels.get("linf", ()))):
        add(name, "adversarial", True, True)
    for norm in NORMS:
        for name in sorted(attack_names(WHITE_BOX_ATTACKS, norm, levels.get(norm, ()))):
            add(name, "adversarial", True, True)
    add(adversarial_accuracy(TEXT_ATTACK, TEXT_EDITS, TEXT_EDIT_BUDGET), "adversarial", True, True)
    for corruption in (*CORRUPTIONS, *TEXT_PERTURBATIONS):
        for severity in SEVERITIES:
            add(corruption_accuracy(corruption, severity), "robustness", True, True)
        add(corruption_mca(corruption), "robustness", True, True)
    add(corruption_mca(), "robustness", True, True)
    for ood_set in OOD_SETS:
        for score in OOD_SCORES:
            for metric, higher in OOD_METRICS.items():
                add(ood_metric(metric, ood_set, score), "ood", higher, False)
    return names


def entries() -> dict[str, Entry]:
    """Every built-in gateable metric by name: outputs, efficiency and the trust suite's (default eps)."""
    return {**OUTPUT_METRICS, **EFFICIENCY_METRICS, **LANGUAGE_MODEL_METRICS, **trust_entries()}


def lookup(name: str) -> Entry | None:
    """The entry of ``name``, or None when it is not a built-in gateable metric."""
    return (
        OUTPUT_METRICS.get(name)
        or EFFICIENCY_METRICS.get(name)
        or LANGUAGE_MODEL_METRICS.get(name)
        or trust_entries().get(name)
    )


def describe_trust(eps: Mapping[Norm, Sequence[float]] | None = None) -> str:
    """:func:`trust_entries` as patterns, for messages (they are too many to list one by one)."""
    levels = eps or DEFAULT_EPS
    shown = "; ".join(f"{norm} eps {', '.join(f'{e:g}' for e in v)}" for norm, v in levels.items())
    return (
        f"adv_accuracy[<{'|'.join(WHITE_BOX_ATTACKS)}>-<norm>@<eps>] ({shown}), "
        f"adv_accuracy[{SQUARE}-linf@<eps>], "
        f"{adversarial_accuracy(TEXT_ATTACK, TEXT_EDITS, TEXT_EDIT_BUDGET)} (texts), "
        f"corruption_accuracy[<corruption>@<1-5>], corruption_mca[<corruption>], corruption_mca "
        f"(corruptions: {', '.join((*CORRUPTIONS, *TEXT_PERTURBATIONS))}), "
        f"ood_<{'|'.join(OOD_METRICS)}>[<{'|'.join(OOD_SETS)}>:<{'|'.join(OOD_SCORES)}>]"
    )

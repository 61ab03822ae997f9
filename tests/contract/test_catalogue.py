"""The catalogue of gateable metric names (assay.catalogue) against the code that measures them.

Every name a policy may use is produced under that name with the catalogue's family, direction and unit,
and what is produced under a gateable-looking name is in the catalogue: a metric renamed or re-signed in
one place and not the other fails here, not in a gate that silently skips its rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assay import catalogue
from assay.measurement import Measurement
from assay.metrics import METRICS, adversarial, ood, registry, robustness, text_attack, text_robustness
from assay.metrics.efficiency import measure_efficiency
from assay.outputs import Outputs, from_arrays


def _outputs(n: int = 200, classes: int = 3, seed: int = 0) -> Outputs:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 2.0 * np.eye(classes)[labels]
    return from_arrays(labels, logits=logits, source="contract")


def _agrees(m: Measurement, entry: catalogue.Entry) -> None:
    facts = (m.family, m.higher_is_better, m.unit)
    assert facts == (entry.family, entry.higher_is_better, entry.unit), m.name


@pytest.mark.parametrize("name", list(catalogue.OUTPUT_METRICS))
def test_each_metric_of_the_outputs_is_registered_as_catalogued(name: str) -> None:
    entry, spec = catalogue.OUTPUT_METRICS[name], METRICS.get(name)
    assert entry.evidence == "outputs"
    facts = (spec.family, spec.higher_is_better, spec.unit)
    assert facts == (entry.family, entry.higher_is_better, entry.unit)
    # A mean of per-example values has them: the registry's fast path, and the gate's paired evidence.
    assert entry.per_example_mean == (spec.per_example is not None)
    from assay.metrics import measure

    (m,) = measure(_outputs(), [name], n_boot=50)
    assert m.status == "ok" and m.name == name
    _agrees(m, entry)


def test_the_built_in_metrics_are_the_catalogues() -> None:
    assert [spec.name for spec in registry._BUILTIN] == list(catalogue.OUTPUT_METRICS)


class _Echo:
    """A predictor without a framework: logits are a fixed projection of the flattened input."""

    name = "numpy"

    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        flat = x.reshape(len(x), -1)
        return flat[:, :3] * 2.0, None


def test_efficiency_measures_every_catalogued_name_as_catalogued(tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\0" * 64)
    measured = measure_efficiency(
        _Echo(), np.zeros(8, np.float32), parameters=24, weights_path=weights, warmup=1, repeats=10
    )
    by_name = {m.name: m for m in measured}
    assert set(by_name) == set(catalogue.EFFICIENCY_METRICS)
    for name, entry in catalogue.EFFICIENCY_METRICS.items():
        if by_name[name].status == "ok":  # peak memory needs Linux /proc; skipped elsewhere, by name
            _agrees(by_name[name], entry)
        assert entry.evidence == "timings"


def test_corruptions_are_defined_in_the_catalogues_order() -> None:
    # A corruption's random stream is its position, so the order is part of every corrupted input.
    assert list(robustness.CORRUPTIONS) == list(catalogue.CORRUPTIONS)
    assert {c.kind for c in robustness.CORRUPTIONS.values()} == {"image", "table"}
    assert tuple(text_robustness.PERTURBATIONS) == catalogue.TEXT_PERTURBATIONS


def _trust_measurements() -> list[Measurement]:
    """Each trust metric module's measurements on synthetic evidence, at the default threat models."""
    rng = np.random.default_rng(1)
    n = 60
    hits = rng.random(n) < 0.8
    result = robustness.CorruptionResult(
        clean=hits, corrupted={c: rng.random((5, n)) < 0.7 for c in catalogue.CORRUPTIONS}
    )
    out = robustness.corruption_measurements(result, n_boot=50)
    texts = robustness.CorruptionResult(
        clean=hits, corrupted={c: rng.random((5, n)) < 0.7 for c in catalogue.TEXT_PERTURBATIONS}
    )
    out += text_robustness.perturbation_measurements(texts, n_boot=50)
    attacked = text_attack.TextAttackResult(
        hits, hits & (rng.random(n) < 0.5), np.ones(n, int), np.full(n, 9), np.full(n, 3),
        np.array(["x"] * n, dtype=object), catalogue.TEXT_EDIT_BUDGET, 0.1, 2,
    )  # fmt: skip
    out += text_attack.attack_measurements(attacked, n_boot=50)
    for norm in catalogue.NORMS:
        eps = (0.0, *catalogue.DEFAULT_EPS[norm])
        correct = {attack: [rng.random(n) < 0.5 for _ in eps] for attack in catalogue.WHITE_BOX_ATTACKS}
        curve = adversarial.RobustCurve(norm, hits, eps, correct, 10.0, np.zeros(n, bool))
        out += adversarial.curve_measurements(curve, n_classes=3)
    runs = {e: (rng.random(n) < 0.5, np.ones(n, int)) for e in catalogue.DEFAULT_EPS["linf"]}
    out += adversarial.square_measurements(runs)
    outputs = _outputs(n)
    assert outputs.logits is not None
    features = rng.normal(size=(n, 4))
    maha = ood.fit_mahalanobis(features, outputs.labels)
    for ood_set in catalogue.OOD_SETS:
        out += ood.ood_measurements(
            outputs.logits,
            rng.normal(size=(n, 3)),
            ood_set=ood_set,
            id_features=features,
            ood_features=rng.normal(size=(n, 4)) + 1.0,
            mahalanobis=maha,
            n_boot=50,
        )
    return out


def test_trust_measurements_are_named_and_directed_as_catalogued() -> None:
    entries = catalogue.trust_entries()
    produced = {m.name: m for m in _trust_measurements() if m.status == "ok"}
    assert set(entries) <= set(produced)  # every gateable name is measured under that name
    for name, entry in entries.items():
        _agrees(produced[name], entry)
        assert entry.evidence == "per_example"
    # Names a rule could be expected to take but that keep no per-example evidence stay outside.
    outside = {name for name in produced if name not in entries}
    budget = catalogue.TEXT_EDIT_BUDGET
    text_attack_summaries = {catalogue.text_attack_metric(m, budget) for m in ("success", "edits", "queries")}
    assert outside == {"adv_sanity[linf]", "adv_sanity[l2]", *text_attack_summaries}


def test_lookup_covers_every_built_in_name_and_nothing_else() -> None:
    every = catalogue.entries()
    assert all(catalogue.lookup(name) == entry for name, entry in every.items())
    assert catalogue.lookup("auroc_ood") is None and catalogue.lookup("adv_accuracy[pgd-linf@0.3]") is None
    # Non-default threat models name other robust accuracies, and only those.
    wider = catalogue.trust_entries({"linf": (0.3,), "l2": ()})
    assert "adv_accuracy[pgd-linf@0.3]" in wider and "adv_accuracy[pgd-linf@0.1]" not in wider


@pytest.mark.parametrize("name", list(catalogue.LANGUAGE_MODEL_METRICS))
def test_each_language_model_metric_is_measured_as_catalogued(name: str) -> None:
    from assay.llm.perplexity import DocumentScores

    scores = DocumentScores(
        ids=np.array(["a", "b", "c"]), nll=np.array([3.0, 5.0, 4.0]), tokens=np.array([2, 3, 2]),
        bytes=np.array([9, 14, 8]),
    )  # fmt: skip
    measured = {m.name: m for m in scores.measurements(n_boot=200)}
    evidence = scores.per_example(list(measured.values()))
    from assay.llm.generation import GenerationItem, GenerationTask, exact_match

    task = GenerationTask("t", tuple(GenerationItem(str(i), "p", "t") for i in range(5)))
    match, match_evidence = exact_match(task, np.array([True, False, True, True, False]), n_boot=200)
    measured[match.name], evidence[match.name] = match, match_evidence
    entry = catalogue.LANGUAGE_MODEL_METRICS[name]
    assert entry.evidence == "per_example" and name in evidence
    assert entry.per_example_mean == (evidence[name].hits is not None)
    _agrees(measured[name], entry)

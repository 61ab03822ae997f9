"""The label-issue check knows when it cannot tell: the accuracy it relied on, and the bar below which its
flags are marked unreliable. Measured on planted noise in generated sentences, weak and strong features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assay.data.audit import AuditContext, AuditData, AuditResult, run_audit
from assay.data.audit.datasheet import croissant, datasheet_section
from assay.data.audit.labels import find_label_issues, model_reliability, out_of_fold_probs
from assay.data.audit.report import write_audit
from assay.data.audit.run import summary

from .sentences import NoisySentences, noisy_sentences

CLASSES = [f"topic{k}" for k in range(10)]


Audited = tuple[NoisySentences, AuditResult, np.ndarray]
BOTH = pytest.mark.parametrize("case", ["weak", "strong"])


def _audited(case: str) -> Audited:
    """The audit of one case through the quick model, and the same model's probabilities computed apart."""
    data = noisy_sentences(case)
    audit = AuditData.from_arrays({"train": (data.x, data.labels)}, name=case, class_names=CLASSES)
    result = run_audit(AuditContext(audit), ["label_issues"])
    probs = out_of_fold_probs(data.x, data.labels, 10, folds=3, seed=0)  # the check's defaults
    return data, result, probs


@pytest.fixture(scope="module")
def weak() -> Audited:
    return _audited("weak")


@pytest.fixture(scope="module")
def strong() -> Audited:
    return _audited("strong")


def _flagged(result: AuditResult, n: int) -> np.ndarray:
    ids = result.get("label_issues[train]").details["flagged_ids"]
    mask = np.zeros(n, bool)
    mask[[int(i.split("-")[1]) for i in ids]] = True
    return mask


def _precision_recall(found: np.ndarray, planted: np.ndarray) -> tuple[float, float]:
    hits = int((found & planted).sum())
    return hits / max(int(found.sum()), 1), hits / int(planted.sum())


@BOTH
def test_the_flags_are_those_of_the_quick_models_probabilities(
    case: str, request: pytest.FixtureRequest
) -> None:
    data, result, probs = request.getfixturevalue(case)
    np.testing.assert_array_equal(_flagged(result, len(data.labels)), find_label_issues(data.labels, probs))


@BOTH
def test_the_flags_agree_with_cleanlab_on_the_same_probabilities(
    case: str, request: pytest.FixtureRequest
) -> None:
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    data, result, probs = request.getfixturevalue(case)
    ours = _flagged(result, len(data.labels))
    theirs = cleanlab_filter.find_label_issues(data.labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    assert (ours & theirs).sum() / (ours | theirs).sum() >= 0.9


def test_weak_features_flag_half_the_labels_and_say_they_cannot_tell(weak: Audited) -> None:
    data, result, _ = weak
    m = result.get("label_issues[train]")
    precision, recall = _precision_recall(_flagged(result, len(data.labels)), data.planted)
    # What issue 13 saw: about half of the labels flagged where 12% are wrong, most flags wrong.
    assert m.value > 0.4 and precision < 0.3, (m.value, precision, recall)
    assert m.status == "ok"  # the count was measured; the marker says what it is worth
    message = m.details["unreliable"]
    model = m.details["model"]
    assert not model["reliable"] and model["lift_low"] < model["min_lift"] == 0.5
    assert f"{model['majority_rate']:.1%}" in message and "learned nothing" in message
    assert "better features" in message and "--label-probs" in message
    accuracy = result.get("label_model_accuracy[train]")
    assert accuracy.value == pytest.approx(model["accuracy"]) and accuracy.n == len(data.labels)
    assert accuracy.ci_low < model["required_accuracy"]


def test_strong_features_find_the_planted_noise_and_are_not_marked(strong: Audited) -> None:
    data, result, _ = strong
    m = result.get("label_issues[train]")
    precision, recall = _precision_recall(_flagged(result, len(data.labels)), data.planted)
    # Measured 0.95 and 0.82 here (0.93 to 0.95 and 0.82 to 0.90 over four seeds of the generator).
    assert precision >= 0.85, precision
    assert recall >= 0.75, recall
    assert "unreliable" not in m.details and m.details["model"]["reliable"]
    assert m.details["model"]["lift_low"] >= 0.5


@BOTH
def test_the_model_accuracy_is_checked_against_statsmodels_and_a_dummy_classifier(
    case: str, request: pytest.FixtureRequest
) -> None:
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    from sklearn.dummy import DummyClassifier

    data, result, probs = request.getfixturevalue(case)
    model = result.get("label_issues[train]").details["model"]
    correct = int((probs.argmax(axis=1) == data.labels).sum())
    assert model["correct"] == correct and model["n"] == len(data.labels)
    low, high = proportion.proportion_confint(correct, len(data.labels), alpha=0.05, method="wilson")
    assert model["ci_low"] == pytest.approx(low, abs=1e-12) and model["ci_high"] == pytest.approx(
        high, abs=1e-12
    )
    dummy = DummyClassifier(strategy="most_frequent").fit(data.x, data.labels)
    assert model["majority_rate"] == pytest.approx(dummy.score(data.x, data.labels), abs=1e-12)
    assert model["majority_class"] == CLASSES[int(dummy.predict(data.x[:1])[0])]


@BOTH
def test_an_unreliable_finding_is_no_fact_in_the_summary_datasheet_and_report(
    case: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    _, result, _ = request.getfixturevalue(case)
    weak = case == "weak"
    headline = summary(result)
    assert (headline["label_issues_train"] is None) == weak  # no headline number when unreliable
    assert headline["label_model_accuracy_train"] == pytest.approx(
        result.get("label_model_accuracy[train]").value
    )
    assert ("label_issues[train]" in headline["unreliable"]) == weak
    labels_row = next(
        r["text"] for r in datasheet_section(result) if r["topic"] == "Label quality (measured)"
    )
    assert ("(unreliable): the quick model is" in labels_row) == weak
    assert "out-of-fold accuracy of the label-issue model on train" in labels_row
    assert ("(unreliable)" in croissant(result)["rai:dataAnnotationAnalysis"]) == weak
    paths, document = write_audit(result, tmp_path)
    html = paths.html.read_text()
    assert ("1 finding marked unreliable" in html) == weak
    assert ('class="badge-unreliable" title="the quick model is' in html) == weak
    stored = json.loads(paths.json.read_text())
    assert stored["summary"]["unreliable"] == headline["unreliable"] == document["summary"]["unreliable"]


def _probs_with(correct: int, labels: np.ndarray) -> np.ndarray:
    """Probabilities whose most probable class is the label on the first ``correct`` examples only."""
    predicted = labels.copy()
    predicted[correct:] = (labels[correct:] + 1) % 2
    return np.eye(2)[predicted] * 0.8 + 0.1


def test_the_bar_is_the_lower_bound_reaching_half_the_headroom_over_the_majority_rate() -> None:
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    labels = np.array([0] * 700 + [1] * 300)  # majority rate 0.7: the bar is 0.7 + 0.5 * 0.3 = 0.85
    lows = [proportion.proportion_confint(c, 1000, method="wilson")[0] for c in range(1001)]
    first = next(c for c, low in enumerate(lows) if low >= 0.85)  # the smallest count that clears it
    for correct, reliable in ((first - 1, False), (first, True)):
        model = model_reliability(labels, _probs_with(correct, labels), 0.5, ["a", "b"])
        assert model["required_accuracy"] == pytest.approx(0.85)
        assert model["reliable"] is reliable, (correct, model)
    # The majority rate itself (a model that learned nothing) is far below; a lift of 0 is the floor.
    assert not model_reliability(labels, _probs_with(700, labels), 0.0, ["a", "b"])["reliable"]
    assert model_reliability(labels, _probs_with(760, labels), 0.0, ["a", "b"])["reliable"]

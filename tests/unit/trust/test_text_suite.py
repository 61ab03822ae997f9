"""The trust suite on a text model: a plain-Python keyword classifier (class c iff its keyword is in the
text, bag-of-words features) wrapped as a LoadedModel, on tiny texts with a group column. Every family
gives ok measurements (robustness, adversarial and OOD by their text checks; only their pixel checks are
skipped, with the reason), each gateable one with per-example evidence that reproduces it, and two
models are compared on them in pairs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from assay import catalogue
from assay.compare import compare_per_example
from assay.data import Dataset, Split
from assay.models.loaded import LoadedModel
from assay.trust import FAMILIES, TrustConfig, families_for, gate_config, run_trust

KEYWORDS = ("cat", "dog", "bird")
FILLER = ("the", "a", "small", "old", "saw", "near", "house", "garden", "today", "quietly", "ran", "sat")
VOCABULARY = (*KEYWORDS, *FILLER)
SMALL = TrustConfig(
    text_perturbation_n=60, text_attack_n=30, text_ood_n=40, membership_n=40, n_boot=100, seed=0
)


class KeywordPredictor:
    """Logits: 4 per occurrence of a class's keyword (lower case, whole words); features: word counts."""

    name = "python-keywords"

    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        counts = np.array(
            [[str(t).split().count(w) for w in VOCABULARY] for t in x], dtype=np.float32
        ).reshape(len(x), len(VOCABULARY))
        return 4.0 * counts[:, : len(KEYWORDS)], counts


def keyword_model(tmp_path: Path, predictor: object | None = None) -> LoadedModel:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\0")
    return LoadedModel(
        predictor or KeywordPredictor(),  # type: ignore[arg-type]
        {"arch": "keywords", "n_classes": 3, "input_shape": [], "input_kind": "text"},
        {"adapter": "python", "backend": "python"},
        0,
        weights,
        None,
    )


def split(n: int, seed: int, prefix: str) -> Split:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    texts = np.empty(n, dtype=object)
    for i, label in enumerate(y):
        words = list(rng.choice(FILLER, rng.integers(4, 9)))
        words.insert(int(rng.integers(0, len(words) + 1)), KEYWORDS[label])
        texts[i] = " ".join(words)
    groups = np.array(["north", "south"])[rng.integers(0, 2, n)]
    return Split(texts, y.astype(np.int64), np.array([f"{prefix}-{i}" for i in range(n)]), groups)


@pytest.fixture(scope="module")
def texts() -> Dataset:
    return Dataset(
        "keywords", "text", split(150, 0, "train"), split(60, 1, "val"), split(90, 2, "test"),
        list(KEYWORDS), "test texts", input_range=None,
    )  # fmt: skip


def test_every_family_measures_a_text_model(texts: Dataset, tmp_path: Path) -> None:
    result = run_trust(keyword_model(tmp_path), texts, config=SMALL)
    ms = result.measurements
    assert not [m for m in ms if m.status == "error"], [m for m in ms if m.status == "error"]
    for family in FAMILIES:
        assert any(m.status == "ok" for m in ms if m.family == family), family
    skipped = {m.name: m.details["reason"] for m in ms if m.status == "skipped"}
    # Pixel checks, CE without a baseline and the binary-task parity gaps are all that does not apply.
    assert set(skipped) == {
        "corruption_accuracy[image]", "adv_accuracy[pixels]", "ood[images]", "ood[held_out_classes]",
        "corruption_mce", "corruption_relative_mce",
        "demographic_parity_difference[group]", "equalized_odds_difference[group]",
    }, skipped  # fmt: skip
    assert "texts" in skipped["adv_accuracy[pixels]"] and "texts" in skipped["ood[images]"]
    assert "no texts of classes beyond its labels" in skipped["ood[held_out_classes]"]
    by_name = {m.name: m for m in ms}
    assert by_name["corruption_accuracy[text_casing@5]"].value == pytest.approx(
        by_name["corruption_accuracy[text_casing@5]"].details["successes"] / 60
    )
    # The model reads lower-case whole words: casing, typos and deletions hurt, repetition does not.
    assert by_name["corruption_accuracy[text_word_repetition@5]"].value == 1.0
    assert by_name["corruption_accuracy[text_casing@5]"].value < 1.0
    assert by_name["corruption_mca[text_typo]"].value < 1.0
    # One edit of the keyword flips a dog or a bird: the logits tie at 0 and the tie goes to class 0,
    # cat, so a cat text stays correct whatever the attack does to its keyword.
    evidence = result.per_example["adv_accuracy[char_greedy-edits@3]"]
    label = dict(zip(texts.test.ids.tolist(), texts.test.y.tolist(), strict=True))
    assert evidence.hits is not None and len(evidence.ids) == 30
    assert evidence.hits.tolist() == [label[i] == 0 for i in evidence.ids.tolist()]
    assert by_name["adv_edits[char_greedy-edits@3]"].value == 1.0
    success = by_name["adv_success[char_greedy-edits@3]"]
    assert success.value == pytest.approx(1 - evidence.hits.mean()) and success.n == 30
    # Docstrings have none of the keywords (uniform probabilities); a shuffled text keeps its keyword.
    assert by_name["ood_auroc[docstrings:msp]"].value > 0.95
    assert by_name["ood_auroc[shuffled:msp]"].value == pytest.approx(0.5)
    assert "Python" in by_name["ood_auroc[docstrings:msp]"].details["docstrings"]
    assert by_name["ood_auroc[docstrings:mahalanobis]"].status == "ok"
    assert any(m.name.startswith("fairness") or m.family == "fairness" for m in ms if m.status == "ok")
    assert by_name["mia_auc[loss]"].status == "ok"
    assert any(m.name.startswith("backdoor") for m in ms if m.status == "ok")
    assert result.plots["corruption_accuracy"]["severities"] == [1, 2, 3, 4, 5]


def test_held_out_classes_are_an_ood_set_where_the_data_has_them(texts: Dataset, tmp_path: Path) -> None:
    """Texts of a fourth class (fish), which the keyword model has no word for: uniform logits, so every
    score tells them from the test texts, each of which has its class's keyword; shuffled texts keep
    their keyword and stay indistinguishable, so a set is not merely scored high."""
    rng = np.random.default_rng(5)
    fish = np.array([" ".join([*rng.choice(FILLER, 5), "fish"]) for _ in range(70)], dtype=object)
    config = replace(SMALL, families=("ood",))
    result = run_trust(keyword_model(tmp_path), replace(texts, held_out=fish), config=config)
    by_name = {m.name: m for m in result.measurements}
    held = by_name["ood_auroc[held_out_classes:msp]"]
    assert held.status == "ok" and held.value > 0.95 and held.n == 90 + 40  # the test split + 40 of 70
    assert "70 texts of classes keywords holds unlabelled" in held.details["held_out_classes"]
    assert by_name["ood_auroc[shuffled:msp]"].value == pytest.approx(0.5)
    assert "ood_auroc[held_out_classes:energy]" in result.per_example
    assert "ood[held_out_classes]" not in by_name


def test_gateable_text_measurements_keep_evidence_that_reproduces_them(
    texts: Dataset, tmp_path: Path
) -> None:
    config = replace(SMALL, families=("robustness", "adversarial", "ood"))
    result = run_trust(keyword_model(tmp_path), texts, config=config)
    gateable = catalogue.trust_entries()
    named = [m for m in result.measurements if m.status == "ok" and m.name in gateable]
    assert {m.family for m in named} == {"robustness", "adversarial", "ood"}
    assert "adv_accuracy[char_greedy-edits@3]" in result.per_example
    assert "corruption_accuracy[text_keyboard@2]" in result.per_example
    assert "ood_auroc[docstrings:energy]" in result.per_example
    for m in named:
        evidence = result.per_example[m.name]
        value = evidence.replicates(np.arange(len(evidence.ids))[None, :])[0]
        assert value == pytest.approx(m.value, abs=1e-12), m.name
        assert gateable[m.name].higher_is_better == m.higher_is_better
    assert set(result.per_example) <= set(gateable)


class CaseBlind(KeywordPredictor):
    """The keyword model on lower-cased texts: casing cannot hurt it."""

    name = "python-keywords-lower"

    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return super().logits_and_features(np.array([str(t).lower() for t in x], dtype=object))


def test_two_text_models_are_compared_in_pairs_on_the_same_perturbed_texts(
    texts: Dataset, tmp_path: Path
) -> None:
    config = replace(SMALL, families=("robustness",), corruptions=("text_casing",))
    base = run_trust(keyword_model(tmp_path), texts, config=config)
    cand = run_trust(
        keyword_model(tmp_path, CaseBlind()), texts, config=config, baseline=keyword_model(tmp_path)
    )
    name = "corruption_accuracy[text_casing@5]"
    paired = compare_per_example(base.per_example[name], cand.per_example[name], n_boot=200, seed=0)
    c = paired.comparison
    assert c.candidate == 1.0 and c.delta is not None and c.delta > 0 and "mcnemar" in c.test.lower()
    assert c.p_value is not None and c.p_value < 0.05 and c.n == 60
    ce = {m.name: m for m in cand.measurements}["corruption_mce"]
    assert ce.status == "ok" and ce.value == 0.0  # no errors at all, against the baseline's


def test_the_gate_runs_the_families_a_text_rule_names() -> None:
    assert families_for(["adv_accuracy[char_greedy-edits@3]"]) == ("adversarial",)
    assert families_for(["corruption_mca[text_typo]", "ood_auroc[shuffled:energy]"]) == ("robustness", "ood")
    config = gate_config(["adv_accuracy[char_greedy-edits@3]"], n_boot=100, seed=4)
    assert config is not None and config.families == ("adversarial",) and config.seed == 4

"""The label-efficiency study: its intervals are SciPy's bootstrap on the same per-example values, the
recipes see only the drawn labels, and a planted recipe that ignores its labels is found inferior while a
recipe against itself is non-inferior everywhere (on the tiny random encoder of test_heads.py)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

pytest.importorskip("transformers")

from assay.data import Dataset
from assay.errors import UsageError
from assay.label_efficiency import (
    ALL,
    Verdict,
    few_shot_data,
    label_efficiency,
    mean_interval,
    paired_verdict,
    smallest_non_inferior,
)
from assay.models.heads import frozen_encoder_classifier
from tests.unit.models.test_heads import tiny_encoder, tiny_text_data


def test_the_paired_interval_is_scipys_percentile_bootstrap_of_the_mean_difference() -> None:
    rng = np.random.default_rng(0)
    reference = rng.random((3, 400)) < 0.7  # 3 draws x 400 examples
    candidate = np.where(rng.random((3, 400)) < 0.1, ~reference, reference)
    verdict = paired_verdict("a", "b", 8, candidate, reference, margin=0.01, n_boot=4000, seed=0)
    diff = candidate.mean(0) - reference.mean(0)
    want = scipy_stats.bootstrap(
        (diff,), np.mean, n_resamples=4000, method="percentile", rng=1
    ).confidence_interval
    # Both are percentile intervals of 4,000 resampled means: Monte Carlo error of an endpoint is about
    # se * sqrt(0.025 * 0.975 / 4000) / phi(1.96) ~ 0.043 se for each; 0.3 se is over 4 sd of the gap.
    se = diff.std(ddof=1) / np.sqrt(diff.size)
    assert abs(verdict.ci_low - want.low) < 0.3 * se and abs(verdict.ci_high - want.high) < 0.3 * se
    assert verdict.delta == pytest.approx(diff.mean())
    assert verdict.non_inferior == (verdict.ci_low > -0.01)
    low, high = mean_interval(reference.mean(0), n_boot=4000, seed=0)
    ref = scipy_stats.bootstrap((reference.mean(0),), np.mean, n_resamples=4000, method="percentile", rng=2)
    assert (
        abs(low - ref.confidence_interval.low) < 0.3 * se
        and abs(high - ref.confidence_interval.high) < 0.3 * se
    )
    with pytest.raises(UsageError, match="different draws or examples"):
        paired_verdict("a", "b", 8, candidate[:2], reference, margin=0.01, n_boot=100, seed=0)


def test_the_smallest_budget_is_read_in_order_of_labels() -> None:
    def v(k: int | None, ok: bool) -> Verdict:
        return Verdict("cheap", "ref", k, 0.0, 0.0, 0.0, 0.01, ok)

    assert smallest_non_inferior([v(None, True), v(32, True), v(8, False), v(16, True)], "cheap") == 16
    assert smallest_non_inferior([v(8, False), v(None, True)], "cheap") == ALL
    assert smallest_non_inferior([v(8, False), v(None, False)], "cheap") is None


def test_a_few_shot_draw_cuts_only_the_training_split() -> None:
    data = tiny_text_data()
    few = few_shot_data(data, 5, seed=0)
    assert np.array_equal(np.bincount(few.train.y), [5, 5])
    assert set(few.train.ids) <= set(data.train.ids)
    assert few.val is data.val and few.test is data.test
    assert few_shot_data(data, None, seed=0) is data
    assert not np.array_equal(few.train.ids, few_shot_data(data, 5, seed=1).train.ids)


def test_a_recipe_that_ignores_its_labels_is_found_inferior(tmp_path: Path) -> None:
    encoder = tiny_encoder(tmp_path / "encoder")
    data = tiny_text_data()
    seen: list[int] = []

    def frozen(few: Dataset, out: Path, seed: int) -> Path:
        seen.append(few.train.n)
        return frozen_encoder_classifier(encoder, few, out, C=10.0, seed=seed)

    def shuffled(few: Dataset, out: Path, seed: int) -> Path:
        labels = np.random.default_rng(seed).permutation(few.train.y)
        return frozen_encoder_classifier(
            encoder, replace(few, train=replace(few.train, y=labels)), out, C=10.0
        )

    doc = label_efficiency(
        data,
        {"frozen": frozen, "shuffled": shuffled, "again": frozen},
        labels_per_class=(20, None),
        seeds=(0, 1),
        reference="frozen",
        n_boot=500,
    )
    assert sorted(set(seen)) == [40, 160]  # 20 of each of 2 classes, then every label
    by = {(v["recipe"], v["labels_per_class"]): v for v in doc["verdicts"]}
    assert by[("again", 20)]["delta"] == 0.0 and by[("again", 20)]["non_inferior"]
    assert not by[("shuffled", 20)]["non_inferior"] and not by[("shuffled", None)]["non_inferior"]
    assert doc["smallest_non_inferior"] == {"shuffled": None, "again": 20}
    points = {(p["recipe"], p["labels_per_class"]): p for p in doc["points"]}
    full = points[("frozen", None)]
    assert len(full["draws"]) == 1 and len(points[("frozen", 20)]["draws"]) == 2
    assert full["ci_low"] <= full["accuracy"] <= full["ci_high"] and full["accuracy"] > 0.7
    assert "shuffled is never non-inferior" in " ".join(doc["statements"])
    with pytest.raises(UsageError, match="reference recipe 'nope'"):
        label_efficiency(data, {"frozen": frozen}, reference="nope")


def planted_document() -> dict[str, object]:
    """A study's document as label_efficiency writes it, for two recipes at 8 and all labels."""

    def point(recipe: str, k: int | None, accuracy: float) -> dict[str, object]:
        interval = {"ci_low": accuracy - 0.05, "ci_high": accuracy + 0.05}
        return {"recipe": recipe, "labels_per_class": k, "n_train": 16 if k else 160, "draws": [accuracy],
                "accuracy": accuracy, **interval, "seconds": 1.5}  # fmt: skip

    return {
        "schema": "assay.label_efficiency/1",
        "dataset": {"name": "tiny <texts>", "fingerprint": "f", "test_n": 80, "classes": 2},
        "labels_per_class": [8, None], "seeds": [0], "reference": "finetune", "margin": 0.01,
        "interval": "the interval",
        "points": [point("setfit", 8, 0.7), point("setfit", None, 0.8), point("finetune", 8, 0.6),
                   point("finetune", None, 0.9)],
        "verdicts": [{"recipe": "setfit", "reference": "finetune", "labels_per_class": 8, "delta": 0.1,
                      "ci_low": 0.02, "ci_high": 0.18, "margin": 0.01, "non_inferior": True},
                     {"recipe": "setfit", "reference": "finetune", "labels_per_class": None, "delta": -0.1,
                      "ci_low": -0.18, "ci_high": -0.02, "margin": 0.01, "non_inferior": False}],
        "smallest_non_inferior": {"setfit": 8},
        "statements": ["setfit is non-inferior to finetune (margin 1.0%) from 8 labels per class"],
    }  # fmt: skip


def test_the_page_shows_the_curve_the_statements_and_every_verdict(tmp_path: Path) -> None:
    from assay.report.label_efficiency import write_label_efficiency_report

    paths = write_label_efficiency_report(planted_document(), tmp_path, "labels")
    page = paths.html.read_text()
    assert "tiny &lt;texts&gt;" in page and "<texts>" not in page  # escaped
    assert "from 8 labels per class" in page and page.count("<svg") == 1
    assert "+10.0 pp" in page and "-10.0 pp" in page and "not shown non-inferior" in page
    assert '"smallest_non_inferior"' in paths.json.read_text()
    from tests.integration.browser import CHROMIUM, run_chromium

    if CHROMIUM is None:
        pytest.skip("headless Chromium not found; the page's HTML was checked")
    result = run_chromium(tmp_path, "--dump-dom", paths.html.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    for section_id in ("summary", "curve", "points", "verdicts"):
        assert f'<section id="{section_id}"' in result.stdout
    assert len(re.findall(r"<svg\b[^>]*\bclass=\"plot\"", result.stdout)) == 1

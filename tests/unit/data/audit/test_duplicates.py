"""Planted duplicates within and across splits: every one found, nothing else flagged."""

from __future__ import annotations

import numpy as np
import pytest

from assay.data.audit import AuditConfig, AuditContext, AuditData, run_audit
from assay.data.audit.duplicates import by_split, leaked_pairs
from assay.stats import wilson_interval

from .conftest import Planted, smooth_images


def _pairs(ctx: AuditContext, name: str) -> set[tuple[str, str]]:
    pairs = getattr(ctx, name)
    return {(str(ctx.ids[j]), str(ctx.ids[i])) for i, j in zip(pairs.i, pairs.j, strict=True)}


def test_every_planted_copy_across_splits_is_found_and_nothing_else(planted: Planted) -> None:
    ctx = AuditContext(planted.data)
    result = run_audit(ctx, ["exact_duplicates", "near_duplicates", "perceptual_duplicates", "leakage"])
    assert _pairs(ctx, "exact") == planted.exact | planted.within_train
    assert _pairs(ctx, "near") == planted.exact | planted.near | planted.within_train
    leaked = leaked_pairs(ctx)
    found = {(str(ctx.ids[j]), str(ctx.ids[i])) for i, j in zip(leaked.i, leaked.j, strict=True)}
    assert found == planted.exact | planted.near | planted.brightness | planted.within_train

    leak = result.get("leakage[test:train]")
    n_planted = len(planted.exact | planted.near | planted.brightness)
    assert leak.details["count"] == n_planted  # recall 1, precision 1
    assert leak.value == pytest.approx(n_planted / 100)
    assert (leak.ci_low, leak.ci_high) == pytest.approx(wilson_interval(n_planted, 100))
    assert result.get("exact_duplicates[test:train]").details["count"] == len(planted.exact)
    assert result.get("near_duplicates[test:train]").details["count"] == len(planted.exact | planted.near)
    assert result.get("exact_duplicates[train]").details["count"] == len(planted.within_train)
    assert result.get("exact_duplicates[test]").details["count"] == 0
    perceptual = result.get("perceptual_duplicates[test:train]")
    assert {(e["id"], e["match"]) for e in perceptual.details["examples"]} >= planted.brightness


def test_pairs_carry_their_true_distance(planted: Planted) -> None:
    ctx = AuditContext(planted.data)
    m = run_audit(ctx, ["near_duplicates"]).get("near_duplicates[test:train]")
    position = {i: k for k, i in enumerate(ctx.ids.tolist())}
    flat = ctx.raw.astype(np.float64)
    distances = [e["distance"] for e in m.details["examples"]]
    assert distances == sorted(distances)
    for e in m.details["examples"]:
        a, b = flat[position[e["id"]]], flat[position[e["match"]]]
        assert e["distance"] == pytest.approx(np.sqrt(((a - b) ** 2).mean()), abs=1e-9)
        assert e["distance"] <= ctx.config.image_distance


def test_thresholds_are_configurable(planted: Planted) -> None:
    strict = AuditContext(planted.data, AuditConfig(image_distance=0.0, phash_correlation=1.0, phash_bits=0))
    result = run_audit(strict, ["near_duplicates"])
    assert result.get("near_duplicates[test:train]").details["count"] == len(planted.exact)
    assert result.get("near_duplicates[test:train]").details["threshold"] == 0.0


def test_split_pairs_are_ordered_earlier_to_later(planted: Planted) -> None:
    ctx = AuditContext(planted.data)
    for group in by_split(ctx, ctx.near):
        assert group.earlier in ("train", "test") and group.later in ("train", "test")
        assert not (group.earlier == "test" and group.later == "train")


def test_large_images_are_compared_on_a_thumbnail() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (30, 3, 64, 64)).astype(np.float32)
    test = x[:5].copy()
    data = AuditData.from_arrays(
        {"train": (x, rng.integers(0, 2, 30)), "test": (test, rng.integers(0, 2, 5))}
    )
    ctx = AuditContext(data)
    assert ctx.space[1] == "32x32 area-averaged thumbnail"
    assert ctx.space[0].shape == (35, 3 * 32 * 32)
    assert run_audit(ctx, ["near_duplicates"]).get("near_duplicates[test:train]").details["count"] == 5


def test_image_contamination_against_a_reference_corpus(planted: Planted) -> None:
    test = planted.data.splits["test"]
    rng = np.random.default_rng(3)
    reference_x = np.concatenate([smooth_images(50, 21), test.x[[20, 30, 40]]])
    reference_x[-1] = np.clip(reference_x[-1] + rng.normal(0, 0.005, reference_x[-1].shape), 0, 1)
    reference = AuditData.from_arrays({"corpus": (reference_x, np.zeros(53, np.int64))}, name="corpus")
    m = run_audit(AuditContext(planted.data, reference=reference), ["contamination"]).get(
        "contamination[test]"
    )
    assert m.details["flagged_ids"] == ["test-20", "test-30", "test-40"]
    assert {e["match"] for e in m.details["examples"]} == {
        "reference:corpus-50",
        "reference:corpus-51",
        "reference:corpus-52",
    }
    assert m.value == pytest.approx(0.03)


def test_contamination_is_skipped_without_a_reference(planted: Planted) -> None:
    m = run_audit(AuditContext(planted.data), ["contamination"]).get("contamination")
    assert m.status == "skipped" and "--reference" in m.details["reason"]

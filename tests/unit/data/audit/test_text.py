"""Text near duplicates against brute-force Jaccard; 13-gram contamination with planted overlaps."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from assay.data.audit import AuditContext, AuditData, AuditSplit, run_audit
from assay.data.audit.text import jaccard, minhash_pairs, ngram_overlap, shingles

WORDS = [
    "model",
    "data",
    "train",
    "test",
    "split",
    "label",
    "image",
    "text",
    "table",
    "value",
    "score",
    "metric",
    "loss",
    "batch",
    "epoch",
    "layer",
    "weight",
    "gradient",
    "sample",
    "noise",
    "error",
    "rate",
    "class",
    "group",
    "field",
    "column",
    "row",
    "record",
    "audit",
    "check",
    "report",
    "share",
]


def _corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 30)) for _ in range(n)]


def test_minhash_pairs_equal_the_brute_force_pairs_above_the_threshold() -> None:
    rng = np.random.default_rng(1)
    texts = _corpus(80, 1)
    for k in range(0, 20, 2):  # near copies: a few words changed
        words = texts[k].split()
        for w in rng.choice(len(words), k // 4 + 1, replace=False):
            words[w] = rng.choice(WORDS)
        texts[k + 1] = " ".join(words)
    texts[30] = texts[31] = "exactly the same text in two rows"
    ours = minhash_pairs(texts, threshold=0.7)
    sets = [shingles(t) for t in texts]
    truth = {
        (i, j) for i, j in itertools.combinations(range(len(texts)), 2) if jaccard(sets[i], sets[j]) >= 0.7
    }
    found = {(int(i), int(j)) for i, j in zip(ours.i, ours.j, strict=True)}
    assert found <= truth  # every reported pair is verified exactly
    assert found == truth and len(truth) >= 8 and (30, 31) in found
    for i, j, d in zip(ours.i, ours.j, ours.distance, strict=True):
        assert d == pytest.approx(1 - jaccard(sets[i], sets[j]))


def test_ngram_overlap_flags_planted_passages_only() -> None:
    reference = _corpus(50, 2)
    texts = _corpus(40, 3)
    for k in range(5):
        texts[k] = "intro words " + " ".join(reference[k].split()[:15]) + " more"  # 15 shared words
    texts[5] = " ".join(reference[6].split()[:12])  # only 12 words: shorter than one 13-gram
    share, hit = ngram_overlap(texts, reference, n=13)
    assert hit[:5].all() and not hit[5:].any()
    assert np.isnan(share[5])
    assert (share[:5] > 0).all()


def test_text_checks_on_a_table_with_planted_overlap() -> None:
    reference = _corpus(30, 4)
    train_texts, test_texts = _corpus(60, 5), _corpus(20, 6)
    test_texts[0] = reference[3]
    test_texts[1] = train_texts[7]  # leaked from train word for word
    splits = {}
    for name, texts in (("train", train_texts), ("test", test_texts)):
        frame = pd.DataFrame({"body": texts})
        splits[name] = AuditSplit(
            ids=np.char.add(f"{name}-", np.arange(len(texts)).astype(str)),
            labels=np.zeros(len(texts), np.int64),
            x=np.zeros((len(texts), 0), np.float32),
            frame=frame,
        )
    data = AuditData("texts", "table", splits, ["only"], "texts", text_columns=["body"])
    ctx = AuditContext(data, reference_texts=reference)
    result = run_audit(ctx, ["text_duplicates", "contamination", "leakage", "near_duplicates", "outliers"])
    leak = result.get("leakage[test:train]")
    assert leak.details["count"] == 1 and leak.details["examples"][0]["id"] == "test-1"
    assert result.get("near_duplicates").status == "skipped"  # no numeric columns
    assert result.get("outliers").status == "skipped"
    dup = result.get("text_duplicates.body[test:train]")
    assert dup.details["count"] == 1
    assert dup.details["examples"][0] == {"id": "test-1", "match": "train-7", "distance": 0.0}
    contaminated = result.get("contamination.body[test]")
    assert contaminated.details["flagged_ids"] == ["test-0"]

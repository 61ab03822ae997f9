"""SetFit-style few-shot learning: the pairs are SetFit's, the contrastive step pulls same-class texts
together on the features the head reads, and the saved classifier is the head fitted on those features
(on the tiny random encoder of test_heads.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from assay.errors import UsageError
from assay.models import heads
from assay.train.setfit import (
    SetFitConfig,
    contrastive_finetune,
    contrastive_pairs,
    per_class,
    setfit_classifier,
)
from tests.unit.models.test_adapter_hf import stage_and_load
from tests.unit.models.test_heads import assert_probabilities_match, tiny_encoder, tiny_text_data


def test_every_text_gets_one_positive_and_one_negative_partner_per_iteration() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])  # class 2 has one text: no positive partner for it
    left, right, target = contrastive_pairs(labels, iterations=3, seed=0)
    assert len(left) == len(right) == len(target) == 3 * (2 * 6 - 1)
    assert np.array_equal(target == 1.0, labels[left] == labels[right])
    assert np.all(left != right)
    for i in range(6):
        mine = left == i
        assert int((target[mine] == 0).sum()) == 3
        assert int((target[mine] == 1).sum()) == (0 if i == 5 else 3)
    again = contrastive_pairs(labels, iterations=3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((left, right, target), again, strict=True))
    other = contrastive_pairs(labels, iterations=3, seed=1)
    assert not np.array_equal(left, other[0])
    capped = contrastive_pairs(labels, iterations=3, seed=0, max_pairs=7)
    assert len(capped[0]) == 7 and np.array_equal(capped[0], left[:7])
    with pytest.raises(UsageError, match="two classes"):
        contrastive_pairs(np.zeros(4, dtype=int), iterations=1, seed=0)


def test_per_class_draws_k_of_each_class_or_says_which_is_short() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2] * 7)
    rows = per_class(labels, 4, seed=0)
    assert np.array_equal(np.bincount(labels[rows]), [4, 4, 4]) and np.all(np.diff(rows) > 0)
    assert not np.array_equal(rows, per_class(labels, 4, seed=1))
    with pytest.raises(UsageError, match="Class 1 has 5 training examples; 6 per class"):
        per_class(labels, 6, seed=0)


def encoder_dir(tmp_path: Path) -> Path:
    """The tiny encoder with BERT's own initialisation (0.02): every text starts at nearly the same
    embedding, and the pooler's tanh is not saturated, so a few dozen steps train it."""
    return tiny_encoder(tmp_path / "enc", initializer_range=0.02)


def _separation(encoder: heads.FrozenEncoder, texts: np.ndarray, labels: np.ndarray) -> float:
    """Mean cosine of same-class pairs minus mean cosine of different-class pairs of the head's inputs."""
    f = encoder.embed(texts).astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    cos = f @ f.T
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    return float(cos[same & off].mean() - cos[~same].mean())


def test_the_contrastive_step_pulls_same_class_texts_together(tmp_path: Path) -> None:
    data = tiny_text_data()
    encoder = heads.FrozenEncoder.open(encoder_dir(tmp_path), data.class_names, tmp_path / "w")
    rows = per_class(data.train.y, 8, seed=0)
    before = _separation(encoder, data.test.x, data.test.y)
    config = SetFitConfig(iterations=20, lr=3e-3, batch_size=8, precision="fp32", max_pairs=None)
    done = contrastive_finetune(encoder, data.train.x[rows], data.train.y[rows], config, progress=False)
    after = _separation(encoder, data.test.x, data.test.y)
    assert done["pairs"] == 20 * 2 * 16 and done["positive_pairs"] == 20 * 16
    assert done["loss_last"] < done["loss_first"] / 4
    # On held-out texts: the random encoder (BERT's initialisation) gives every text nearly the same
    # embedding; trained on 16 texts it tells the classes apart.
    assert before < 0.05 and after > 0.5, (before, after)


def test_the_saved_classifier_is_the_head_on_the_tuned_features(tmp_path: Path) -> None:
    data = tiny_text_data()
    rows = per_class(data.train.y, 8, seed=0)
    config = SetFitConfig(iterations=20, lr=3e-3, batch_size=8, precision="fp32", C=10.0)
    out = setfit_classifier(encoder_dir(tmp_path), data, tmp_path / "setfit", rows=rows, config=config)
    about = json.loads((out / heads.PROVENANCE).read_text())
    assert about["recipe"] == "setfit" and about["n_train"] == 16 and about["contrastive"]["pairs"] == 640
    loaded = stage_and_load(out, tmp_path)
    logits, features = loaded.predictor.logits_and_features(data.test.x)
    assert features is not None
    # The head was fitted on these same (tuned) features: refit it and compare probabilities.
    _, train_features = loaded.predictor.logits_and_features(data.train.x[rows])
    assert train_features is not None
    head = heads.fit_head(train_features, data.train.y[rows], C=10.0)
    assert_probabilities_match(logits, features, head)
    assert float((logits.argmax(1) == data.test.y).mean()) > 0.75
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_setfit_refuses_labels_that_miss_a_class(tmp_path: Path) -> None:
    data = tiny_text_data()
    rows = np.flatnonzero(data.train.y == 0)[:6]
    with pytest.raises(UsageError, match="cover 1 of 2 classes"):
        setfit_classifier(encoder_dir(tmp_path), data, tmp_path / "out", rows=rows)
    assert not (tmp_path / "out").exists()

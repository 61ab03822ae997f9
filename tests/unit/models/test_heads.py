"""Frozen-encoder heads: a logistic regression fitted on a frozen BERT encoder's embeddings, saved as a
BertForSequenceClassification, gives through the hf adapter the regression's own probabilities (to
float32 rounding), on a tiny random encoder built here and (in test_adapter_hf.py) on the real MiniLM.

Tolerance: the saved head computes ``W f + b`` in float32 with W and b rounded to float32 once, where
scikit-learn computes it in float64 from the same float32 features f; each logit is then within
(gamma(D + 1) + u) (|W| |f| + |b|) of sklearn's, and a softmax moves no probability by more than half the
largest logit error (its Jacobian's rows sum to at most 2 p (1 - p) <= 1/2 in absolute value)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from transformers import BertModel

from assay.data import Dataset, Split
from assay.errors import DataError, UsageError
from assay.models import heads
from assay.models.adapters import hf
from assay.models.heads import FrozenEncoder, fit_head, head_weights, packaged_minilm, training_subset
from tests.unit.models.test_adapter_hf import stage_and_load, tiny_bert_config, tiny_tokenizer
from tests.unit.tolerances import U32, gamma

POSITIVE = ["good", "great", "fun"]
NEGATIVE = ["bad", "boring", "not"]
FILLER = ["the", "film", "plot", "was", "and", "a", "very", "it", "i", "saw"]
TOPICS = {
    "sport": ["The striker scored a late goal", "Our team won the match", "He ran a marathon",
              "The tennis final went to five sets", "The coach praised the defence", "A penalty decided it"],
    "food": ["She baked a loaf of sourdough bread", "The soup needs more salt", "We grilled vegetables",
             "This curry is rich and spicy", "Fresh pasta with basil and tomato", "The cake is in the oven"],
    "weather": ["Heavy rain is expected tomorrow", "A cold wind blew from the north", "Sunny skies all week",
                "Snow covered the hills overnight", "Thunderstorms rolled in at dusk", "Fog in the valley"],
}  # fmt: skip


def minilm_folder() -> Path:
    """The packaged MiniLM encoder, or a skip saying it is absent."""
    try:
        return packaged_minilm()
    except UsageError as e:
        pytest.skip(str(e))


def topic_texts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` English sentences on three topics (sport, food, weather), with a random prefix and suffix."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(TOPICS), n)
    prefixes, suffixes = (
        ["", "Today: ", "Apparently ", "I read that "],
        ["", ".", "!", " again.", ", they say."],
    )
    texts = [
        rng.choice(prefixes) + rng.choice(list(TOPICS.values())[y]) + rng.choice(suffixes) for y in labels
    ]
    return np.array(texts, dtype=object), labels.astype(np.int64)


def tiny_texts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` short texts from the tiny vocabulary: class 1 has two positive words, class 0 two negative."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    texts = []
    for y in labels:
        words = [*rng.choice(POSITIVE if y else NEGATIVE, 2), *rng.choice(FILLER, rng.integers(1, 6))]
        texts.append(" ".join(rng.permutation(words)))
    return np.array(texts, dtype=object), labels.astype(np.int64)


def tiny_encoder(folder: Path, *, pooler: bool = True, seed: int = 0, **config: Any) -> Path:
    """A random 2-layer BertModel saved as a sentence-transformers folder (the transformer in a
    subfolder, as older ones are laid out), with the length it was 'trained' to (max_seq_length 24);
    ``config`` overrides :func:`tiny_bert_config`'s settings."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    model = BertModel(tiny_bert_config(len(tokenizer), **config)).eval()
    inner = folder / "0_Transformer"
    with hf.offline():
        model.save_pretrained(inner, safe_serialization=True)
        tokenizer.save_pretrained(inner)
    if not pooler:
        from safetensors.torch import load_file, save_file

        state = load_file(str(inner / "model.safetensors"))
        kept = {k: v for k, v in state.items() if not k.startswith("pooler.")}
        save_file(kept, str(inner / "model.safetensors"), metadata={"format": "pt"})
    (inner / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24}))
    modules = [
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder


def assert_probabilities_match(logits: np.ndarray, features: np.ndarray, head: Any) -> None:
    """Softmax of the saved classifier's float32 logits against sklearn's predict_proba on its inputs."""
    weight, bias = head_weights(head, logits.shape[1])
    w64, b64, f64 = weight.astype(np.float64), bias.astype(np.float64), features.astype(np.float64)
    logit_bound = (gamma(f64.shape[1] + 1) + U32) * (np.abs(f64) @ np.abs(w64).T + np.abs(b64))
    z = logits.astype(np.float64)
    got = np.exp(z - z.max(1, keepdims=True))
    got /= got.sum(1, keepdims=True)
    want = head.predict_proba(f64)
    bound = 0.5 * logit_bound.max(1) + 4 * U32  # plus float32's rounding of the logits themselves
    worst = np.abs(got - want).max(1)
    assert np.all(worst <= bound), (
        f"a probability is off sklearn's by {worst.max():.3g} (bound {bound.min():.3g})"
    )


@pytest.fixture
def encoder_dir(tmp_path: Path) -> Path:
    return tiny_encoder(tmp_path / "encoder")


def test_the_saved_classifier_gives_the_regressions_probabilities(encoder_dir: Path, tmp_path: Path) -> None:
    texts, labels = tiny_texts(160, seed=0)
    encoder = FrozenEncoder.open(encoder_dir, ["negative", "positive"], tmp_path / "work")
    assert encoder.predictor.max_length == 24 and not encoder.pooler_initialised  # max_seq_length is kept
    features = encoder.embed(texts)
    head = fit_head(features, labels, C=10.0)
    out = encoder.write(tmp_path / "head", head, {"C": 10.0})
    loaded = stage_and_load(out, tmp_path)
    assert loaded.manifest["max_length"] == 24  # the saved tokenizer's model_max_length carries it
    assert loaded.manifest["id2label"] == {"0": "negative", "1": "positive"}
    test_texts, test_labels = tiny_texts(80, seed=1)
    logits, got = loaded.predictor.logits_and_features(test_texts)
    assert got is not None
    assert_probabilities_match(logits, got, head)
    # the adapter's features are the embeddings the head was fitted on (the same loader, tokenizer,
    # truncation and batches), to kernel rounding; mean pooling or another truncation is off by 1e-2 or more
    _, again = loaded.predictor.logits_and_features(texts)
    assert again is not None and float(np.abs(again - features).max()) <= 1e-4
    assert float((logits.argmax(1) == test_labels).mean()) > 0.7  # chance is about 1/2
    about = json.loads((out / heads.PROVENANCE).read_text())
    assert about["C"] == 10.0 and about["pooler"] == "encoder" and about["max_length"] == 24


def test_an_encoder_without_a_pooler_gets_one_drawn_with_the_seed(tmp_path: Path) -> None:
    encoder_dir = tiny_encoder(tmp_path / "encoder", pooler=False)
    texts, labels = tiny_texts(60, seed=0)
    saved = []
    for i, seed in enumerate((3, 3, 4)):
        encoder = FrozenEncoder.open(encoder_dir, ["negative", "positive"], tmp_path / f"work{i}", seed=seed)
        assert encoder.pooler_initialised
        head = fit_head(encoder.embed(texts), labels)
        out = encoder.write(tmp_path / f"head{i}", head, {})
        saved.append((out / "model.safetensors").read_bytes())
        assert "drawn with the seed" in json.loads((out / heads.PROVENANCE).read_text())["pooler"]
    assert saved[0] == saved[1] and saved[0] != saved[2]


def test_two_classes_become_two_rows_with_the_regressions_probabilities() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(np.int64)
    head = fit_head(x, y)
    weight, bias = head_weights(head, 2)
    assert weight.shape == (2, 5) and bias.shape == (2,) and weight.dtype == np.float32
    logits = (x.astype(np.float64) @ weight.T.astype(np.float64) + bias).astype(np.float32)
    assert_probabilities_match(logits, x, head)
    three = fit_head(x, np.where(x[:, 1] > 0.5, 2, y))
    with pytest.raises(DataError, match=r"fitted on classes \[0, 1, 2\], not all 4"):
        head_weights(three, 4)


def test_the_training_subset_is_stratified_and_seeded() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    chosen = training_subset(labels, 20, seed=0)
    assert chosen.shape == (20,) and np.array_equal(np.bincount(labels[chosen]), [10, 6, 4])
    assert np.array_equal(chosen, training_subset(labels, 20, seed=0))
    assert not np.array_equal(chosen, training_subset(labels, 20, seed=1))
    assert np.array_equal(training_subset(labels, None, seed=0), np.arange(100))
    with pytest.raises(UsageError, match="n_train is 2"):
        training_subset(labels, 2, seed=0)


def test_encoders_assay_cannot_write_as_bert_are_refused(encoder_dir: Path, tmp_path: Path) -> None:
    config = encoder_dir / "0_Transformer" / "config.json"
    original = config.read_text()
    config.write_text(json.dumps({**json.loads(original), "model_type": "roberta"}))
    with pytest.raises(DataError, match="model_type is 'roberta'"):
        FrozenEncoder.open(encoder_dir, ["a", "b"], tmp_path / "work")
    config.write_text(json.dumps({**json.loads(original), "auto_map": {"AutoModel": "evil.Model"}}))
    with pytest.raises(DataError, match="auto_map"):
        FrozenEncoder.open(encoder_dir, ["a", "b"], tmp_path / "work")
    with pytest.raises(UsageError, match="at least two"):
        FrozenEncoder.open(encoder_dir, ["a"], tmp_path / "work")


def test_a_failed_write_leaves_the_old_folder(
    encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts, labels = tiny_texts(40, seed=0)
    encoder = FrozenEncoder.open(encoder_dir, ["negative", "positive"], tmp_path / "work")
    head = fit_head(encoder.embed(texts), labels)
    out = encoder.write(tmp_path / "head", head, {"C": 1.0})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    out = encoder.write(tmp_path / "head", head, {"C": 1.0})  # replacing a folder works
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(type(encoder.predictor.model), "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        encoder.write(tmp_path / "head", head, {"C": 2.0})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def tiny_text_data() -> Dataset:
    def split(prefix: str, n: int, seed: int) -> Split:
        x, y = tiny_texts(n, seed)
        return Split(x=x, y=y, ids=np.array([f"{prefix}-{i}" for i in range(n)]))

    return Dataset(
        name="tiny-texts",
        kind="text",
        train=split("train", 160, 0),
        val=split("val", 40, 1),
        test=split("test", 80, 2),
        class_names=["negative", "positive"],
        source="tests",
        input_range=None,
    )


def test_a_full_head_and_a_weaker_one_are_written_for_the_door(encoder_dir: Path, tmp_path: Path) -> None:
    data = tiny_text_data()
    full = heads.frozen_encoder_classifier(encoder_dir, data, tmp_path / "full", C=10.0)
    weak = heads.frozen_encoder_classifier(encoder_dir, data, tmp_path / "weak", C=10.0, n_train=6, seed=1)
    accuracy = {}
    for folder in (full, weak):
        loaded = stage_and_load(folder, tmp_path / folder.name)
        logits, _ = loaded.predictor.logits_and_features(data.test.x)
        accuracy[folder.name] = float((logits.argmax(1) == data.test.y).mean())
    about = {f.name: json.loads((f / heads.PROVENANCE).read_text()) for f in (full, weak)}
    assert about["full"]["n_train"] == 160 and about["weak"]["n_train"] == 6
    assert about["full"]["fingerprint"] == data.fingerprint() and about["full"]["converged"]
    assert accuracy["full"] > 0.7 and accuracy["full"] > accuracy["weak"]  # what a gate would see
    assert (full / "model.safetensors").read_bytes() != (weak / "model.safetensors").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left

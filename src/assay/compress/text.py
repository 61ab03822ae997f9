"""Compressors for Hugging Face text classifiers (imported through the hf adapter), in the same search.

    onnx_fp32         the transformers model exported to ONNX (dynamic batch and sequence axes; outputs
                      ``logits`` and ``features``, the classification head's input), run by ONNX Runtime
    ort_dynamic_int8  int8 MatMul weights, per output channel; activations quantized per call.
                      ``defaults=True``: ``quantize_dynamic`` with nothing but its required arguments on
                      the plain export, which is what Optimum's ORTQuantizer does with its defaults: the
                      "ORT defaults" anchor a search must beat or match
    ort_static_int8   QDQ int8: per-channel int8 weights, uint8 activations whose ranges are calibrated
                      (min-max) on a seeded subset of the training texts; ``exclude`` keeps named MatMuls
                      in fp32 (the search's fallback: the most damaging ones first)
    bf16              bf16 weights on disk, bf16 autocast at inference; where the CPU computes bf16
    torchao           torchao int8 weight-only or dynamic (``config``) on the linear layers
    drop_layers       the bottom ``keep`` encoder layers kept (default half), the rest dropped, then
                      fine-tuned on the training texts: on the labels alone, or (``distill=True``)
                      distilled from the parent's logits besides the labels (a shallower student of its
                      teacher, as DistilBERT); its softmax temperature is then fitted on the validation
                      texts and folded into its head

A variant's folder is an hf folder (config, tokenizer) with its runtime's file and a manifest that the hf
adapter loads (:mod:`assay.models.adapters.hf_runtimes`), so texts are tokenized, truncated and batched
exactly as the parent does. A dropped-layer variant is itself a transformers fp32 classifier, so the
other compressors build on it in the same search (``half_layers_distilled+ort_dynamic_int8``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from assay.compress.base import Built, Skipped, calibration_rows, ort_quantization, quiet
from assay.data import Dataset
from assay.env import cpu_supports_bf16
from assay.errors import MissingExtraError
from assay.executor import PackedFolder
from assay.metrics.calibration import fit_temperature
from assay.models.adapters import hf
from assay.models.adapters.files import sha256_file
from assay.models.adapters.hf_runtimes import (
    INPUTS,
    ONNX_FILE,
    TORCHAO_WEIGHTS,
    OnnxTextPredictor,
    save_torchao,
)
from assay.models.io import SPEC
from assay.plugins import Registry
from assay.train.finetune import FinetuneConfig, finetune
from assay.train.loop import Distillation

QUANTIZABLE_OPS = ("MatMul", "Gemm")
SCAN_EXAMPLES = 500  # validation texts the sensitivity scan compares predictions on
ORT_DEFAULTS = "ORT defaults: onnxruntime quantize_dynamic with its defaults, as Optimum's ORTQuantizer"


@dataclass(frozen=True)
class TextSource:
    """A stored hf text classifier: its folder (config, safetensors weights, tokenizer) and manifest."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    @property
    def num_labels(self) -> int:
        return int(self.manifest["num_labels"])

    def model(self) -> nn.Module:
        """A fresh fp32 copy of the model: compressors never touch the stored one."""
        return hf.load_pretrained(self.folder, str(self.manifest["architecture"]))

    def tokenizer(self) -> Any:
        return hf.load_tokenizer(self.folder)

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model().parameters())

    def key(self) -> str:
        """Identity of the weights, whichever folder holds them: what the context's caches are keyed by."""
        return hashlib.sha256(sha256_file(self.folder / hf.WEIGHTS).encode()).hexdigest()[:24]

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its folder's files, so that it reaches a worker on another machine."""
        return (_unpacked_source, (PackedFolder.of(self.folder), self.manifest))


def _unpacked_source(packed: PackedFolder, manifest: dict[str, Any]) -> TextSource:
    return packed.load(lambda folder: TextSource(folder, manifest))


def is_text_model(manifest: dict[str, Any]) -> bool:
    """An hf text classifier on transformers in fp32: what the text compressors build on."""
    return (
        manifest.get("adapter") == "hf"
        and manifest.get("task") == "text"
        and manifest.get("backend", "transformers") == "transformers"
        and manifest.get("precision", "fp32") == "fp32"
    )


@dataclass
class TextContext:
    """What text compressors read besides their source: the data and a seed (see
    :class:`assay.compress.base.Context`, its image counterpart)."""

    data: Dataset
    seed: int = 0
    progress: bool = False
    calibration_size: int = 256  # training texts the static ranges are calibrated on
    _calibration: np.ndarray | None = field(default=None, repr=False)
    _exports: dict[str, Path] = field(default_factory=dict, repr=False)
    _teacher_logits: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _folder: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def calibration(self) -> np.ndarray:
        """A seeded random subset of the training texts (never validation or test)."""
        if self._calibration is None:
            index = calibration_rows(self.data.train.n, self.calibration_size, self.seed)
            self._calibration = self.data.train.x[index]
        return self._calibration

    def onnx_fp32(self, source: TextSource) -> Path:
        """``source`` exported once per context (the quantizers and the sensitivity scan share it)."""
        key = source.key()
        if key not in self._exports:
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="assay-onnx-text-")
            path = Path(self._folder.name) / f"{key}.onnx"
            export_text_onnx(source, path)
            self._exports[key] = path
        return self._exports[key]

    def teacher_logits(self, source: TextSource) -> torch.Tensor:
        """``source``'s fp32 logits on the training texts, in their order, computed once per context
        (every distilled student of the same parent shares them)."""
        key = source.key()
        if key not in self._teacher_logits:
            model = hf.TextPredictor(source.model(), source.tokenizer(), source.max_length, source.num_labels)
            self._teacher_logits[key] = torch.from_numpy(model.logits_and_features(self.data.train.x)[0])
        return self._teacher_logits[key]


TextCompressor = Callable[[TextSource, TextContext, Path, dict[str, Any]], Built]
TEXT_COMPRESSORS: Registry[TextCompressor] = Registry("text_compressor")


def graph_inputs(tokenizer: Any) -> list[str]:
    """The inputs an export takes: those of ``INPUTS`` the tokenizer gives (BERT's token_type_ids
    where its tokenizer makes them), in that order."""
    names = set(tokenizer.model_input_names)
    return [n for n in INPUTS if n in names]


class _LogitsAndFeatures(nn.Module):
    """The classifier as the graph evaluation reads: logits, and the input of the classification head
    (as :class:`~assay.models.adapters.hf.TextPredictor` keeps it: for a head over every token, the last
    token the mask keeps). The head's input is taken by a forward pre-hook, which the exporter traces."""

    def __init__(self, model: nn.Module, num_labels: int, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model.eval(), names
        self._kept: torch.Tensor | None = None
        head = hf.classification_head(model, num_labels)
        if head is None:
            raise Skipped("the model has no linear head with one output per label to take features from")
        head.register_forward_pre_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self._kept = inputs[0]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        logits: torch.Tensor = self.model(**{n: given[n] for n in self.names}).logits
        kept = self._kept
        assert kept is not None  # the head ran
        if kept.ndim == 3:
            positions = torch.arange(attention_mask.shape[1])
            last = (attention_mask.bool() * positions).argmax(dim=1)
            kept = kept[torch.arange(kept.shape[0]), last]
        return logits, kept


def export_text_onnx(source: TextSource, path: Path) -> None:
    """torch.export-based ONNX export with dynamic batch and sequence axes; Skipped where it fails."""
    try:
        import onnxscript  # noqa: F401 - the exporter needs it
    except ImportError:
        raise Skipped("ONNX export needs onnx and onnxscript: pip install 'assay[compress]'") from None
    tokenizer = source.tokenizer()
    names = graph_inputs(tokenizer)
    if names[:2] != ["input_ids", "attention_mask"]:
        raise Skipped(f"the tokenizer gives {names}; the export needs input_ids and attention_mask")
    wrapper = _LogitsAndFeatures(source.model(), source.num_labels, names)
    example = tokenizer(
        ["a short text", "a somewhat longer text for the example batch"],
        padding=True,
        truncation=True,
        max_length=source.max_length,
        return_tensors="pt",
    )
    axes = {0: "batch", 1: "sequence"}
    try:
        with quiet():
            torch.onnx.export(
                wrapper,
                tuple(example[n] for n in names),
                str(path),
                input_names=names,
                output_names=["logits", "features"],
                dynamic_shapes={n: axes for n in names},
                dynamo=True,
                optimize=True,
                verbose=False,
                external_data=False,
            )
    except Exception as e:  # the exporter raises many types; each means "cannot export this model"
        raise Skipped(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


def stage_variant(source: TextSource, out: Path, **fields: Any) -> None:
    """``out`` as an hf folder for a variant: the parent's config and tokenizer, and a manifest that is
    the parent's with the variant's ``fields`` (backend, precision, ...) and the parent's parameters."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (hf.CONFIG, *hf.TOKENIZER_FILES):
        if (source.folder / name).is_file():
            shutil.copyfile(source.folder / name, out / name)
    manifest = {**source.manifest, "parameters": source.parameters(), **fields}
    (out / SPEC).write_text(json.dumps(manifest, indent=2, sort_keys=True))


@TEXT_COMPRESSORS.register("onnx_fp32")
def onnx_fp32(source: TextSource, ctx: TextContext, out: Path, params: dict[str, Any]) -> Built:
    fp32 = ctx.onnx_fp32(source)
    stage_variant(source, out, backend="onnxruntime", precision="fp32", weights=ONNX_FILE)
    shutil.copyfile(fp32, out / ONNX_FILE)
    return Built(spec=source.manifest["spec"])


@TEXT_COMPRESSORS.register("ort_dynamic_int8")
def ort_dynamic_int8(source: TextSource, ctx: TextContext, out: Path, params: dict[str, Any]) -> Built:
    """Dynamic int8: per-channel int8 MatMul weights; ``defaults=True``: ORT's defaults (the anchor)."""
    quantization = ort_quantization()
    fp32 = ctx.onnx_fp32(source)
    defaults = bool(params.get("defaults", False))
    form = ORT_DEFAULTS if defaults else "dynamic, per-channel int8 MatMul weights"
    stage_variant(source, out, backend="onnxruntime", precision="int8", weights=ONNX_FILE, quantization=form)
    with quiet():
        if defaults:
            quantization.quantize_dynamic(str(fp32), str(out / ONNX_FILE))
        else:
            quantization.quantize_dynamic(
                str(fp32),
                str(out / ONNX_FILE),
                per_channel=True,
                weight_type=quantization.QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
            )
    return Built(spec=source.manifest["spec"], notes=[form])


def _reader(quantization: Any, tokenizer: Any, texts: np.ndarray, max_length: int, batch: int = 32) -> Any:
    """ONNX Runtime's calibration reader over tokenized batches of ``texts``, as the graph takes them."""
    names = graph_inputs(tokenizer)
    batches: Iterator[dict[str, np.ndarray]] = iter(
        {
            k: np.asarray(v, dtype=np.int64)
            for k, v in tokenizer(
                list(texts[i : i + batch]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="np",
            ).items()
            if k in names
        }
        for i in range(0, len(texts), batch)
    )

    class Reader(quantization.CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(batches, None)

    return Reader()


def quantizable_nodes(path: Path) -> list[str]:
    """Names of the MatMul and Gemm nodes with a constant weight (the linear layers), in graph order:
    what static quantization turns int8 and a fallback may keep in fp32."""
    import onnx

    graph = onnx.load(str(path)).graph
    constants = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    return [n.name for n in graph.node if n.op_type in QUANTIZABLE_OPS and n.input[1] in constants]


def quantize_static_text(
    source: TextSource,
    fp32: Path,
    out: Path,
    texts: np.ndarray,
    *,
    exclude: list[str] | None = None,
    only: list[str] | None = None,
) -> None:
    quantization = ort_quantization()
    nodes = quantizable_nodes(fp32)
    with quiet():
        quantization.quantize_static(
            str(fp32),
            str(out),
            _reader(quantization, source.tokenizer(), texts, source.max_length),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
            op_types_to_quantize=list(QUANTIZABLE_OPS),
            nodes_to_quantize=only or [n for n in nodes if n not in set(exclude or [])],
        )


@TEXT_COMPRESSORS.register("ort_static_int8")
def ort_static_int8(source: TextSource, ctx: TextContext, out: Path, params: dict[str, Any]) -> Built:
    """Static QDQ int8 of the linear layers; ``params['exclude']``: MatMul/Gemm node names kept fp32."""
    exclude = list(params.get("exclude", []))
    fp32 = ctx.onnx_fp32(source)
    unknown = sorted(set(exclude) - set(quantizable_nodes(fp32)))
    if unknown:
        raise Skipped(f"no quantizable node named {unknown} in the exported graph")
    form = "static QDQ, per-channel int8 weights, uint8 activations (min-max on training texts)"
    stage_variant(
        source, out, backend="onnxruntime", precision="int8", weights=ONNX_FILE, quantization=form,
        fp32_layers=exclude,
    )  # fmt: skip
    quantize_static_text(source, fp32, out / ONNX_FILE, ctx.calibration(), exclude=exclude)
    notes = [f"kept in fp32: {', '.join(exclude)}"] if exclude else []
    return Built(spec=source.manifest["spec"], notes=notes)


def layer_sensitivity(source: TextSource, ctx: TextContext) -> list[tuple[str, float]]:
    """Each linear layer's damage when it alone is int8: the share of validation predictions (at most
    ``SCAN_EXAMPLES``) that change against fp32, worst first; ties keep graph order."""
    texts = ctx.data.val.x[:SCAN_EXAMPLES]
    fp32 = ctx.onnx_fp32(source)
    tokenizer = source.tokenizer()

    def predictions(path: Path) -> np.ndarray:
        predictor = OnnxTextPredictor(path, tokenizer, source.max_length, source.num_labels)
        return predictor.logits_and_features(texts)[0].argmax(1)

    reference = predictions(fp32)
    damage = []
    with tempfile.TemporaryDirectory() as tmp:
        for node in quantizable_nodes(fp32):
            one = Path(tmp) / "one.onnx"
            quantize_static_text(source, fp32, one, ctx.calibration(), only=[node])
            damage.append((node, float(np.mean(predictions(one) != reference))))
    return sorted(damage, key=lambda item: -item[1])


@TEXT_COMPRESSORS.register("bf16")
def bf16(source: TextSource, ctx: TextContext, out: Path, params: dict[str, Any]) -> Built:
    """bf16 weights on disk (half the size), bf16 autocast at inference; only where the CPU computes
    bf16 natively (else it would be emulated, slower than fp32)."""
    if not cpu_supports_bf16():
        raise Skipped("this CPU has no native bf16 (avx512_bf16 or amx_bf16): bf16 would be emulated")
    model: Any = source.model().to(torch.bfloat16)  # a transformers model: save_pretrained
    stage_variant(source, out, backend="transformers", precision="bf16", weights=hf.WEIGHTS)
    with hf.offline():
        model.save_pretrained(out, safe_serialization=True)
    return Built(spec=source.manifest["spec"], notes=["bf16 weights; matrix products in bf16 autocast"])


@TEXT_COMPRESSORS.register("torchao")
def torchao(source: TextSource, ctx: TextContext, out: Path, params: dict[str, Any]) -> Built:
    """A torchao configuration (``params['config']``) on the linear layers, probed on one batch: no
    kernel, no variant."""
    from assay.models.backends import import_torchao, torchao_config

    config = str(params.get("config", "int8_dynamic"))
    tokenizer = source.tokenizer()
    example = tokenizer(list(ctx.calibration()[:2]), padding=True, truncation=True,
                        max_length=source.max_length, return_tensors="pt")  # fmt: skip
    try:
        with quiet():
            model = source.model()
            import_torchao().quantize_(model, torchao_config(config))
            with torch.inference_mode():
                model(**example)
    except MissingExtraError as e:
        raise Skipped(str(e)) from None
    except (RuntimeError, NotImplementedError, TypeError) as e:  # a kernel this machine does not have
        raise Skipped(f"torchao {config} does not run here: {str(e).splitlines()[0][:200]}") from None
    stage_variant(source, out, backend="torchao", precision="int8", weights=TORCHAO_WEIGHTS, config=config)
    save_torchao(model, out / TORCHAO_WEIGHTS)
    return Built(spec=source.manifest["spec"], notes=[f"torchao {config} on the linear layers"])


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the one ``nn.ModuleList`` as long as the config's
    ``num_hidden_layers`` (``model.bert.encoder.layer`` in BERT and MiniLM, ``transformer.layer`` in
    DistilBERT); Skipped where there is not exactly one."""
    n = int(getattr(getattr(model, "config", None), "num_hidden_layers", 0) or 0)
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n and n > 0]
    if len(stacks) != 1:
        raise Skipped(f"no single stack of {n} encoder layers to drop layers from ({len(stacks)} found)")
    return stacks[0]


@TEXT_COMPRESSORS.register("drop_layers")
def drop_layers(source: TextSource, ctx: TextContext, out: Path, params: dict[str, Any]) -> Built:
    """``params``: ``keep`` (how many of the bottom encoder layers stay; default half), ``distill``
    (False: labels only; True: the parent's logits too, ``temperature`` 4 and ``alpha`` 0.7 as for the
    CNN), ``calibrate`` (default True: :func:`fold_temperature`), and the fine-tuning settings of
    :class:`~assay.train.finetune.FinetuneConfig` (``epochs`` 3, ``lr`` 5e-5, ...).

    The top layers go and the bottom ones stay: of the ways to drop layers from a pretrained encoder
    before fine-tuning, dropping the top ones kept the most accuracy (Sajjad et al., "On the effect of
    dropping layers of pre-trained transformer models", 2023), and the embeddings need no re-mapping."""
    distill = bool(params.get("distill", False))
    model: Any = source.model()
    layers = encoder_layers(model)
    n = len(layers)
    keep = int(params.get("keep", max(1, n // 2)))
    if not 1 <= keep < n:
        raise Skipped(f"keep={keep}: choose between 1 and {n - 1} of the {n} layers")
    del layers[keep:]
    model.config.num_hidden_layers = keep
    calibrate = bool(params.get("calibrate", True))
    if calibrate:
        calibration_head(model, source.num_labels)  # Skipped now, not after minutes of training
    own = ("keep", "distill", "temperature", "alpha", "calibrate")
    tuning = {k: v for k, v in params.items() if k not in own}
    config = FinetuneConfig.parse({"seed": ctx.seed, **tuning})
    kd = (
        Distillation(
            ctx.teacher_logits(source),
            temperature=float(params.get("temperature", 4.0)),
            alpha=float(params.get("alpha", 0.7)),
        )
        if distill
        else None
    )
    result = finetune(
        model, source.tokenizer(), ctx.data, config, max_length=source.max_length, progress=ctx.progress,
        description=f"{keep} layers" + (", distilled" if kd else ""), distillation=kd,
    )  # fmt: skip
    calibration = fold_temperature(result.model, source, ctx.data) if calibrate else None
    parameters = sum(p.numel() for p in result.model.parameters())
    stage_variant(
        source, out, backend="transformers", precision="fp32", weights=hf.WEIGHTS, parameters=parameters
    )
    with hf.offline():
        result.model.save_pretrained(out, safe_serialization=True)  # type: ignore[operator]
    kind = "distillation" if kd else "fine-tuning"
    training = {**result.summary(), "kind": kind, "layers_kept": keep}
    if kd is not None:
        training |= {"temperature": kd.temperature, "alpha": kd.alpha}
    notes = [f"the bottom {keep} of {n} encoder layers, fine-tuned " + (
        f"distilled from the parent (T={kd.temperature}, alpha={kd.alpha})" if kd else "on the labels"
    )]  # fmt: skip
    if calibration is not None:
        training["calibration_temperature"] = calibration
        notes.append(f"logits divided by {calibration:.3f} (temperature scaling on the validation texts)")
    spec = {**source.manifest["spec"], "num_hidden_layers": keep}
    return Built(spec=spec, training=training, notes=notes)


def calibration_head(model: nn.Module, num_labels: int) -> nn.Linear:
    """The head :func:`fold_temperature` scales (a dataset always has validation texts to fit it on);
    Skipped where there is none."""
    head = hf.classification_head(model, num_labels)
    if head is None:
        raise Skipped("calibrate=True needs a linear head with one output per label; pass calibrate=False")
    return head


def fold_temperature(model: nn.Module, source: TextSource, data: Dataset) -> float:
    """Temperature scaling (Guo et al. 2017) fitted on ``data.val`` and folded into the classification
    head (its weight and bias divided by T), so the saved model's own logits are the calibrated ones and
    every runtime built on it inherits them; the predictions do not change. Returns T.

    A student's softmax scale is a by-product of its training (distillation matches the teacher at
    T = 4, not at 1): on fortunes, MiniLM's distilled 3-layer student was 1.3 points more accurate than
    its parent but more confident, at 0.05 nats more NLL; scaled (T = 1.52), 0.05 nats less
    (docs/compression.md)."""
    head = calibration_head(model, source.num_labels)
    predictor = hf.TextPredictor(model, source.tokenizer(), source.max_length, source.num_labels)
    temperature = fit_temperature(predictor.logits_and_features(data.val.x)[0], data.val.y)
    with torch.no_grad():
        head.weight.div_(temperature)
        if head.bias is not None:
            head.bias.div_(temperature)
    return temperature


def text_flops(source: TextSource, tokens: int) -> int:
    """Floating-point operations of one forward pass on one text of ``tokens`` tokens (at most the
    truncation length), counted by torch: the FLOP model of the hardware bound on speedups."""
    n = min(tokens, source.max_length)
    names = graph_inputs(source.tokenizer())
    ones = torch.ones(1, n, dtype=torch.long)
    given = {"input_ids": ones, "attention_mask": ones, "token_type_ids": torch.zeros_like(ones)}
    model = source.model()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(**{k: given[k] for k in names})
    return int(counter.get_total_flops())

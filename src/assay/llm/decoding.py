"""Decoding measured the way the field measures it, and against the physical limit.

At batch 1 a decode step reads every weight once (and the KV cache so far) to make one token, so a
small model on a CPU is bound by memory bandwidth, not arithmetic: the fastest it can go is the
machine's bandwidth over the bytes a step reads. :func:`roofline` states that limit and the share of
it a measured rate reaches.

Timing follows vLLM's ``bench serve`` definitions: TTFT (time to first token) is the prefill of the
prompt up to the first generated token; TPOT (time per output token) is the mean of the later steps,
``(total - TTFT) / (tokens - 1)``; ITL (inter-token latency) is each step's own time, whose percentiles
are reported. Decoding is greedy, through the model's KV cache, one token a step (:class:`GreedyDecoder`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from assay.llm.causal import LanguageModel, weight_bytes
from assay.llm.kernels import c_shims
from assay.llm.kv_cache import check_kv, new_cache


@dataclass(frozen=True)
class DecodeTiming:
    """One greedy generation: the prompt's length, the prefill time and each later step's time (s)."""

    prompt_tokens: int
    ttft: float
    itl: np.ndarray  # seconds of each step after the first token
    batch: int = 1  # sequences decoded together
    generated: np.ndarray | None = None  # (batch, tokens) token ids

    @property
    def tokens(self) -> int:
        return 1 + len(self.itl)

    @property
    def tpot(self) -> float:
        return float(self.itl.mean())

    @property
    def tokens_per_second(self) -> float:
        """The decode rate: a token per sequence every TPOT, over the batch."""
        return self.batch / self.tpot

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.tokens,
            "ttft_ms": 1e3 * self.ttft,
            "tpot_ms": 1e3 * self.tpot,
            "itl_p50_ms": 1e3 * float(np.percentile(self.itl, 50)),
            "itl_p99_ms": 1e3 * float(np.percentile(self.itl, 99)),
            "tokens_per_second": self.tokens_per_second,
        }


DECODE_MODES = ("dynamic", "static", "compiled", "aot")
# How the compiled mode's step is compiled (inductor's options for that one compilation): ``plain``,
# inductor's defaults; ``frozen``, the weights folded into the graph as constants (``freezing``) and the
# kernels called from C++ (``cpp_wrapper``), not a Python function per graph; ``autotuned``, frozen and
# each matrix product timed against inductor's own C++ GEMM templates, the faster kept (``max_autotune``).
# On an AVX2-only EPYC neither beat ``plain`` by more than the run-to-run spread (docs/llm.md), and
# ``autotuned`` compiles for minutes when its timings are not cached, so ``plain`` is the default.
COMPILE_PRESETS: dict[str, dict[str, Any]] = {
    "plain": {},
    "frozen": {"freezing": True, "cpp_wrapper": True},
    "autotuned": {"freezing": True, "cpp_wrapper": True, "max_autotune": True},
}


ATTENTION = ("sdpa", "eager", "assay")


class GreedyDecoder:
    """Greedy decoding of a batch of equal-length prompts, one token a step, timed.

    ``mode``: ``dynamic``, transformers' growing KV cache (new tensors every step); ``static``, a cache
    allocated once for ``max_context`` tokens and written in place; ``compiled``, the static cache with
    the decode step compiled by ``torch.compile`` as ``compile_preset`` says (:data:`COMPILE_PRESETS`;
    fixed shapes: one compilation per batch size, paid on its first run); ``aot``, the static cache with
    the decode step exported by ``torch.export`` and compiled ahead of time by AOTInductor into a
    library called with the two inputs of a step (one export and compilation per batch size, on its
    first run). ``torch.compile``'s step gathers every weight and cache tensor from the modules in Python
    and checks its guards on each call (2 to 3 ms of a 9 to 12 ms step on SmolLM2-135M); the library holds
    them as its constants, here the model's and the cache's own tensors (nothing is copied), and runs
    the whole step in C++. The prefill runs eagerly into the same cache. End-of-sequence is ignored: the
    length is the experiment's.

    ``kv`` (the variant's own, :attr:`LanguageModel.kv`, by default): ``model``, keys and values kept as
    the model computes them; ``fp8``, kept in 8-bit floating
    point (a quarter of fp32's bytes) by transformers' ``QuantizedCache(backend="fp8")``, whose scale per
    layer is set by the prefill (later values past it saturate). The prefill attends to its own keys
    unquantized, so the first token is the full cache's; every later step reads the dequantized cache.
    Dynamic mode only: the quantized cache grows by concatenation.

    ``attention``: transformers' attention implementation the steps run with (:data:`ATTENTION`), set on
    the model at each run, so decoders sharing a model each get their own; None keeps the model's. ``sdpa``
    calls PyTorch's fused kernel once per layer; ``eager`` is plain matrix products and a softmax, which
    inductor fuses with the rest of the compiled step into its own loops: on a 2-vCPU Zen 4 EPYC the
    compiled int8 step ran 1.16x to 1.48x faster with it at batch 1 (two runs) and 1.34x at batch 16,
    the same tokens (docs/llm.md); ``assay``, assay's own operator for a one-token step
    (:mod:`assay.llm.attention`; SDPA for the prefill), which inductor cannot fuse into a loop that
    recomputes the rotary embedding, as it did ``eager``'s: the fastest exported step.
    """

    def __init__(
        self,
        lm: LanguageModel,
        mode: str = "dynamic",
        max_context: int = 512,
        kv: str | None = None,
        compile_preset: str = "plain",
        attention: str | None = None,
    ) -> None:
        kv = lm.kv if kv is None else kv
        if mode not in DECODE_MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(DECODE_MODES)}")
        if check_kv(kv) != "model" and mode != "dynamic":
            raise ValueError(f"kv {kv!r}: fp8 in dynamic mode only")
        if compile_preset not in COMPILE_PRESETS:
            raise ValueError(f"compile_preset {compile_preset!r}: one of {', '.join(COMPILE_PRESETS)}")
        if attention is not None and attention not in ATTENTION:
            raise ValueError(f"attention {attention!r}: one of {', '.join(ATTENTION)}")
        if attention == "assay":
            from assay.llm.attention import register

            register()
        self.lm, self.mode, self.max_context, self.kv = lm, mode, max_context, kv
        self.attention = attention
        self._step = self._aot_step if mode == "aot" else self._forward
        if mode == "compiled":
            options = COMPILE_PRESETS[compile_preset]
            self._step = torch.compile(self._forward, dynamic=False, options=options)
        # A static cache is allocated once per batch size and reset between runs: the compiled step keeps
        # its buffers' addresses (transformers marks them static), so a new cache each run would not be
        # the one a frozen graph writes to
        self._static: dict[int, Any] = {}
        self._exported: dict[int, Any] = {}  # batch size -> the AOTInductor step over its static cache

    def _forward(self, ids: torch.Tensor, position: torch.Tensor, cache: Any) -> torch.Tensor:
        out = self.lm.model(input_ids=ids, cache=cache, use_cache=True, cache_position=position)
        return out.logits[:, -1:]

    def _cache(self, batch: int) -> Any:
        from transformers import StaticCache

        config: Any = self.lm.model.config
        if self.mode == "dynamic":
            return new_cache(config, self.kv)
        if batch in self._static:
            self._static[batch].reset()
        else:
            self._static[batch] = StaticCache(config=config, max_cache_len=self.max_context)
            if self.mode == "aot":  # export needs the cache's tensors before the prefill makes them
                from transformers.configuration_utils import get_head_shapes

                heads, width = get_head_shapes(config)
                dtype = next(self.lm.model.parameters()).dtype
                self._static[batch].early_initialization(batch, heads, width, dtype, torch.device("cpu"))
        return self._static[batch]

    def _aot_step(self, ids: torch.Tensor, position: torch.Tensor, cache: Any) -> torch.Tensor:
        """The step through this batch size's AOTInductor library, exported and compiled on first use."""
        batch = ids.shape[0]
        if batch not in self._exported:
            self._exported[batch] = _export_step(self.lm.model, cache, ids, position)
        return self._exported[batch](ids, position)

    @torch.inference_mode()
    def run(self, prompts: list[list[int]], new_tokens: int) -> DecodeTiming:
        """Generate ``new_tokens`` after each prompt (all of one length), timing the prefill and each step."""
        if new_tokens < 2:
            raise ValueError("timing decode steps needs at least 2 new tokens")
        if len({len(p) for p in prompts}) != 1 or len(prompts[0]) + new_tokens > self.max_context:
            raise ValueError(f"prompts of one length, and prompt plus new tokens within {self.max_context}")
        if self.attention is not None:
            self.lm.model.set_attn_implementation(self.attention)  # type: ignore[operator]
        ids, cache = torch.tensor(prompts), self._cache(len(prompts))
        length = ids.shape[1]
        started = time.perf_counter()
        token = self._forward(ids, torch.arange(length), cache).argmax(-1)
        ttft = time.perf_counter() - started
        steps, generated = np.empty(new_tokens - 1), [token]
        for i in range(new_tokens - 1):
            begin = time.perf_counter()
            token = self._step(token, torch.tensor([length + i]), cache).argmax(-1)
            steps[i] = time.perf_counter() - begin
            generated.append(token)
        tokens = torch.cat(generated, dim=1).numpy()
        return DecodeTiming(length, ttft, steps, batch=len(prompts), generated=tokens)


class _CachedStep(nn.Module):
    """A decode step as ``torch.export`` takes it: the model and a static cache whose tensors are this
    module's buffers, so the exported program holds them; logits of the last position out."""

    def __init__(self, model: nn.Module, cache: Any) -> None:
        super().__init__()
        self.model, self.cache = model, cache
        for i, layer in enumerate(cache.layers):
            self.register_buffer(f"key_cache_{i}", layer.keys, persistent=False)
            self.register_buffer(f"value_cache_{i}", layer.values, persistent=False)
            self.register_buffer(f"cumulative_length_{i}", layer.cumulative_length, persistent=False)

    def forward(self, ids: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        # Each layer counts the tokens it holds in a one-element buffer; AOTInductor folds such a buffer
        # into its value at compile time (pytorch/pytorch#165444), so every step would write position 0.
        # Setting it from the position each step, as transformers' own export wrapper does, avoids that.
        for layer in self.cache.layers:
            layer.cumulative_length.copy_(position[0])
        out = self.model(input_ids=ids, cache=self.cache, use_cache=True, cache_position=position)
        return out.logits[:, -1:]


def _export_step(model: nn.Module, cache: Any, ids: torch.Tensor, position: torch.Tensor) -> Any:
    """The decode step of ``model`` over ``cache`` exported (at these inputs' shapes) and compiled by
    AOTInductor; its constants are the model's and the cache's own tensors, loaded by reference."""
    step = _CachedStep(model, cache).eval()
    with torch.no_grad():
        program = torch.export.export(step, (ids, position), strict=True)
    with tempfile.TemporaryDirectory() as folder:
        package = torch._inductor.aoti_compile_and_package(
            program,
            package_path=f"{folder}/step.pt2",
            inductor_configs={
                "aot_inductor.package_constants_in_so": False,
                "aot_inductor.custom_ops_to_c_shims": c_shims(),
            },
        )
        runner = torch._inductor.aoti_load_package(package)
    tensors = dict(step.named_parameters()) | dict(step.named_buffers())
    constants = {name: tensors[name] for name in runner.get_constant_fqns()}
    runner.load_constants(constants, check_full_update=True, user_managed=True)
    return runner


def weight_bytes_read(model: nn.Module) -> int:
    """Bytes of weights one decode step reads: every weight as stored, except an embedding table that no
    other layer shares, of which a step reads one row (a tied output head reads the whole table)."""
    tables = {id(m.weight): m for m in model.modules() if isinstance(m, nn.Embedding)}
    shared = {
        id(t) for m in model.modules() if not isinstance(m, nn.Embedding)
        for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))
    }  # fmt: skip
    unread = [m for key, m in tables.items() if key not in shared]
    table_bytes = sum(m.weight.numel() * m.weight.element_size() for m in unread)
    row_bytes = sum(m.weight.shape[1] * m.weight.element_size() for m in unread)
    return weight_bytes(model) - table_bytes + row_bytes


def kv_cache_bytes(lm: LanguageModel, context: int, batch: int = 1, kv: str | None = None) -> int:
    """Bytes of keys and values a step reads at ``context`` tokens: 2 x layers x KV heads x head size x
    context x batch, in the activations' precision (bf16 for the bf16 precisions, else float32), or one
    byte each in an ``fp8`` cache (its per-layer scales aside). ``kv``: the model's own by default."""
    kv = lm.kv if kv is None else kv
    config: Any = lm.model.config
    heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    size = 1 if kv == "fp8" else 2 if "bf16" in lm.precision else 4
    return 2 * int(config.num_hidden_layers) * heads * head_dim * context * batch * size


def bytes_per_token(lm: LanguageModel, context: int, kv: str | None = None) -> int:
    """What a batch-1 decode step reads at ``context`` tokens: the weights (:func:`weight_bytes_read`) and
    the KV cache."""
    return weight_bytes_read(lm.model) + kv_cache_bytes(lm, context, kv=kv)


@dataclass(frozen=True)
class Roofline:
    bytes_per_token: int
    bandwidth: float  # bytes/s
    tokens_per_second: float  # measured

    @property
    def limit(self) -> float:
        """The tokens per second the bandwidth allows at this many bytes a token."""
        return self.bandwidth / self.bytes_per_token

    @property
    def share(self) -> float:
        return self.tokens_per_second / self.limit

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes_per_token": self.bytes_per_token,
            "bandwidth_gb_s": self.bandwidth / 1e9,
            "limit_tokens_per_second": self.limit,
            "tokens_per_second": self.tokens_per_second,
            "share": self.share,
        }


def roofline(lm: LanguageModel, timing: DecodeTiming, bandwidth: float, kv: str | None = None) -> Roofline:
    """The measured decode rate against the bandwidth limit at the mean context of its steps."""
    context = timing.prompt_tokens + timing.tokens // 2
    return Roofline(bytes_per_token(lm, context, kv), bandwidth, timing.tokens_per_second)

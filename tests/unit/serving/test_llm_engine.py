"""Continuous batching (assay.serve.llm_engine): sequences that join a running batch at different steps,
with prompts of different lengths, and leave it at different steps, get exactly the tokens each gets
decoded alone (assay.llm.decoding's greedy decoder, itself checked against transformers' generate);
cancelled sequences leave at the next step; a full queue refuses; stop strings, end of sequence and
max_tokens end a sequence with the stated reason.

Exact equality holds for a float32 model: left padding is masked out, so a row's attention sums the
same terms; a near-tie between two tokens could still round differently in a batch, which the fixed
seed of the tiny model here does not hit (a regression would show as one changed token)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from assay.errors import UsageError
from assay.llm import causal
from assay.llm.decoding import GreedyDecoder
from assay.serve.llm_engine import Engine, EngineConfig, Overloaded, Sequence
from tests.unit.llm.causal_fixtures import tiny_llama
from tests.unit.models.test_adapter_hf import tiny_tokenizer

PROMPTS = [
    "the cat sat on the mat",
    "a very good film",
    "the plot was boring and not fun at all",
    "i saw it",
    "great great great fun and a very good plot the cat was not boring",
    "dogs",
]


def language_model() -> causal.LanguageModel:
    tokenizer = tiny_tokenizer(max_length=256)
    model = tiny_llama(len(tokenizer), seed=0)
    model.generation_config.eos_token_id = None  # random weights: no token may end a sequence early
    tokenizer.eos_token = None
    return causal.LanguageModel(model, tokenizer, {"precision": "fp32", "spec": {"context_length": 256}})


class Collector:
    def __init__(self) -> None:
        self.events: list[dict] = []
        self.done = threading.Event()

    def __call__(self, event: dict) -> None:
        self.events.append(event)
        if "finish_reason" in event:
            self.done.set()

    @property
    def text(self) -> str:
        return "".join(e.get("delta", "") for e in self.events)


def test_sequences_joining_and_leaving_get_the_tokens_they_get_alone() -> None:
    lm = language_model()
    lengths = [12, 5, 20, 9, 15, 7]
    prompts = [lm.tokenizer(p)["input_ids"] for p in PROMPTS]
    alone = [
        GreedyDecoder(lm).run([p], n).generated[0].tolist() for p, n in zip(prompts, lengths, strict=True)
    ]
    steps: list[int] = []
    engine = Engine(
        lm,
        EngineConfig(max_sequences=4),
        observe=lambda kind, *a: steps.append(a[1]) if kind == "step" else None,
    )
    engine.start()
    sequences, sinks = [], []
    try:
        for i, (prompt, n) in enumerate(zip(prompts, lengths, strict=True)):
            sink = Collector()
            sequence = Sequence(prompt=prompt, max_tokens=n, emit=sink)
            sequences.append(sequence)
            sinks.append(sink)
            engine.submit(sequence)
            if i % 2:
                time.sleep(0.05)  # some join a batch already running
        for sink in sinks:
            assert sink.done.wait(30)
    finally:
        engine.stop()
    for sequence, want, n in zip(sequences, alone, lengths, strict=True):
        assert sequence.generated == want
        assert sequence.finish_reason == "length" and len(sequence.generated) == n
    assert max(steps) > 1 and max(steps) <= 4  # batched, never past max_sequences
    for sink, sequence in zip(sinks, sequences, strict=True):
        assert sink.text == lm.tokenizer.decode(sequence.generated, skip_special_tokens=True)
        assert sink.events[-1] == {"finish_reason": "length", "prompt_tokens": len(sequence.prompt),
                                   "completion_tokens": len(sequence.generated)}  # fmt: skip


def test_a_cancelled_sequence_leaves_and_the_others_go_on() -> None:
    lm = language_model()
    engine = Engine(lm, EngineConfig(max_sequences=4))
    engine.start()
    try:
        long_sink, short_sink = Collector(), Collector()
        long = Sequence(prompt=lm.tokenizer(PROMPTS[0])["input_ids"], max_tokens=200, emit=long_sink)
        short = Sequence(prompt=lm.tokenizer(PROMPTS[1])["input_ids"], max_tokens=30, emit=short_sink)
        engine.submit(long)
        engine.submit(short)
        while len(long.generated) < 3:
            time.sleep(0.005)
        engine.cancel(long)
        assert long_sink.done.wait(10) and short_sink.done.wait(30)
    finally:
        engine.stop()
    assert long.finish_reason == "cancelled" and len(long.generated) < 200
    assert short.finish_reason == "length" and len(short.generated) == 30
    assert short.generated == GreedyDecoder(lm).run([short.prompt], 30).generated[0].tolist()


def test_a_variant_with_an_fp8_kv_cache_is_refused_with_what_to_serve() -> None:
    lm = language_model()
    lm.manifest["kv"] = "fp8"
    with pytest.raises(UsageError, match=r"kv_fp8 keeps its KV cache in fp8.*\(fp32\)"):
        Engine(lm)


def test_a_full_queue_refuses_at_once() -> None:
    lm = language_model()
    engine = Engine(lm, EngineConfig(max_sequences=1, max_waiting=2))  # not started: nothing leaves the queue
    for _ in range(2):
        engine.submit(Sequence(prompt=[1, 2, 3], max_tokens=4, emit=Collector()))
    with pytest.raises(Overloaded, match="2 requests are waiting"):
        engine.submit(Sequence(prompt=[1, 2, 3], max_tokens=4, emit=Collector()))


def test_stop_strings_and_end_of_sequence_end_with_stop() -> None:
    lm = language_model()
    prompt = lm.tokenizer(PROMPTS[2])["input_ids"]
    free = GreedyDecoder(lm).run([prompt], 20).generated[0].tolist()
    text = lm.tokenizer.decode(free, skip_special_tokens=True)
    word = text.split()[3]
    engine = Engine(lm)
    engine.start()
    try:
        sink = Collector()
        by_word = Sequence(prompt=prompt, max_tokens=20, emit=sink, stop=(" " + word,))
        engine.submit(by_word)
        assert sink.done.wait(30)
        engine.eos = {free[5]}  # the sixth token ends the sequence, unemitted
        eos_sink = Collector()
        by_eos = Sequence(prompt=prompt, max_tokens=20, emit=eos_sink)
        engine.submit(by_eos)
        assert eos_sink.done.wait(30)
    finally:
        engine.stop()
    assert by_word.finish_reason == "stop" and sink.text == text[: text.find(" " + word)]
    assert by_eos.finish_reason == "stop" and by_eos.generated == free[: free.index(free[5])]


def test_a_failing_model_ends_its_sequences_with_error_and_the_engine_goes_on() -> None:
    lm = language_model()
    engine = Engine(lm)
    forward = lm.model.forward
    calls = {"n": 0}

    def broken_once(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:  # the second decode step of the first request
            raise RuntimeError("out of memory")
        return forward(*args, **kwargs)

    lm.model.forward = broken_once  # type: ignore[method-assign]
    engine.start()
    try:
        failed_sink, next_sink = Collector(), Collector()
        failed = Sequence(prompt=lm.tokenizer(PROMPTS[0])["input_ids"], max_tokens=10, emit=failed_sink)
        engine.submit(failed)
        assert failed_sink.done.wait(30)
        after = Sequence(prompt=lm.tokenizer(PROMPTS[1])["input_ids"], max_tokens=6, emit=next_sink)
        engine.submit(after)
        assert next_sink.done.wait(30)
    finally:
        engine.stop()
    assert failed.finish_reason == "error" and failed_sink.events[-1]["finish_reason"] == "error"
    assert after.finish_reason == "length" and len(after.generated) == 6


RELEASE = """
import time
from pathlib import Path
import torch
from assay.serve.llm_engine import release_openmp_threads
torch.set_num_threads(2)
threads = lambda: len(list(Path("/proc/self/task").iterdir()))
before = threads()
torch.ones(4_000_000).mul_(2.0)  # a parallel region: its worker stays, waiting for the next one
with_team = threads()
released = release_openmp_threads()
for _ in range(200):  # the worker exits on its own; waiting for it is not a timing assertion
    if threads() < with_team:
        break
    time.sleep(0.01)
print(before, with_team, threads(), released)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc (Linux)")
def test_releasing_openmp_ends_the_calling_threads_worker() -> None:
    """The worker a parallel region of two threads started exits after the release, so the loading
    thread keeps no team beside the engine's. In a fresh interpreter, where no other thread comes or goes."""
    result = subprocess.run([sys.executable, "-c", RELEASE], capture_output=True, text=True, check=True)
    before, with_team, after, released = result.stdout.split()
    if released != "True":
        pytest.skip("torch's OpenMP runtime is not libgomp here")
    assert int(with_team) == int(before) + 1 and int(after) == int(before)

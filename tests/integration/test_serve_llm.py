"""The OpenAI-compatible server over a language-model version, driven by the official ``openai`` client
from PyPI against a real uvicorn server on loopback: completions, chat and streaming give the text the
model generates (checked against the greedy decoder); malformed bodies, unknown models and over-long
prompts get 4xx with OpenAI's error body; under load, cancelled streams free their slots, requests past
the queue get 429 at once, and a promotion during streaming loses no stream (the old version finishes
it, new requests get the new one)."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

pytest.importorskip("transformers")
pytest.importorskip("openai")
pytest.importorskip("uvicorn")

import openai

from assay.data import parse_data_arg
from assay.llm.decoding import GreedyDecoder
from assay.llm.release import import_language_model, load_version
from assay.serve.openai_api import LanguageModelServer, LanguageServeConfig, create_llm_app
from assay.workspace import Workspace
from tests.integration.serving_fixtures import serving
from tests.integration.test_llm_release import corpus_file
from tests.unit.llm.causal_fixtures import save_tiny_llama


def registry(tmp_path: Path, versions: int = 1) -> Workspace:
    ws = Workspace.open(tmp_path / "home")
    corpus = parse_data_arg(f"jsonl:{corpus_file(tmp_path / 'corpus.jsonl')}", text="text", target="topic")
    for seed in range(versions):
        model = save_tiny_llama(tmp_path / f"llama{seed}", seed=seed)
        model.generation_config.eos_token_id = None
        model.generation_config.save_pretrained(tmp_path / f"llama{seed}")
        imported = import_language_model(ws, "tiny", tmp_path / f"llama{seed}", corpus=corpus)
        if seed == 0:
            ws.store.promote(imported.version.ref, force=True, reason="test set-up")
    return ws


def unmonitored(**settings: float) -> LanguageServeConfig:
    """What these tests serve with: monitoring is tested on a corpus large enough for it
    (test_serve_llm_monitor.py); this one's test split is too small to calibrate a window."""
    return LanguageServeConfig(monitor=None, **settings)  # type: ignore[arg-type]


def running(server: LanguageModelServer) -> AbstractContextManager[str]:
    return serving(create_llm_app(server))


def slowed(server: LanguageModelServer, seconds: float = 0.02) -> None:
    """Each decode step waits ``seconds`` first: the tiny model would finish 150 tokens before a test can
    see them in flight."""
    engine = server.engine
    assert engine is not None
    step = engine._step

    def slower() -> None:
        time.sleep(seconds)
        step()

    engine._step = slower  # type: ignore[method-assign]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def greedy(ws: Workspace, ref: str, ids: list[int], n: int) -> str:
    lm = load_version(ws, ws.store.resolve(ref))
    tokens = GreedyDecoder(lm).run([ids], n).generated[0].tolist()
    return str(lm.tokenizer.decode(tokens, skip_special_tokens=True))


def test_the_openai_client_completes_chats_and_streams(tmp_path: Path) -> None:
    ws = registry(tmp_path)
    server = LanguageModelServer(ws, "tiny", "production", unmonitored())
    with running(server) as url:
        c = client(url)
        assert [m.id for m in c.models.list().data] == ["tiny"]
        lm = server.lm
        assert lm is not None
        prompt = "the cat sat on the mat"
        ids = list(lm.tokenizer(prompt)["input_ids"])
        want = greedy(ws, "tiny@v1", ids, 12)
        done = c.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
        assert done.choices[0].text == want and done.choices[0].finish_reason == "length"
        assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens) == (
            len(ids),
            12,
        )
        streamed = c.completions.create(
            model="tiny", prompt=prompt, max_tokens=12, temperature=0, stream=True
        )
        chunks = list(streamed)
        assert "".join(ch.choices[0].text for ch in chunks) == want
        assert chunks[-1].choices[0].finish_reason == "length"

        messages = [{"role": "user", "content": "a very good film"}]
        chat_ids = lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                    return_dict=False)  # fmt: skip
        want_chat = greedy(ws, "tiny@v1", list(chat_ids), 8)
        reply = c.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
        assert reply.choices[0].message.content == want_chat and reply.choices[0].message.role == "assistant"
        pieces = c.chat.completions.create(
            model="tiny", messages=messages, max_tokens=8, temperature=0, stream=True
        )
        deltas = [p.choices[0].delta for p in pieces]
        assert deltas[0].role == "assistant" and "".join(d.content or "" for d in deltas) == want_chat

        # sampling with a seed repeats itself
        a, b = (c.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=1.0, seed=7)
                for _ in range(2))  # fmt: skip
        assert a.choices[0].text == b.choices[0].text

        # errors: unknown model 404, over-long prompt 400 (context_length_exceeded), malformed body 400
        with pytest.raises(openai.NotFoundError, match="does not exist here"):
            c.completions.create(model="gpt-4", prompt=prompt, max_tokens=4)
        with pytest.raises(openai.BadRequestError) as long:
            c.completions.create(model="tiny", prompt="the cat " * 200, max_tokens=4)
        assert long.value.code == "context_length_exceeded"
        with pytest.raises(openai.BadRequestError, match="temperature"):
            c.completions.create(model="tiny", prompt=prompt, max_tokens=4, temperature=5)
        for body in (b"{not json", b'{"model": "tiny"}', b'{"model": "tiny", "prompt": "x", "n": 3}', b"[]"):
            r = httpx.post(
                f"{url}/v1/completions", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code == 400 and r.json()["error"]["message"], body
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "god", "content": "x"}]},
        )
        assert r.status_code == 400
        metrics = httpx.get(f"{url}/metrics").text
        assert (
            "assay_llm_ttft_seconds_count" in metrics
            and 'assay_llm_finished_total{reason="length"}' in metrics
        )


def test_under_load_cancelled_streams_free_slots_and_over_capacity_gets_429(tmp_path: Path) -> None:
    ws = registry(tmp_path)
    server = LanguageModelServer(ws, "tiny", "production", unmonitored(max_sequences=2, max_waiting=2))
    with running(server) as url:
        body = {"model": "tiny", "prompt": "the cat sat", "max_tokens": 200, "temperature": 0, "stream": True}
        with httpx.Client(timeout=60) as http:
            # two streams fill the batch; each is read a little, then dropped (the client disconnects)
            for _ in range(2):
                with http.stream("POST", f"{url}/v1/completions", json=body) as r:
                    assert r.status_code == 200
                    next(r.iter_lines())
            deadline = time.monotonic() + 30
            while server.engine is not None and server.engine.running + server.engine.waiting > 0:
                assert time.monotonic() < deadline, "cancelled streams kept their slots"
                time.sleep(0.02)
            # the slots are free: new requests run at once
            done = http.post(f"{url}/v1/completions", json={**body, "stream": False, "max_tokens": 5})
            assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] == 5

            # two long streams run, two wait; every request past that gets 429 at once
            def long_request() -> int:
                return http.post(
                    f"{url}/v1/completions", json={**body, "stream": False, "max_tokens": 150}
                ).status_code

            def until(running: int, waiting: int) -> None:
                deadline = time.monotonic() + 30
                engine = server.engine
                assert engine is not None
                while (engine.running, engine.waiting) != (running, waiting):
                    assert time.monotonic() < deadline, (engine.running, engine.waiting)
                    time.sleep(0.01)

            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(long_request) for _ in range(2)]
                until(running=2, waiting=0)
                futures += [pool.submit(long_request) for _ in range(2)]
                until(running=2, waiting=2)
                refused = http.post(f"{url}/v1/completions", json={**body, "stream": False, "max_tokens": 5})
                assert refused.status_code == 429 and "waiting" in refused.json()["error"]["message"]
                assert [f.result() for f in futures] == [200] * 4
        cancelled = server.metrics.registry.get_sample_value(
            "assay_llm_finished_total", {"reason": "cancelled"}
        )
        assert cancelled == 2


def test_a_promotion_during_streaming_loses_no_stream(tmp_path: Path) -> None:
    ws = registry(tmp_path, versions=2)
    server = LanguageModelServer(ws, "tiny", "production", unmonitored(poll_s=0.05))
    prompt = "the plot was boring"
    with running(server) as url:
        slowed(server, 0.05)  # 60 tokens take 3 s on v1: the promotion lands mid-stream
        c = client(url)
        lm = server.lm
        assert lm is not None
        ids = list(lm.tokenizer(prompt)["input_ids"])
        old, new = greedy(ws, "tiny@v1", ids, 60), greedy(ws, "tiny@v2", ids, 6)
        assert old[:20] != greedy(ws, "tiny@v2", ids, 60)[:20]  # the versions answer differently
        streams = [
            c.completions.create(model="tiny", prompt=prompt, max_tokens=60, temperature=0, stream=True)
            for _ in range(3)
        ]
        firsts = [next(iter(s)) for s in streams]  # every stream has begun on v1
        ws.store.promote("tiny@v2", force=True, reason="test: promotion during streaming")
        deadline = time.monotonic() + 30
        while server.version is None or server.version.ref != "tiny@v2":
            assert time.monotonic() < deadline, "the server did not pick up the promotion"
            time.sleep(0.02)
        assert server._retired and server._retired[0].running == 3  # v1 still streams all three
        texts = [
            first.choices[0].text + "".join(ch.choices[0].text for ch in s)
            for first, s in zip(firsts, streams, strict=True)
        ]
        assert texts == [old] * 3  # finished on the version they began on, none dropped
        after = c.completions.create(model="tiny", prompt=prompt, max_tokens=6, temperature=0)
        assert after.choices[0].text == new


def test_a_non_streamed_request_whose_client_leaves_frees_its_slot(tmp_path: Path) -> None:
    ws = registry(tmp_path)
    server = LanguageModelServer(ws, "tiny", "production", unmonitored(max_sequences=2))
    with running(server) as url:
        slowed(server, 0.05)  # 200 tokens would take 10 s
        body = {"model": "tiny", "prompt": "the cat sat", "max_tokens": 200, "temperature": 0}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/completions", json=body, timeout=1.0)  # the client gives up after 1 s
        engine = server.engine
        assert engine is not None
        deadline = time.monotonic() + 5  # well before the 10 s the generation would take
        while engine.running + engine.waiting > 0:
            assert time.monotonic() < deadline, "the abandoned request kept its slot"
            time.sleep(0.02)
    cancelled = server.metrics.registry.get_sample_value("assay_llm_finished_total", {"reason": "cancelled"})
    assert cancelled == 1


def test_a_promoted_version_that_cannot_be_served_is_said_once_and_the_served_one_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An fp8-KV-cache variant gates and promotes, but the server's batch cannot hold its cache: the
    served version keeps answering, and the reason is logged once however many polls retry it."""
    from assay.llm.release import quantize_language_model

    ws = registry(tmp_path)
    variant = quantize_language_model(ws, "tiny@v1", "kv_fp8")
    server = LanguageModelServer(ws, "tiny", "production", unmonitored(poll_s=0.02))
    with caplog.at_level(logging.WARNING, logger="assay.serve.openai_api"), running(server) as url:
        ws.store.promote(variant.ref, force=True, reason="test: a variant the server refuses")
        deadline = time.monotonic() + 30
        while not any("keeping the served version" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no poll said why it kept the served version"
            time.sleep(0.02)
        time.sleep(0.2)  # more polls, each one refused again
        answer = client(url).completions.create(model="tiny", prompt="the cat", max_tokens=4, temperature=0)
        assert answer.choices[0].text and server.version is not None and server.version.ref == "tiny@v1"
    said = [r.getMessage() for r in caplog.records if "keeping the served version" in r.getMessage()]
    assert len(said) == 1 and "kv_fp8 keeps its KV cache in fp8" in said[0]

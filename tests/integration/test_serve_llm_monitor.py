"""A served language model monitored against its gating corpus, end to end over a real uvicorn server:
prompts like the corpus's close quiet windows, prompts unlike it open an incident, and two alarmed windows
in a row roll the alias back, after which the server answers with the version it rolled back to."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("uvicorn")

from assay.data import parse_data_arg
from assay.llm.release import import_language_model
from assay.serve.llm_monitor import corpus_documents, prompt_references
from assay.serve.openai_api import LanguageModelServer, LanguageServeConfig, create_llm_app
from assay.serve.served import MonitorSettings
from assay.workspace import Workspace
from tests.integration.serving_fixtures import serving
from tests.integration.test_llm_release import WORDS, corpus_file
from tests.unit.llm.causal_fixtures import save_tiny_llama, save_tiny_mixtral

WINDOW = 10


def two_versions(tmp_path: Path) -> Workspace:
    """v1 and v2 of a tiny Llama on a corpus of 300 documents (60 in its test split), v2 in production."""
    ws = Workspace.open(tmp_path / "home")
    corpus = parse_data_arg(
        f"jsonl:{corpus_file(tmp_path / 'corpus.jsonl', n=300)}", text="text", target="topic"
    )
    for seed in (0, 1):
        save_tiny_llama(tmp_path / f"llama{seed}", seed=seed)
        imported = import_language_model(ws, "tiny", tmp_path / f"llama{seed}", corpus=corpus)
        ws.store.promote(imported.version.ref, force=True, reason="test set-up")
    return ws


def prompts(n: int, words: tuple[int, int], seed: int) -> list[str]:
    """Texts of the corpus's vocabulary, ``words`` (low, high) long: the corpus's are 8 to 19."""
    rng = np.random.default_rng(seed)
    vocabulary = [w for w in WORDS if not w.startswith("##")]
    return [" ".join(rng.choice(vocabulary, size=int(rng.integers(*words)))) for _ in range(n)]


def wait_for(check, seconds: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_prompts_unlike_the_corpus_open_an_incident_and_roll_the_alias_back(tmp_path: Path) -> None:
    ws = two_versions(tmp_path)
    config = LanguageServeConfig(
        monitor=MonitorSettings(window=WINDOW, false_alarm_windows=100), rollback_after=2, poll_s=0.05
    )
    server = LanguageModelServer(ws, "tiny", "production", config)
    with serving(create_llm_app(server)) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/v1/models").json()["data"][0]["root"] == "tiny@v2"
        monitor = http.get("/monitor").json()
        assert set(monitor["streams"]) == {"completions", "chat"}
        assert monitor["streams"]["completions"]["window"] == WINDOW

        def send(texts: list[str], chat: bool = False) -> None:
            for text in texts:
                body = {"model": "tiny", "max_tokens": 1, "temperature": 0}
                if chat:
                    r = http.post(
                        "/v1/chat/completions", json=body | {"messages": [{"role": "user", "content": text}]}
                    )
                else:
                    r = http.post("/v1/completions", json=body | {"prompt": text})
                assert r.status_code == 200, r.text

        def windows(stream: str) -> list[dict]:
            return http.get("/monitor").json()["streams"].get(stream, {}).get("windows", [])

        send(prompts(WINDOW, (8, 20), seed=11))  # like the corpus
        send(prompts(WINDOW, (8, 20), seed=12), chat=True)
        wait_for(lambda: len(windows("completions")) == 1 and len(windows("chat")) == 1)
        assert not windows("completions")[0]["alarm"] and not windows("chat")[0]["alarm"]
        assert ws.store.list_incidents("tiny") == []

        send(prompts(2 * WINDOW, (60, 90), seed=13))  # four to five times as long as any in the corpus
        wait_for(lambda: http.get("/v1/models").json()["data"][0]["root"] == "tiny@v1")
        (incident,) = ws.store.list_incidents("tiny")
        assert (incident.version, incident.detector, incident.action) == (2, "features", "rolled_back")
        assert ws.store.current_alias("tiny", "production").version == 1  # type: ignore[union-attr]
        assert "prompt_tokens" in str(incident.details["detections"][0]["detectors"]["features"]["why"])
        metrics = http.get("/metrics").text
        assert 'assay_llm_monitor_windows_total{alarm="true",stream="completions"} 2.0' in metrics
        assert "assay_llm_prompt_nll_per_token_count" in metrics
        send(prompts(1, (8, 20), seed=14))  # v1 answers, monitored against its own reference
        assert http.get("/monitor").json()["version"] == "tiny@v1"


def test_the_prompt_reference_is_built_once_per_version_and_precision(tmp_path: Path) -> None:
    ws = two_versions(tmp_path)
    version = ws.store.resolve("tiny@v1")
    from assay.llm.release import load_version

    lm = load_version(ws, version)
    first = prompt_references(ws, version, lm)
    assert first["completions"].n == len(corpus_documents(version)) == 60
    cached = sorted((ws.cache_dir / "llm-prompts").glob("*.npz"))
    assert len(cached) == 2
    again = prompt_references(ws, version, lm)
    assert {k: r.digest() for k, r in again.items()} == {k: r.digest() for k, r in first.items()}
    assert sorted((ws.cache_dir / "llm-prompts").glob("*.npz")) == cached
    other = prompt_references(ws, ws.store.resolve("tiny@v2"), load_version(ws, ws.store.resolve("tiny@v2")))
    assert other["completions"].digest() != first["completions"].digest()  # another model, another NLL
    assert other["completions"].inputs[:, 0].tolist() == first["completions"].inputs[:, 0].tolist()


def test_serving_a_corpus_too_small_to_monitor_says_so_and_what_to_pass(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from assay.cli import app

    ws = Workspace.open(tmp_path / "home")
    corpus = parse_data_arg(
        f"jsonl:{corpus_file(tmp_path / 'corpus.jsonl', n=90)}", text="text", target="topic"
    )
    save_tiny_llama(tmp_path / "llama")
    ws.store.promote(
        import_language_model(ws, "tiny", tmp_path / "llama", corpus=corpus).version.ref, force=True
    )
    ws.store.close()
    result = CliRunner().invoke(app, ["serve", "tiny", "--home", str(tmp_path / "home")])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "18 rows" in result.stderr and "--no-monitor" in result.stderr


def test_a_rollback_decided_before_a_crash_is_carried_out_when_the_server_starts(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    ws = two_versions(tmp_path)
    now = datetime.now(UTC)
    due = ws.store.open_incident(
        "tiny", "production", 2, detector="features", statistic=9.0, threshold=4.0, window=3,
        window_start=now, window_end=now, rollback_after=1,
        detection={"window": 3, "stream": "completions", "alarms": ["features"], "detectors": {}},
    )  # fmt: skip
    assert due.action == "rollback_due"  # the process died before it rolled back
    config = LanguageServeConfig(monitor=MonitorSettings(window=WINDOW))
    server = LanguageModelServer(ws, "tiny", "production", config)
    try:
        import threading

        loading = threading.Thread(target=server.load, daemon=True)  # a deadlock fails, not hangs
        loading.start()
        loading.join(timeout=120)
        assert not loading.is_alive(), "loading never finished (the recovery's reload deadlocked)"
        assert server.version is not None and server.version.ref == "tiny@v1"
        assert ws.store.list_incidents("tiny")[0].action == "rolled_back"
    finally:
        server.stop()


def test_a_served_mixture_of_experts_reports_its_router_load_per_layer(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "home")
    corpus = parse_data_arg(
        f"jsonl:{corpus_file(tmp_path / 'corpus.jsonl', n=300)}", text="text", target="topic"
    )
    save_tiny_mixtral(tmp_path / "mixtral", seed=0)
    imported = import_language_model(ws, "moe", tmp_path / "mixtral", corpus=corpus)
    ws.store.promote(imported.version.ref, force=True, reason="test set-up")
    config = LanguageServeConfig(monitor=MonitorSettings(window=WINDOW, false_alarm_windows=100), poll_s=0.05)
    server = LanguageModelServer(ws, "moe", "production", config)
    with serving(create_llm_app(server)) as url, httpx.Client(base_url=url, timeout=60) as http:
        for text in prompts(WINDOW, (8, 20), seed=21):
            body = {"model": "moe", "prompt": text, "max_tokens": 1, "temperature": 0}
            assert http.post("/v1/completions", json=body).status_code == 200

        def windows() -> list[dict]:
            return http.get("/monitor").json()["streams"]["completions"]["windows"]

        wait_for(lambda: len(windows()) == 1)
        summary = windows()[0]["summary"]
    load, reference = np.array(summary["expert_load"]), np.array(summary["expert_load_reference"])
    assert load.shape == reference.shape == (2, 4)  # two routed layers of four experts
    assert load.sum(axis=1) == pytest.approx([1.0, 1.0]) and reference.sum(axis=1) == pytest.approx(
        [1.0, 1.0]
    )
    (cached,) = (ws.cache_dir / "llm-prompts").glob("*-completions.npz")
    from assay.serve.reference import Reference

    names = Reference.load(cached).feature_names
    assert names[:2] == ("prompt_tokens", "prompt_nll_per_token") and names[-1] == "expert_share.1.3"

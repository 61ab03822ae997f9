"""The prompt monitor of a served language model: its statistics against transformers' own loss, its
detector against SciPy on the same windows, and planted shifts with the recall and false-alarm rate
asserted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from statsmodels.stats.multitest import multipletests

pytest.importorskip("transformers")

from assay.errors import DataError
from assay.llm import causal
from assay.serve import drift
from assay.serve.llm_engine import Engine, Sequence
from assay.serve.llm_monitor import (
    PROMPT_STATISTICS,
    PromptMonitor,
    prompt_feature_names,
    prompt_reference,
    prompt_row,
    prompt_statistics,
)
from assay.serve.reference import Reference
from assay.serve.served import MonitorSettings
from tests.unit.llm.causal_fixtures import tiny_mixtral
from tests.unit.models.test_adapter_hf import tiny_tokenizer
from tests.unit.serving.test_llm_engine import Collector, language_model


def transformers_loss(model: torch.nn.Module, ids: list[int]) -> float:
    """transformers' causal-LM loss: the mean NLL of tokens 1..L-1, computed its own way."""
    with torch.inference_mode():
        t = torch.tensor([ids])
        return float(model(input_ids=t, labels=t).loss)


def test_prompt_statistics_and_the_engine_give_transformers_loss() -> None:
    lm = language_model()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(5, len(lm.tokenizer), size=int(n)).tolist() for n in (2, 7, 19, 40, 3)]
    got = prompt_statistics(lm, prompts)
    want = [transformers_loss(lm.model, p) for p in prompts]
    assert got[:, 0].tolist() == [len(p) for p in prompts]
    # float32 logits of a padded batch against one sequence alone: agree to float32 rounding of ~ln(V)
    assert got[:, 1] == pytest.approx(want, rel=1e-5)
    seen: list[Sequence] = []
    engine = Engine(lm, observe=lambda kind, *v: seen.append(v[0]) if kind == "prompt" else None)
    engine.start()
    try:
        done = []
        for p in prompts:
            collector = Collector()
            engine.submit(Sequence(prompt=p, max_tokens=2, emit=collector))
            done.append(collector)
        assert all(c.done.wait(30) for c in done)
    finally:
        engine.stop()
    by_prompt = {tuple(s.prompt): s.prompt_nll for s in seen}
    assert [by_prompt[tuple(p)] for p in prompts] == pytest.approx(want, rel=1e-5)
    with pytest.raises(DataError, match="2 tokens or more"):
        prompt_statistics(lm, [[7]])


def synthetic(n: int, seed: int, nll_shift: float = 0.0) -> np.ndarray:
    """Prompt statistics shaped like a corpus's: lengths log-normal, NLL per token about 3 nats."""
    rng = np.random.default_rng(seed)
    tokens = np.maximum(2, np.round(rng.lognormal(3.0, 0.6, n)))
    nll = rng.normal(3.0, 0.5, n) + nll_shift
    return np.stack([tokens, nll], axis=1)


def test_a_reference_without_class_outputs_round_trips_and_supports_the_features_detector_alone(
    tmp_path,
) -> None:
    ref = prompt_reference(synthetic(300, seed=1))
    back = Reference.load(ref.save(tmp_path / "prompts.npz"))
    assert back.digest() == ref.digest() and back.probs is None and back.feature_names == PROMPT_STATISTICS
    assert drift.active_detectors(ref) == ("features",)
    with pytest.raises(DataError, match="without class outputs"):
        Reference("table", 2, PROMPT_STATISTICS, ref.inputs, None, None, None, None)


def test_the_window_statistic_is_scipys_ks_with_benjamini_hochberg() -> None:
    ref = prompt_reference(synthetic(1200, seed=2))
    monitor = PromptMonitor({"completions": ref}, MonitorSettings(window=50, false_alarm_windows=100), "m@v1")
    live = synthetic(50, seed=3, nll_shift=0.2)
    closed = [w for row in live for w in monitor.observe("completions", row)]
    assert len(closed) == 1 and closed[0].stream == "completions" and closed[0].n == 50
    result = closed[0].results[0]
    cmp_rows, _ = drift.split_halves(ref.n, 50, 0)
    ps = [stats.ks_2samp(live[:, j], ref.inputs[cmp_rows, j], method="asymp").pvalue for j in range(2)]
    adjusted = multipletests(ps, method="fdr_bh")[1]
    assert result.name == "features"
    assert result.statistic == pytest.approx(-np.log10(adjusted.min()), rel=1e-6)
    assert closed[0].summary["input_means"]["prompt_nll_per_token"] == pytest.approx(live[:, 1].mean())


def test_planted_shifts_alarm_and_unshifted_traffic_keeps_to_its_budget() -> None:
    ref = prompt_reference(synthetic(3000, seed=4))
    budget = 50  # windows between false alarms
    monitor = PromptMonitor({"chat": ref}, MonitorSettings(window=50, false_alarm_windows=budget), "m@v1")
    assert monitor.streams == ("chat",) and monitor.window("chat") == 50

    def alarms(rows: np.ndarray) -> list[bool]:
        out = [w for r in rows for w in monitor.observe("chat", r)]
        return [w.alarm for w in out]

    clean = alarms(synthetic(200 * 50, seed=5))  # 200 windows of unshifted prompts
    shifted = alarms(synthetic(100 * 50, seed=6, nll_shift=0.5))  # 1 sd more surprising: OOD prompts
    longer = alarms(synthetic(100 * 50, seed=7) * np.array([3.0, 1.0]))  # three times as long
    assert len(clean) == 200 and len(shifted) == len(longer) == 100
    # the family rate is at most 1/budget (4 expected in 200): 12 or more has probability < 1e-3
    assert sum(clean) < 12
    assert sum(shifted) >= 95 and sum(longer) >= 95  # recall
    flagged = sum(shifted) + sum(longer)
    assert flagged / (flagged + sum(clean)) >= 0.95  # precision over the three streams together
    why = monitor.recent("chat", 1)[0].results[0].explain()
    assert "prompt_tokens" in why  # the incident line names the statistic that moved
    assert monitor.observe("completions", np.array([10, 3.0])) == [] and monitor.observe("chat", None) == []
    with pytest.raises(DataError, match="a prompt row of 3 statistics for a reference of 2"):
        monitor.observe("chat", np.array([10, 3.0, 0.5]))


# -- a mixture of experts: the router's load per layer ------------------------------------------------


def tiny_moe() -> causal.LanguageModel:
    tokenizer = tiny_tokenizer(max_length=256)
    model = tiny_mixtral(len(tokenizer), seed=0)
    model.generation_config.eos_token_id = None  # random weights: no token may end a sequence early
    tokenizer.eos_token = None
    return causal.LanguageModel(model, tokenizer, {"precision": "fp32", "spec": {"context_length": 256}})


def test_expert_shares_count_each_tokens_top_k_choices_and_the_engine_agrees() -> None:
    lm = tiny_moe()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(5, len(lm.tokenizer), size=int(n)).tolist() for n in (2, 9, 23)]
    got = prompt_statistics(lm, prompts)
    assert prompt_feature_names(4, 2) == (*PROMPT_STATISTICS, *(f"expert_share.{i}.{e}" for i in range(2)
                                                               for e in range(4)))  # fmt: skip
    assert got.shape == (3, 2 + 2 * 4)
    for row, prompt in zip(got, prompts, strict=True):
        # By hand, on the prompt alone: each token's 2 largest router logits, counted per layer and expert.
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([prompt]), output_router_logits=True).router_logits
        for layer, scores in enumerate(logits):
            top = np.argsort(-scores.numpy(), axis=1)[:, :2]
            counts = np.bincount(top.ravel(), minlength=4) / (2 * len(prompt))
            assert row[2 + 4 * layer : 6 + 4 * layer] == pytest.approx(counts, abs=1e-12)
        assert row[0] == len(prompt) and row[1] == pytest.approx(
            transformers_loss(lm.model, prompt), rel=1e-5
        )
    seen: list[Sequence] = []
    engine = Engine(lm, observe=lambda kind, *v: seen.append(v[0]) if kind == "prompt" else None)
    engine.start()
    try:
        collectors = []
        for p in prompts:
            collectors.append(Collector())
            engine.submit(Sequence(prompt=p, max_tokens=2, emit=collectors[-1]))
        assert all(c.done.wait(30) for c in collectors)
    finally:
        engine.stop()
    rows = {tuple(s.prompt): prompt_row(s) for s in seen}
    for row, prompt in zip(got, prompts, strict=True):
        assert rows[tuple(prompt)] == pytest.approx(row, rel=1e-5)
    assert prompt_row(Sequence(prompt=[3], max_tokens=1, emit=lambda e: None)) is None


def routed(n: int, seed: int, overload: float = 0.0) -> np.ndarray:
    """Prompt rows of an MoE of 2 routed layers x 4 experts: lengths and NLL as :func:`synthetic`, each
    layer's shares drawn around an even load; ``overload`` moves that share of layer 1's load to expert 0."""
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.full(4, 20.0), size=(n, 2))
    shares[:, 1] = (1 - overload) * shares[:, 1] + overload * np.eye(4)[0]
    return np.concatenate([synthetic(n, seed), shares.reshape(n, 8)], axis=1)


def test_a_router_shift_alarms_on_the_expert_that_took_the_load() -> None:
    names = (*PROMPT_STATISTICS, *(f"expert_share.{i}.{e}" for i in range(2) for e in range(4)))
    ref = prompt_reference(routed(3000, seed=8), names)
    monitor = PromptMonitor({"completions": ref}, MonitorSettings(window=50, false_alarm_windows=50), "m@v1")

    def windows(rows: np.ndarray) -> list:  # type: ignore[type-arg]
        return [w for r in rows for w in monitor.observe("completions", r)]

    clean = windows(routed(200 * 50, seed=9))
    shifted = windows(routed(100 * 50, seed=10, overload=0.15))  # layer 1 sends 15% more to expert 0
    assert sum(w.alarm for w in clean) < 12  # at most 1 in 50 expected: 4 in 200
    assert sum(w.alarm for w in shifted) >= 95
    last = shifted[-1]
    assert "expert_share.1.0" in last.results[0].explain()
    load = np.array(last.summary["expert_load"])
    assert load.shape == (2, 4) and load[1, 0] == pytest.approx(
        routed(100 * 50, seed=10, overload=0.15)[-50:, 6].mean()
    )
    assert np.array(last.summary["expert_load_reference"])[1] == pytest.approx(0.25, abs=0.01)

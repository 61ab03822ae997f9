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
from assay.serve import drift
from assay.serve.llm_engine import Engine, Sequence
from assay.serve.llm_monitor import PROMPT_STATISTICS, PromptMonitor, prompt_reference, prompt_statistics
from assay.serve.reference import Reference
from assay.serve.served import MonitorSettings
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
    closed = [w for row in live for w in monitor.observe("completions", int(row[0]), float(row[1]))]
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
        out = [w for r in rows for w in monitor.observe("chat", int(r[0]), float(r[1]))]
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
    assert monitor.observe("completions", 10, 3.0) == [] and monitor.observe("chat", 1, None) == []

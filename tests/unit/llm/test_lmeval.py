"""lm-evaluation-harness samples logs, written here line by line as its EvaluationTracker writes them
(numbers as strings, the target as a string, the filter, the metrics and lm-eval's own ``acc``): they read
back as outputs over the choices, a misread target or a generation task is refused with the reason, and
two models' logs gate paired, with the exact McNemar p-value SciPy's ``binomtest`` gives on the discordant
documents (lm-eval's own comparison is an unpaired z-test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score
from typer.testing import CliRunner

from assay.cli import app
from assay.errors import DataError
from assay.llm.lmeval import read_samples

N_CHOICES = 4


def sample_line(doc_id: int, lls: np.ndarray, gold: int, *, target: str | None = None) -> dict[str, Any]:
    """One document of a multiple-choice task as lm-eval's EvaluationTracker writes it."""
    hit = float(int(np.argmax(lls)) == gold)
    prompt = "Question: ...\nAnswer:"
    return {
        "doc_id": doc_id,
        "target": str(gold) if target is None else target,
        "arguments": {f"gen_args_{i}": {"arg_0": prompt, "arg_1": f" choice {i}"} for i in range(len(lls))},
        "resps": [[[str(v), "False"]] for v in lls],
        "filtered_resps": [[str(v), "False"] for v in lls],
        "filter": "none",
        "metrics": ["acc", "acc_norm"],
        "doc_hash": f"{doc_id:064x}",
        "prompt_hash": "0" * 64,
        "target_hash": "1" * 64,
        "acc": hit,
        "acc_norm": hit,
    }


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    return path


def model_logs(n: int, right: np.ndarray, seed: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Log-likelihoods whose argmax is the gold choice exactly where ``right`` says."""
    rng = np.random.default_rng(seed)
    gold = np.arange(n) % N_CHOICES
    lls = -rng.uniform(1.0, 20.0, size=(n, N_CHOICES))
    for i in range(n):
        top = gold[i] if right[i] else (gold[i] + 1 + rng.integers(N_CHOICES - 1)) % N_CHOICES
        lls[i, top] = lls[i].max() + rng.uniform(0.1, 3.0)
    return lls, [sample_line(i, lls[i], int(gold[i])) for i in range(n)]


def test_a_samples_file_reads_as_outputs_over_the_choices(tmp_path: Path) -> None:
    n = 40
    right = np.random.default_rng(1).random(n) < 0.6
    lls, lines = model_logs(n, right, seed=2)
    outputs = read_samples(write(tmp_path / "samples_arc_easy_2026-12-02.jsonl", lines))
    assert outputs.ids.tolist() == [str(i) for i in range(n)]
    assert outputs.labels.tolist() == (np.arange(n) % N_CHOICES).tolist()
    np.testing.assert_allclose(outputs.probs.sum(1), 1.0, atol=1e-12)
    assert outputs.logits is not None
    np.testing.assert_array_equal(outputs.logits, lls)  # str(float) round-trips exactly
    assert accuracy_score(outputs.labels, outputs.preds) == pytest.approx(right.mean())

    by_text = [sample_line(0, lls[0], 2, target="choice 2"), *lines[1:]]  # the gold choice's text
    assert read_samples(write(tmp_path / "text.jsonl", by_text)).labels[0] == 2


def test_documents_with_fewer_choices_get_zero_probability_for_the_rest(tmp_path: Path) -> None:
    lines = [sample_line(0, np.array([-1.0, -2.0]), 0), sample_line(1, np.array([-3.0, -1.0, -2.0]), 1)]
    outputs = read_samples(write(tmp_path / "mixed.jsonl", lines))
    assert outputs.probs.shape == (2, 3) and outputs.probs[0, 2] == 0.0
    np.testing.assert_allclose(outputs.probs[0, :2], np.exp([-1.0, -2.0]) / np.exp([-1.0, -2.0]).sum())
    assert outputs.preds.tolist() == [0, 1]


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda x: x.update(target="0"), "lm-eval scored acc"),  # gold is 1: lm-eval's acc disagrees
        (lambda x: x.update(target="7"), "out of range for 4 choices"),
        (lambda x: x.update(target="no such choice", acc=0.0), "neither a choice's index"),
        (lambda x: x.update(filtered_resps=["Paris"]), "generation task.s log"),
        (lambda x: x.update(filtered_resps=[["-inf", "False"]] * 4), "log-likelihood is '-inf'"),
        (lambda x: x.pop("doc_id"), "no 'doc_id'"),
        (lambda x: x.update(filter="strict-match"), "2 filters"),
    ],
)
def test_bad_samples_are_refused_with_the_reason(tmp_path: Path, change: Any, match: str) -> None:
    lines = [sample_line(i, np.array([-2.0, -1.0, -3.0, -4.0]), 1) for i in range(3)]
    change(lines[1])
    with pytest.raises(DataError, match=match):
        read_samples(write(tmp_path / "bad.jsonl", lines))
    (tmp_path / "junk.jsonl").write_text('{"doc_id": 0}\nnot json\n')
    with pytest.raises(DataError, match="line 2: not JSON"):
        read_samples(tmp_path / "junk.jsonl")


def test_two_models_logs_gate_paired_with_the_exact_mcnemar_p_value(
    tmp_path: Path, isolated_home: Path
) -> None:
    n = 220  # the size of the example in lm-eval's PR #3868
    rng = np.random.default_rng(3)
    base_right = rng.random(n) < 0.55
    cand_right = base_right.copy()
    flips = rng.permutation(n)
    lost = [i for i in flips if base_right[i]][:14]  # right before, wrong now
    won = [i for i in flips if not base_right[i]][:3]  # wrong before, right now
    cand_right[lost], cand_right[won] = False, True
    _, base_lines = model_logs(n, base_right, seed=4)
    _, cand_lines = model_logs(n, cand_right, seed=5)
    base = write(tmp_path / "samples_hellaswag_base.jsonl", base_lines)
    cand = write(tmp_path / "samples_hellaswag_int8.jsonl", cand_lines[::-1])  # any order: paired by doc_id

    result = CliRunner().invoke(app, ["gate", str(base), str(cand), "--out", str(tmp_path), "--json"])
    assert result.exit_code in (0, 1), result.stderr
    comparisons = json.loads(result.stdout)["verdict"]["comparisons"]
    paired = next(c for c in comparisons if c["name"] == "accuracy")
    assert paired["n"] == n
    assert paired["delta"] == pytest.approx((len(won) - len(lost)) / n)
    assert paired["p_value"] == pytest.approx(binomtest(len(won), len(won) + len(lost), 0.5).pvalue, rel=1e-9)

    other_task = write(tmp_path / "samples_other.jsonl", base_lines[: n // 2])
    result = CliRunner().invoke(app, ["gate", str(base), str(other_task), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not on the same examples" in result.stderr

"""lm-evaluation-harness logs of generation tasks (``generate_until``), written here line by line as its
EvaluationTracker writes them: each per-document metric reads as lm-eval scored it, two models' logs gate
paired on exact match with the exact McNemar p-value SciPy's ``binomtest`` gives on the discordant
documents, a non-binary metric (F1) is paired by the bootstrap on the documents' differences, a log of
several filters is read one filter at a time (``FILE.jsonl#FILTER``), and bad logs are refused with the
reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest
from typer.testing import CliRunner

from assay.cli import app
from assay.errors import DataError
from assay.llm.lmeval import GenerationLog, read_generation_samples, read_log, read_samples

N = 220


def gen_line(
    doc_id: int, hit: bool, *, filt: str = "strict-match", f1: float | None = None
) -> dict[str, Any]:
    """One document of gsm8k-like generation as lm-eval's EvaluationTracker writes it."""
    answer = str(doc_id * 2)
    said = answer if hit else str(doc_id * 2 + 1)
    line = {
        "doc_id": doc_id,
        "doc": {"question": f"What is {doc_id} + {doc_id}?", "answer": f"#### {answer}"},
        "target": f"#### {answer}",
        "arguments": {"gen_args_0": {"arg_0": f"Question: What is {doc_id} + {doc_id}?\nAnswer:",
                                     "arg_1": {"until": ["Question:"], "do_sample": False}}},
        "resps": [[f"The answer is {said}.\n#### {said}"]],
        "filtered_resps": [said],
        "filter": filt,
        "metrics": ["exact_match"],
        "doc_hash": f"{doc_id:064x}",
        "prompt_hash": "0" * 64,
        "target_hash": "1" * 64,
        "exact_match": float(hit),
    }  # fmt: skip
    if f1 is not None:
        line["metrics"] = ["exact_match", "f1"]
        line["f1"] = f1
    return line


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def paired_hits(seed: int, lost: int, won: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.random(N) < 0.4
    cand = base.copy()
    order = rng.permutation(N)
    cand[[i for i in order if base[i]][:lost]] = False
    cand[[i for i in order if not base[i]][:won]] = True
    return base, cand


def gate(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, ["gate", *args, "--json"])
    return result.exit_code, json.loads(result.stdout) if result.exit_code in (0, 1) else {}, result.stderr


def test_a_generation_log_reads_each_metric_per_document(tmp_path: Path) -> None:
    hits = np.random.default_rng(0).random(30) < 0.5
    f1 = np.round(np.random.default_rng(1).random(30), 3)
    lines = [gen_line(i, bool(h), f1=float(f)) for i, (h, f) in enumerate(zip(hits, f1, strict=True))]
    lines[3]["filtered_resps"] = [lines[3]["filtered_resps"]]  # [["text"]], as some versions write it
    path = write(tmp_path / "samples_gsm8k_2026-12-01T10-00-00.123.jsonl", lines)
    assert isinstance(read_log(path), GenerationLog)
    log = read_generation_samples(path)
    assert (log.task, log.filter, list(log.scores)) == ("gsm8k", "strict-match", ["exact_match", "f1"])
    np.testing.assert_array_equal(log.scores["exact_match"], hits.astype(float))
    np.testing.assert_array_equal(log.scores["f1"], f1)
    assert log.primary == "exact_match"
    outputs = log.outputs()
    assert outputs.ids.tolist() == [str(i) for i in range(30)]
    np.testing.assert_array_equal(outputs.correct, hits)
    with pytest.raises(DataError, match="generation task's log"):
        read_samples(path)  # not predictions over classes


def test_two_logs_gate_paired_with_the_exact_mcnemar_p_value(tmp_path: Path, isolated_home: Path) -> None:
    base, cand = paired_hits(seed=3, lost=14, won=3)
    a = write(tmp_path / "a.jsonl", [gen_line(i, bool(h)) for i, h in enumerate(base)])
    b = write(tmp_path / "b.jsonl", [gen_line(i, bool(h)) for i, h in enumerate(cand)][::-1])  # paired by id
    code, document, err = gate(str(a), str(b), "--out", str(tmp_path))
    assert code == (0 if document["verdict"]["passed"] else 1), err
    verdict = document["verdict"]
    assert verdict["policy"]["name"] == "generation-log"
    assert [c["name"] for c in verdict["comparisons"]] == ["exact_match"]  # no metric of the outputs
    paired = verdict["comparisons"][0]
    assert paired["n"] == N and paired["delta"] == pytest.approx((3 - 14) / N)
    assert paired["p_value"] == pytest.approx(binomtest(3, 17, 0.5).pvalue, rel=1e-9)
    churn = {m["name"]: m["value"] for m in verdict["churn"]}
    assert churn["churn_correct_to_wrong"] == pytest.approx(14 / N)
    assert churn["churn_wrong_to_correct"] == pytest.approx(3 / N)
    rule = verdict["rules"][0]
    assert rule["metric"] == "exact_match" and rule["status"] == "ok" and not rule["passed"]  # -5 points
    assert code == 1
    measured = {m["name"]: m for m in document["measurements"]}
    assert measured["exact_match"]["value"] == pytest.approx(cand.mean())
    assert measured["exact_match"]["ci_low"] < cand.mean() < measured["exact_match"]["ci_high"]
    assert not {"ece", "nll", "brier"} & measured.keys()


def test_a_non_binary_metric_is_paired_on_the_documents_differences(
    tmp_path: Path, isolated_home: Path
) -> None:
    rng = np.random.default_rng(5)
    f1_a = np.round(rng.random(N), 4)
    f1_b = np.clip(np.round(f1_a + rng.normal(0.05, 0.1, N), 4), 0, 1)
    a = write(tmp_path / "a.jsonl", [gen_line(i, True, f1=float(f)) for i, f in enumerate(f1_a)])
    b = write(tmp_path / "b.jsonl", [gen_line(i, True, f1=float(f)) for i, f in enumerate(f1_b)])
    policy = tmp_path / "f1.toml"
    policy.write_text('[policy]\nname = "f1"\n\n[[rules]]\nmetric = "exact_match"\nkind = "non_inferiority"\n'
                      'margin = 0.01\n')  # fmt: skip
    code, document, err = gate(str(a), str(b), "--policy", str(policy), "--out", str(tmp_path))
    assert code == 0, err  # every document right in both: exact match is equal, and non-inferior
    measured = {m["name"]: m for m in document["measurements"]}
    assert measured["f1"]["value"] == pytest.approx(f1_b.mean())
    assert measured["f1"]["ci_low"] < f1_b.mean() < measured["f1"]["ci_high"]
    paired = {c["name"]: c for c in document["verdict"]["comparisons"]}
    assert set(paired) == {"exact_match", "f1"}  # every metric of the logs, named by a rule or not
    diff = f1_b - f1_a
    assert paired["f1"]["delta"] == pytest.approx(diff.mean())
    # The paired percentile interval against the normal one on the differences. With 1,000 resamples an
    # end's Monte Carlo error is sqrt(.025 * .975 / 1000) / phi(1.96) = 0.085 standard errors, 4.3% of
    # the half-width: 0.15 of it is three and a half of those.
    half = 1.96 * diff.std(ddof=1) / np.sqrt(N)
    assert paired["f1"]["delta_ci_low"] == pytest.approx(diff.mean() - half, abs=0.15 * half)
    assert paired["f1"]["delta_ci_high"] == pytest.approx(diff.mean() + half, abs=0.15 * half)
    assert paired["f1"]["p_value"] < 0.01  # a shift of 0.05 at a spread of 0.1 over 220 documents


def test_a_policy_may_gate_a_metric_the_logs_hold_and_is_refused_one_they_lack(
    tmp_path: Path, isolated_home: Path
) -> None:
    """F1 is no metric of assay's catalogue: a policy file may still name it, since the gate reads the
    policy once it knows the logs' metrics. A drop of 0.05 against a margin of 0.02 fails (exit 1)."""
    rng = np.random.default_rng(6)
    f1_a = np.round(rng.random(N), 4)
    f1_b = np.clip(np.round(f1_a - rng.normal(0.05, 0.05, N), 4), 0, 1)
    a = write(tmp_path / "a.jsonl", [gen_line(i, True, f1=float(f)) for i, f in enumerate(f1_a)])
    b = write(tmp_path / "b.jsonl", [gen_line(i, True, f1=float(f)) for i, f in enumerate(f1_b)])
    policy = tmp_path / "f1.toml"
    policy.write_text('[policy]\nname = "f1"\n\n[[rules]]\nmetric = "f1"\nkind = "non_inferiority"\n'
                      'margin = 0.02\n')  # fmt: skip
    code, document, err = gate(str(a), str(b), "--policy", str(policy))
    assert code == 1, err
    (rule,) = document["verdict"]["rules"]
    assert rule["metric"] == "f1" and rule["status"] == "ok" and rule["passed"] is False
    assert rule["delta"] == pytest.approx((f1_b - f1_a).mean()) and rule["delta_ci_high"] < -0.02
    policy.write_text(policy.read_text().replace('"f1"', '"pass@1"'))
    code, _, err = gate(str(a), str(b), "--policy", str(policy))
    assert code == 2 and "unknown metric 'pass@1'" in err and "f1" in err


def test_a_log_of_two_filters_is_read_one_filter_at_a_time(tmp_path: Path, isolated_home: Path) -> None:
    base, cand = paired_hits(seed=7, lost=2, won=6)
    strict = [gen_line(i, bool(h)) for i, h in enumerate(base)]
    flexible = [gen_line(i, True, filt="flexible-extract") for i in range(N)]
    a = write(tmp_path / "a.jsonl", [x for pair in zip(strict, flexible, strict=True) for x in pair])
    b = write(tmp_path / "b.jsonl", [gen_line(i, bool(h)) for i, h in enumerate(cand)] + flexible)
    code, _, err = gate(str(a), str(b))
    assert code == 2 and "2 filters (flexible-extract, strict-match)" in err and "a.jsonl#flexible" in err
    code, document, err = gate(f"{a}#strict-match", f"{b}#strict-match", "--out", str(tmp_path))
    assert code in (0, 1), err
    paired = document["verdict"]["comparisons"][0]
    assert paired["delta"] == pytest.approx(4 / N)
    assert paired["p_value"] == pytest.approx(binomtest(6, 8, 0.5).pvalue, rel=1e-9)
    assert read_generation_samples(f"{a}#flexible-extract").scores["exact_match"].mean() == 1.0
    code, _, err = gate(f"{a}#none", f"{b}#strict-match")
    assert code == 2 and "no lines of filter 'none'" in err


def test_eval_of_a_log_measures_its_metrics_and_writes_the_report(
    tmp_path: Path, isolated_home: Path
) -> None:
    hits = np.arange(40) % 4 != 0
    log = write(
        tmp_path / "samples_triviaqa_2026-12-01T10-00-00.jsonl",
        [gen_line(i, bool(h)) for i, h in enumerate(hits)],
    )
    result = CliRunner().invoke(app, ["eval", str(log), "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    measured = {m["name"]: m for m in document["measurements"]}
    assert set(measured) == {"exact_match"} and measured["exact_match"]["value"] == pytest.approx(0.75)
    assert document["models"]["candidate"]["lm_eval"]["task"] == "triviaqa"
    assert document["dataset"]["class_names"] == ["no match", "match"]
    assert list(tmp_path.glob("eval-*.html"))


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda x: x.update(exact_match="yes"), "'exact_match' is 'yes', not a number"),
        (lambda x: x.update(metrics=["exact_match", "f1"]), "scored by \\['exact_match', 'f1'\\]"),
        (lambda x: x.update(filtered_resps=[["-1.0", "False"], ["-2.0", "True"]]), "not generated text"),
        (lambda x: x.update(doc_id=0), "doc_id 0 appears twice"),
    ],
)
def test_bad_logs_are_refused_with_the_reason(tmp_path: Path, change: Any, match: str) -> None:
    lines = [gen_line(i, i % 2 == 0) for i in range(3)]
    change(lines[1])
    with pytest.raises(DataError, match=match):
        read_generation_samples(write(tmp_path / "bad.jsonl", lines))
    graded = [gen_line(i, True, f1=0.5) for i in range(3)]
    for line in graded:
        line["metrics"], line["exact_match"] = ["f1"], None
    with pytest.raises(DataError, match="none of its metrics \\(f1\\) is 0 or 1"):
        _ = read_generation_samples(write(tmp_path / "graded.jsonl", graded)).primary


def test_a_log_and_a_multiple_choice_file_do_not_gate(tmp_path: Path, isolated_home: Path) -> None:
    from tests.unit.llm.test_lmeval import model_logs

    generation = write(tmp_path / "gen.jsonl", [gen_line(i, True) for i in range(8)])
    _, lines = model_logs(8, np.ones(8, dtype=bool), seed=0)
    choices = write(tmp_path / "mc.jsonl", lines)
    code, _, err = gate(str(generation), str(choices))
    assert code == 2 and "is an lm-eval generation log and the other file is not" in err

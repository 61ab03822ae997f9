"""``assay compress`` and ``assay variants list`` as a user drives them, on scikit-learn's digits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from assay.format import format_value
from tests.integration.test_cli import TRAIN, invoke, ok_json


def test_compress_then_list_variants(tmp_path: Path) -> None:
    ok_json(*TRAIN)
    code, stdout, stderr = invoke("compress", "digits@v1", "--only", "onnx_fp32,ort_dynamic_int8", "--json")
    assert code in (0, 1), stderr  # 1 only when no variant passed: a verdict, not a crash
    doc = json.loads(stdout)
    assert [t["key"] for t in doc["trials"]] == ["onnx_fp32", "ort_dynamic_int8"]
    assert Path(doc["report"]).is_file() and Path(doc["json"]).is_file()
    assert (code == 0) == (doc["best"] is not None)
    onnx = doc["trials"][0]
    assert onnx["status"] == "passed"  # the same function in another runtime: identical predictions
    assert onnx["accuracy_delta"]["delta"] == 0.0
    variants = ok_json("variants", "list", "digits")
    assert [v["recipe"] for v in variants] == ["onnx_fp32", "ort_dynamic_int8"]
    assert all(v["parent"] == "digits@v1" and v["root"] == "digits@v1" for v in variants)
    code, stdout, _ = invoke("variants", "list", "digits")
    assert code == 0 and "onnx_fp32" in stdout
    # A variant's gate status is its verdict: promoting a passed one works like any gated version.
    code, _, stderr = invoke("models", "promote", onnx["version"])
    assert code == 0, stderr
    # What the search's models cost: this machine's figures are its timings priced, the rest projected.
    cost = ok_json("cost", "digits")
    assert cost["search"] == doc["json"]
    assert [t["method"] for t in cost["targets"]] == ["measured"] + ["projected"] * (len(cost["targets"]) - 1)
    assert len(cost["targets"]) >= 3
    local = cost["targets"][0]
    root_b1 = cost["rows"][0]["costs"]["this machine"]["b1"]
    latency_s = doc["root"]["metrics"]["latency_p50_b1"]["value"] / 1e3
    assert root_b1["usd"] == pytest.approx(1000 * latency_s / 3600 * local["usd_per_hour"])
    assert all(r["costs"]["raspberry-pi-5"]["b1"]["method"] == "projected" for r in cost["rows"])
    assert cost["cheapest"]["this machine"]["b1"] in {
        "root",
        *(t["key"] for t in doc["trials"] if t["status"] == "passed"),
    }
    code, stdout, stderr = invoke("cost", "digits@v1", "--search", doc["json"])
    assert code == 0, stderr
    assert "USD per 1,000 inferences at batch 1" in stdout and "cheapest passing model per target" in stdout
    assert "never measured there" in stdout  # target names fold to the terminal's width: the JSON has them


def test_compress_bad_arguments_exit_2(tmp_path: Path) -> None:
    ok_json(*TRAIN)
    code, _, stderr = invoke("compress", "digits@v1", "--only", "no_such_candidate")
    assert code == 2 and "unknown candidates ['no_such_candidate']" in stderr and "Traceback" not in stderr
    code, _, stderr = invoke("compress", "digits@v1", "--objective", "speed", "--only", "onnx_fp32")
    assert code == 2 and "Unknown objective 'speed'" in stderr
    code, _, stderr = invoke("compress", "nosuch@v1")
    assert code == 2 and "No model named 'nosuch'" in stderr
    code, stdout, _ = invoke("variants", "list", "digits")
    assert code == 0 and "no compressed variants yet" in stdout
    code, _, stderr = invoke("cost", "digits")
    assert code == 2 and "No compression search of digits in " in stderr and "Traceback" not in stderr
    code, _, stderr = invoke("cost", "nosuch")
    assert code == 2 and "No model named 'nosuch'" in stderr
    bad = tmp_path / "targets.toml"
    bad.write_text("schema = 1\n")
    code, _, stderr = invoke("cost", "digits", "--targets", str(bad))
    assert code == 2 and f"{bad}: 'defaults': Field required (got {{'schema': 1}})" in stderr


LENIENT = """
[policy]
name = "lenient"
n_bootstrap = 200
[[rules]]
metric = "accuracy"
kind = "non_inferiority"
margin = 0.05
"""


def _size(point: dict) -> float:  # type: ignore[type-arg]
    return float(point["metrics"]["size_on_disk"]["value"])


def test_a_larger_variant_is_not_best_and_the_search_exits_1() -> None:
    ok_json(*TRAIN)
    code, stdout, stderr = invoke(
        "compress", "digits@v1", "--objective", "size", "--only", "onnx_fp32", "--json"
    )
    assert code == 1, stderr
    doc = json.loads(stdout)
    (onnx,) = doc["trials"]
    # The export carries its graph beside the same fp32 weights: it passes (identical predictions) and
    # is larger than the parent's safetensors, deterministically.
    assert onnx["status"] == "passed" and _size(onnx) > _size(doc["root"])
    larger = _size(onnx) / _size(doc["root"])
    assert onnx["versus_parent"]["size_on_disk"]["ratio"] == f"{larger:.2f}x larger"
    assert doc["best"] is None and doc["outcome"]["verdict"] == "no_improvement"
    assert doc["outcome"]["message"].startswith(
        f"no variant improves on the parent for size: best passing was onnx_fp32 ({onnx['version']}) at "
    )
    assert doc["outcome"]["message"].endswith(f"({larger:.2f}x larger)")
    code, stdout, _ = invoke("compress", "digits@v1", "--objective", "size", "--only", "onnx_fp32")
    assert code == 1 and "no variant improves on the parent for size" in stdout
    assert "best passing variant" not in stdout


def test_a_smaller_passing_variant_is_named_best(tmp_path: Path) -> None:
    ok_json(*TRAIN)
    policy = tmp_path / "lenient.toml"
    policy.write_text(LENIENT)
    args = (
        "compress",
        "digits@v1",
        "--policy",
        str(policy),
        "--objective",
        "size",
        "--only",
        "ort_dynamic_int8",
    )
    code, stdout, stderr = invoke(*args, "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    (int8,) = doc["trials"]
    smaller = _size(doc["root"]) / _size(int8)
    assert int8["status"] == "passed" and smaller > 1
    assert doc["best"] == "ort_dynamic_int8" and doc["outcome"]["verdict"] == "improves"
    assert doc["outcome"]["message"] == (
        f"best passing variant for size: ort_dynamic_int8 ({int8['version']}) at "
        f"{format_value(_size(int8), 'size_on_disk', 'bytes')} against the parent's "
        f"{format_value(_size(doc['root']), 'size_on_disk', 'bytes')} ({smaller:.2f}x smaller)"
    )
    code, stdout, _ = invoke(*args)
    assert code == 0 and f"({smaller:.2f}x smaller)" in stdout


def test_install_hints_reach_the_console_intact(monkeypatch: pytest.MonkeyPatch) -> None:
    ok_json(*TRAIN)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as without the compress extra: import fails
    code, stdout, stderr = invoke("compress", "digits@v1", "--only", "onnx_fp32")
    assert code == 1
    hint = "onnx_fp32: skipped - ONNX export needs onnx and onnxscript: pip install 'assay[compress]'"
    assert hint in stderr and "no variant passed the gate" in stdout
    report = Path(stdout.split("Report: ")[1].split()[0])
    assert "pip install &#39;assay[compress]&#39;" in report.read_text()


def test_derived_text_is_not_markup_and_is_not_cut() -> None:
    from assay.cli.compress import _skipped_lines, _variants_table

    key = "ort_static_int8-fp32[/features/features.0/Conv]"  # a layer fallback's key
    hint = "This feature needs the package 'onnxruntime'. Install it with: pip install 'assay[compress]'"
    trials = [
        {"key": key, "status": "error", "reason": f"ImportError: {hint}", "metrics": {}},
        {"key": "onnx_fp32", "status": "skipped", "reason": hint, "metrics": {}},
        {"key": "ort_dynamic_int8", "status": "skipped", "reason": hint, "metrics": {}},
    ]
    console = Console(width=80, record=True)
    console.print(_variants_table(trials, None, "latency_p50_b1"))  # unescaped, rich raises MarkupError
    table = console.export_text()
    assert "onnx_fp32" not in table  # skipped candidates are listed once per reason, below the table
    folded = "".join(line.strip("│ ").split("│")[0].strip() for line in table.splitlines()[3:])
    assert key in folded  # folded over lines, never cut short with an ellipsis
    assert _skipped_lines(trials) == [f"skipped onnx_fp32, ort_dynamic_int8: {hint}"]

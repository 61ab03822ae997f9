"""``assay compress`` and ``assay variants list`` as a user drives them, on scikit-learn's digits."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_compress_bad_arguments_exit_2() -> None:
    ok_json(*TRAIN)
    code, _, stderr = invoke("compress", "digits@v1", "--only", "no_such_candidate")
    assert code == 2 and "unknown candidates ['no_such_candidate']" in stderr and "Traceback" not in stderr
    code, _, stderr = invoke("compress", "digits@v1", "--objective", "speed", "--only", "onnx_fp32")
    assert code == 2 and "Unknown objective 'speed'" in stderr
    code, _, stderr = invoke("compress", "nosuch@v1")
    assert code == 2 and "No model named 'nosuch'" in stderr
    code, stdout, _ = invoke("variants", "list", "digits")
    assert code == 0 and "no compressed variants yet" in stdout

"""The Python API: the verbs a user scripts, and a gate on two predictions files that imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assay import api
from assay.errors import UsageError
from assay.outputs import from_arrays, write_predictions

SCRIPT = """
import sys, json
from assay import api
gated = api.gate(sys.argv[1], sys.argv[2], home=sys.argv[3])
evaluated = api.evaluate(sys.argv[1], home=sys.argv[3])
accuracy = [m["value"] for m in evaluated.document["measurements"] if m["name"] == "accuracy"]
print(json.dumps({"torch": "torch" in sys.modules, "passed": gated.verdict.passed, "accuracy": accuracy}))
"""


def _files(tmp_path: Path, skill_b: float) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 600)

    def write(skill: float, name: str) -> Path:
        right = rng.random(600) < skill
        guess = np.where(right, labels, (labels + 1) % 4)
        probs = np.full((600, 4), 0.1)
        probs[np.arange(600), guess] = 0.7
        return write_predictions(from_arrays(labels, probs=probs), tmp_path / name)

    return write(0.8, "a.npz"), write(skill_b, "b.npz")


def test_a_gate_on_two_predictions_files_imports_no_torch(tmp_path: Path) -> None:
    a, b = _files(tmp_path, 0.8)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(a), str(b), str(tmp_path / "home")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout)
    assert result["torch"] is False
    labels = np.load(a)["label"]
    want = float((np.load(a)["probs"].argmax(1) == labels).mean())
    assert result["accuracy"] == [pytest.approx(want)]


def test_the_gate_refuses_a_much_worse_candidate_and_records_the_run(tmp_path: Path) -> None:
    a, b = _files(tmp_path, 0.5)
    result = api.gate(a, b, home=tmp_path / "home")
    assert result.verdict is not None and not result.verdict.passed
    assert result.html.is_file() and result.run_id >= 1
    runs = api.open_workspace(tmp_path / "home").store.get_run(result.run_id)
    assert runs.document["verdict"]["passed"] is False


def test_errors_name_the_parameter(tmp_path: Path) -> None:
    a, b = _files(tmp_path, 0.8)
    with pytest.raises(UsageError, match="'data' parameter applies to models"):
        api.gate(a, b, data="sklearn:digits", home=tmp_path)
    with pytest.raises(UsageError, match="'data' parameter must be a data source"):
        api.evaluate("m@1", data=3, home=tmp_path)  # type: ignore[arg-type]


def test_the_package_exports_its_verbs() -> None:
    import assay

    for name in ("import_model", "load_model", "promote", "rollback", "open_workspace"):
        assert getattr(assay, name) is getattr(api, name) and name in assay.__all__

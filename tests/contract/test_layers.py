"""The lower layers load and judge without PyTorch (.importlinter draws the layers; this runs them).

A gate on two predictions files needs only the outputs, the metrics, the paired statistics and the
policy: a fresh interpreter imports those modules, reads the default policy, judges two predictions
files written to disk, and must not have imported torch on the way (a user gating predictions need not
install it, and it takes seconds to load).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LOWER = (
    "assay.catalogue",
    "assay.compare",
    "assay.evaluate",
    "assay.format",
    "assay.gate",
    "assay.inference",
    "assay.measurement",
    "assay.metrics",
    "assay.metrics.efficiency",
    "assay.outputs",
    "assay.stats",
)

_SCRIPT = """
import json, sys
import numpy as np
import {modules}
from assay.gate import Policy, evaluate_policy
from assay.outputs import from_arrays, load_predictions, write_predictions

imported = "torch" in sys.modules
rng = np.random.default_rng(0)
labels = rng.integers(0, 3, 400)
logits = rng.normal(size=(400, 3)) + 3.0 * np.eye(3)[labels]
paths = []
for name, noise in (("baseline", 0.0), ("candidate", 0.3)):
    outputs = from_arrays(labels, logits=logits + noise * rng.normal(size=logits.shape), source=name)
    paths.append(write_predictions(outputs, sys.argv[1] + "/" + name + ".npz"))
verdict = evaluate_policy(Policy.default(), *(load_predictions(p) for p in paths))
print(json.dumps({{"after_import": imported, "after_gate": "torch" in sys.modules,
                  "rules": [r.status for r in verdict.rules]}}))
"""


def test_gating_two_predictions_files_imports_no_torch(tmp_path: Path) -> None:
    script = _SCRIPT.format(modules=", ".join(LOWER))
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["after_import"] is False and result["after_gate"] is False, result
    # The verdict was reached (latency, which needs timings, is skipped), not crashed around.
    assert result["rules"] == ["ok", "ok", "ok", "ok", "skipped"]


def test_the_probe_sees_torch_when_it_is_imported(tmp_path: Path) -> None:
    # The check above can fail: the same script with torch imported among the modules reports it.
    script = _SCRIPT.format(modules=", ".join((*LOWER, "torch")))
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["after_import"] is True

"""The compression search, the trust suite and the data audit on a local Ray cluster (``ray.init`` with 2
CPUs) give the documents the local executor gives: the same trials in the same order, the same verdicts,
the same frontier and the same measurements, the models built in Ray workers byte for byte the ones built
here. Ctrl-C cancels the tasks and leaves the search document whole.

Both sides run torch on one thread (each Ray task declares one CPU, and its torch uses that many), so the
builds and the per-example outputs agree exactly; what differs is only what no two runs share, the
timings, which are compared for their presence, not their values.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from assay.cli import app
from assay.compress import Candidate, Search, compress
from assay.compress.search import COST_AXES, Trial
from assay.data import load_dataset, parse_data_arg
from assay.executor import RayExecutor
from assay.gate import Policy
from assay.measurement import Measurement
from assay.release import Workspace, train_version
from assay.train import TrainConfig
from assay.trust import TrustConfig
from assay.trust_runs import trust_version
from tests.conftest import BOTH_CORES, write_bars
from tests.unit.compress.conftest import TINY_CNN
from tests.unit.data.audit.conftest import smooth_images

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'assay[ray]'")
# The cluster takes both cores: its tests run on one pytest worker, one at a time, never beside the other
# tests that need them (see tests/conftest.py: BOTH_CORES).
pytestmark = pytest.mark.xdist_group(BOTH_CORES)

POLICY = """
[policy]
name = "tiny"
n_bootstrap = 200
[[rules]]
metric = "accuracy"
kind = "non_inferiority"
margin = 0.05
"""
PLAN = [
    Candidate("onnx_fp32", "onnx_fp32"),
    Candidate("pruned50", "prune_structured", {"ratio": 0.5}),
    Candidate("ort_dynamic_int8", "ort_dynamic_int8"),
    Candidate("pruned50+ort_static_int8", "ort_static_int8", base="pruned50"),
]
TIMED = {*COST_AXES, "throughput"} - {"size_on_disk"}
EXACT = ("size_on_disk", "parameters")  # the efficiency measurements that are counted, not timed
AUDIT = "class_balance,exact_duplicates,near_duplicates,perceptual_duplicates,leakage"
SMALL = TrustConfig(
    adversarial_n=40, pgd_steps=2, corruption_n=60, ood_n=40, membership_n=60, n_boot=100, square_n=10,
    square_queries=5, corruptions=("gaussian_noise", "contrast"),
)  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayExecutor]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each one-CPU Ray task
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield RayExecutor("auto", cpus=1, memory_gb=1)
    finally:
        ray.shutdown()
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, str]:
    folder = tmp_path_factory.mktemp("ray")
    spec = parse_data_arg(f"npz:{write_bars(folder / 'bars.npz', 600, 300, noise=0.4, bar=0.5)}")
    ws = Workspace.open(folder / "home")
    config = TrainConfig(epochs=3, precision="fp32")
    version, _ = train_version(ws, "bars", load_dataset(spec), spec, arch="cnn", config=config,
                               spec_overrides=TINY_CNN, progress=False)  # fmt: skip
    return ws, version.ref


def _untimed(measurements: Iterable[Measurement]) -> dict[str, tuple[Any, ...]]:
    """Every measurement but the timings, as (status, value, interval): what two runs share exactly."""
    return {
        m.name: (m.status, m.value, m.ci_low, m.ci_high)
        for m in measurements
        if m.family != "efficiency" or m.name in EXACT
    }


def _points(metrics: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """A trial's point metrics but the timings."""
    return {name: (m["value"], m["ci_low"], m["ci_high"]) for name, m in metrics.items() if name not in TIMED}


def test_search_on_ray_equals_the_local_search(cluster: RayExecutor, root: tuple[Workspace, str]) -> None:
    ws, ref = root
    policy = Policy.from_toml_text(POLICY)
    local = compress(ws, ref, policy, plan=PLAN, finetune_epochs=1).document
    remote = compress(ws, ref, policy, plan=PLAN, finetune_epochs=1, executor=cluster).document
    assert remote["executor"]["kind"] == "ray" and remote["executor"]["cluster_cpus"] == 2
    assert local["executor"] == {"kind": "local"}
    assert (
        [t["key"] for t in remote["trials"]] == [t["key"] for t in local["trials"]] == [c.key for c in PLAN]
    )
    assert remote["root"]["metrics"].keys() == local["root"]["metrics"].keys()
    assert _points(remote["root"]["metrics"]) == _points(local["root"]["metrics"])
    for mine, theirs in zip(remote["trials"], local["trials"], strict=True):
        assert mine["status"] == theirs["status"] and mine["status"] in ("passed", "failed"), (mine, theirs)
        assert mine["gate_summary"] == theirs["gate_summary"]
        # Built in a worker from the same seeds: the very files, so the same version, gated again.
        assert mine["version"] == theirs["version"] and mine["parent"] == theirs["parent"]
        assert any("gated again, not registered again" in n for n in mine["notes"])
        assert mine["metrics"].keys() == theirs["metrics"].keys()
        assert _points(mine["metrics"]) == _points(theirs["metrics"])
        assert mine["accuracy_delta"] == theirs["accuracy_delta"]
        assert all(mine["metrics"][name]["value"] > 0 for name in ("latency_p50_b1", "throughput"))
        ours, local_run = ws.store.get_run(mine["run_id"]), ws.store.get_run(theirs["run_id"])
        assert mine["run_id"] != theirs["run_id"]  # each search recorded its own gate run
        assert _untimed(ours.measurements) == _untimed(local_run.measurements)
        assert len(_untimed(ours.measurements)) > 10  # calibration, quality, per class: not only accuracy
        assert _untimed(ours.baseline_measurements) == _untimed(local_run.baseline_measurements)
    assert remote["frontier"]["size_on_disk"] == local["frontier"]["size_on_disk"]
    assert remote["machine"]["threads"] == local["machine"]["threads"] == 1  # probed where the tasks ran


def test_trust_on_ray_equals_the_local_suite(
    cluster: RayExecutor, root: tuple[Workspace, str], tmp_path: Path
) -> None:
    ws, ref = root
    local = trust_version(ws, ref, config=SMALL, out_dir=tmp_path / "local").result
    remote = trust_version(ws, ref, config=SMALL, out_dir=tmp_path / "ray", executor=cluster).result
    assert [m.name for m in remote.measurements] == [m.name for m in local.measurements]
    for mine, theirs in zip(remote.measurements, local.measurements, strict=True):
        assert (mine.status, mine.value, mine.ci_low, mine.ci_high) == pytest.approx(
            (theirs.status, theirs.value, theirs.ci_low, theirs.ci_high), nan_ok=True
        ), mine.name
    assert remote.plots.keys() == local.plots.keys()
    assert remote.per_example.keys() == local.per_example.keys()
    assert remote.seconds.keys() == local.seconds.keys()


def test_ctrl_c_cancels_the_tasks_and_keeps_the_document_whole(
    cluster: RayExecutor, root: tuple[Workspace, str], tmp_path: Path
) -> None:
    ws, ref = root

    def interrupt(trial: Trial) -> None:
        raise KeyboardInterrupt  # as Ctrl-C would, once the first candidate is recorded

    search = Search(ws, ref, Policy.from_toml_text(POLICY), plan=PLAN, finetune_epochs=1, on_trial=interrupt,
                    out_dir=tmp_path, executor=cluster)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        search.run()
    saved = sorted(tmp_path.glob("compress-*.json"))
    assert len(saved) == 1 and not list(tmp_path.glob(".*.tmp"))
    doc = json.loads(saved[0].read_text())
    assert doc["status"] == "interrupted" and len(doc["trials"]) == 1
    # The cancelled tasks give their CPUs back: nothing keeps running for a search that has ended.
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2


def test_data_audit_on_ray_equals_the_local_audit(cluster: RayExecutor, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.rint(smooth_images(240, 11) * 255).astype(np.uint8)[:, 0]
    y = rng.integers(0, 3, 240)
    x[200:205] = x[20:25]  # test images copied from train: leakage the two runs must both find
    data = tmp_path / "leaky.npz"
    np.savez(data, x_train=x[:160], y_train=y[:160], x_val=x[160:200], y_val=y[160:200], x_test=x[200:],
             y_test=y[200:])  # fmt: skip
    documents = []
    for where in ([], ["--ray", "auto"]):
        out = tmp_path / ("ray" if where else "local")
        args = ["data", "audit", "--data", f"npz:{data}", "--checks", AUDIT, "--out", str(out), "--json"]
        result = CliRunner().invoke(app, [*args, *where])
        assert result.exit_code == 0, result.output
        documents.append(json.loads(result.stdout))
    local, remote = documents
    assert remote["summary"] == local["summary"] and local["summary"]["leakage_test_train"] > 0

    def findings(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(m["name"], m["status"], m["value"], m.get("details")) for m in doc["measurements"]]

    assert findings(remote) == findings(local)


def test_a_text_search_on_ray_builds_on_transformers_folders_sent_as_files(
    cluster: RayExecutor, tmp_path: Path
) -> None:
    """A transformers classifier reaches the workers as its folder's files, and so does the dropped-layer
    model that later candidates build on: the verdicts and untimed figures equal the local run's."""
    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    from tests.unit.compress.test_text import write_reviews
    from tests.unit.models.test_adapter_hf import tiny_classifier

    path = write_reviews(tmp_path / "reviews.csv")
    tiny_classifier(tmp_path / "bert")
    home = ["--home", str(tmp_path / "home")]
    data = ["--data", f"csv:{path}", "--text", "review", "--target", "label"]
    runner = CliRunner()
    result = runner.invoke(
        app, ["models", "import", "reviews", str(tmp_path / "bert"), *data, *home, "--json"]
    )
    assert result.exit_code == 0, result.output
    only = ["--only", "onnx_fp32,half_layers,half_layers+ort_defaults"]
    documents = []
    for where in ([], ["--ray", "auto"]):
        args = ["compress", "reviews@v1", *only, *home, "--out", str(tmp_path / "reports"), "--json", *where]
        result = runner.invoke(app, args)
        assert result.exit_code in (0, 1), result.output
        documents.append(json.loads(result.stdout))
    local, remote = documents
    assert remote["executor"]["kind"] == "ray"
    for mine, theirs in zip(remote["trials"], local["trials"], strict=True):
        assert mine["key"] == theirs["key"] and mine["status"] == theirs["status"] in ("passed", "failed")
        assert _points(mine["metrics"]) == _points(theirs["metrics"]) and mine["flops"] == theirs["flops"]

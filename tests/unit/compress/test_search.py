"""The search end to end on a tiny CNN: lineage, verdicts, the saved document, failure, interruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assay.compress import Budget, Candidate, Search, compress, list_variants
from assay.compress.search import Trial
from assay.data import Dataset, DataSpec
from assay.gate import Policy
from assay.metrics.efficiency import moves_the_statistic
from assay.release import Workspace, train_version
from assay.store.records import VersionInfo
from assay.train import TrainConfig
from tests.unit.compress.conftest import TINY_CNN

POLICY = """
[policy]
name = "tiny"
alpha = 0.05
n_bootstrap = 200
[[rules]]
metric = "accuracy"
kind = "non_inferiority"
margin = 0.05
"""
IMPOSSIBLE = """
[policy]
name = "impossible"
n_bootstrap = 200
[[rules]]
metric = "accuracy"
kind = "improvement"
min_effect = 0.5
"""


def _trained(home: Path, data: Dataset, spec: DataSpec) -> tuple[Workspace, VersionInfo]:
    ws = Workspace.open(home)
    config = TrainConfig(epochs=4, precision="fp32")
    version, _ = train_version(ws, "bars", data, spec, arch="cnn", config=config, spec_overrides=TINY_CNN,
                               progress=False)  # fmt: skip
    return ws, version


@pytest.fixture
def own_root(isolated_home: Path, bars_data: Dataset, bars_spec: DataSpec) -> tuple[Workspace, VersionInfo]:
    """A store of its own, for the test that lists every variant in it."""
    return _trained(isolated_home, bars_data, bars_spec)


@pytest.fixture(scope="module")
def root(
    tmp_path_factory: pytest.TempPathFactory, bars_data: Dataset, bars_spec: DataSpec
) -> tuple[Workspace, VersionInfo]:
    """One trained root shared by the tests that only read their own search's document."""
    return _trained(tmp_path_factory.mktemp("shared-home"), bars_data, bars_spec)


PLAN = [
    Candidate("onnx_fp32", "onnx_fp32"),
    Candidate("pruned50", "prune_structured", {"ratio": 0.5}),
    Candidate("pruned50+ort_static_int8", "ort_static_int8", base="pruned50"),
]


def test_search_registers_gates_and_reports(own_root: tuple[Workspace, VersionInfo]) -> None:
    ws, parent = own_root
    result = compress(ws, parent.ref, Policy.from_toml_text(POLICY), plan=PLAN, finetune_epochs=1)
    doc = result.document
    assert doc["status"] == "complete" and [t["key"] for t in doc["trials"]] == [c.key for c in PLAN]
    assert json.loads(result.json.read_text())["trials"] == doc["trials"]  # the file is the document
    assert result.html.is_file() and "Pareto frontier" in result.html.read_text()
    trials = {t["key"]: t for t in doc["trials"]}
    for t in doc["trials"]:
        assert t["status"] in ("passed", "failed"), t
        version = ws.store.resolve(t["version"])
        assert version.gate_status == t["status"]  # the verdict is the version's gate status
        assert (
            version.lineage["recipe"]["root"] == parent.ref and version.lineage["recipe"]["label"] == t["key"]
        )
        assert version.lineage["contract"] == parent.lineage["contract"]  # a variant takes its root's inputs
        assert Path(t["report"]).is_file()
    # Lineage: a variant built on another names that one as parent; the rest name the root.
    assert trials["pruned50+ort_static_int8"]["parent"] == trials["pruned50"]["version"]
    assert trials["onnx_fp32"]["parent"] == parent.ref and trials["pruned50"]["parent"] == parent.ref
    assert ws.store.resolve(trials["pruned50"]["version"]).spec["channels"] == [4, 8]
    assert trials["onnx_fp32"]["metrics"]["accuracy"]["value"] == pytest.approx(
        doc["root"]["metrics"]["accuracy"]["value"]
    )
    # The frontier and the best are drawn from what was evaluated; the best is the fastest passing one
    # of those faster than the parent beyond the noise, by the gate's own comparison of the timings.
    keys = set(trials) | {"root"}
    assert all(front and set(front) <= keys for front in doc["frontier"].values())
    for t in doc["trials"]:
        recorded = {c.name: c for c in ws.store.get_run(t["run_id"]).comparisons}
        for metric, vs in t["versus_parent"].items():
            c = recorded[metric]
            assert (vs["parent"], vs["variant"], vs["ci_low"], vs["ci_high"]) == pytest.approx(
                (c.baseline, c.candidate, c.delta_ci_low, c.delta_ci_high)
            )
            better = c.delta_ci_low > 0 if c.higher_is_better else c.delta_ci_high < 0
            assert vs["improves"] == better
        assert t["versus_parent"]["size_on_disk"]["parent"] == doc["root"]["metrics"]["size_on_disk"]["value"]
    improving = [
        t for t in doc["trials"] if t["status"] == "passed" and not t["flags"]
        and t["versus_parent"]["latency_p50_b1"]["improves"]
        and not any(moves_the_statistic(f) for side in t["versus_parent"]["latency_p50_b1"]["flags"].values()
                    for f in side)
    ]  # fmt: skip
    fastest = min(improving, key=lambda t: t["metrics"]["latency_p50_b1"]["value"]) if improving else None
    assert doc["best"] == (fastest["key"] if fastest else None) and result.best == fastest
    assert doc["outcome"]["verdict"] in (("improves",) if fastest else ("no_improvement", "none_plausible"))
    assert result.exit_code == (0 if fastest else 1) and result.message == doc["outcome"]["message"]
    listed = {v["recipe"]: v for v in list_variants(ws, "bars")}
    assert set(listed) == set(trials) and listed["pruned50"]["gate"] == trials["pruned50"]["status"]
    assert listed["onnx_fp32"]["metrics"]["accuracy"] == pytest.approx(
        trials["onnx_fp32"]["metrics"]["accuracy"]["value"]
    )


def test_nothing_passes_is_a_verdict_and_still_saved(root: tuple[Workspace, VersionInfo]) -> None:
    ws, parent = root
    plan = [
        Candidate("pruned50", "prune_structured", {"ratio": 0.5}),
        Candidate("pruned50+ort_static_int8", "ort_static_int8", base="pruned50"),
        Candidate("onnx_fp32", "onnx_fp32"),
        Candidate("onnx_fp32+x", "ort_static_int8", base="onnx_fp32"),
    ]
    result = compress(ws, parent.ref, Policy.from_toml_text(IMPOSSIBLE), plan=plan, finetune_epochs=1)
    doc = json.loads(result.json.read_text())
    assert doc["status"] == "complete" and doc["best"] is None and result.best is None
    assert doc["outcome"] == {
        "verdict": "none_passed", "best": None, "closest": None, "message": "no variant passed the gate"
    }  # fmt: skip
    assert result.exit_code == 1
    pruned, chained, onnx, on_onnx = doc["trials"]
    assert pruned["status"] == "failed" and "FAIL" in pruned["reason"]
    # A failed base is still built on: its variants are points of the frontier, with their own verdicts,
    # but no layer fallback is tried for them (gated against the root, they cannot pass where it failed).
    assert chained["status"] == "failed" and len(doc["trials"]) == 4
    assert onnx["status"] == "failed"
    assert on_onnx["status"] == "skipped" and "no torch fp32 model to build on" in on_onnx["reason"]
    assert "No variant passed the gate" in result.html.read_text()


def test_interrupted_search_keeps_what_it_did(root: tuple[Workspace, VersionInfo]) -> None:
    ws, parent = root
    seen: list[Trial] = []

    def interrupt(trial: Trial) -> None:
        seen.append(trial)
        raise KeyboardInterrupt

    out = ws.reports_dir / "interrupted"
    search = Search(ws, parent.ref, Policy.from_toml_text(POLICY), plan=PLAN, on_trial=interrupt, out_dir=out)
    with pytest.raises(KeyboardInterrupt):
        search.run()
    saved = sorted(out.glob("compress-*.json"))
    assert len(saved) == 1 and not list(out.glob(".*.tmp"))
    doc = json.loads(saved[0].read_text())
    assert doc["status"] == "interrupted" and [t["key"] for t in doc["trials"]] == ["onnx_fp32"]
    assert doc["frontier"]["latency_p50_b1"] and seen[0].status in ("passed", "failed")
    # The variant it registered is not a torch fp32 model: compressing it again is refused, not attempted.
    variant = doc["trials"][0]["version"]
    assert ws.store.resolve(variant).lineage["recipe"]["method"] == "onnx_fp32"
    with pytest.raises(ValueError, match="compress its fp32 torch parent"):
        compress(ws, variant, Policy.from_toml_text(POLICY), plan=PLAN[:1])


def test_budget_stops_and_says_what_was_left(root: tuple[Workspace, VersionInfo]) -> None:
    ws, parent = root
    result = compress(ws, parent.ref, Policy.from_toml_text(POLICY), plan=PLAN, budget=Budget(max_trials=0))
    assert result.document["trials"] == [] and result.document["status"] == "complete"
    assert result.document["stop_reason"] == (
        "trial budget of 0 reached; not tried: onnx_fp32, pruned50, pruned50+ort_static_int8"
    )
    assert Budget(max_seconds=0).exhausted(0, started=0.0) == "time budget of 0 s reached"


def test_failed_static_int8_gets_layer_fallbacks(root: tuple[Workspace, VersionInfo]) -> None:
    ws, parent = root
    search = Search(ws, parent.ref, Policy.from_toml_text(POLICY), plan=[], budget=Budget(max_trials=0))
    search.run()  # loads the root and its data; tries nothing
    candidate = Candidate("ort_static_int8", "ort_static_int8")
    failed = Trial("ort_static_int8", "ort_static_int8", {}, None, status="failed")
    fallbacks = search._fallbacks(candidate, failed, set())
    assert [len(c.params["exclude"]) for c in fallbacks] == [1, 2]
    assert fallbacks[1].params["exclude"][0] == fallbacks[0].params["exclude"][0]  # worst layer first
    assert search._fallbacks(candidate, Trial("k", "m", {}, None, status="passed"), set()) == []
    assert search._fallbacks(fallbacks[0], failed, set()) == []  # a fallback does not spawn more


def test_unknown_objective_and_duplicate_keys_are_refused(root: tuple[Workspace, VersionInfo]) -> None:
    ws, parent = root
    policy = Policy.from_toml_text(POLICY)
    with pytest.raises(ValueError, match="Unknown objective 'speed'"):
        Search(ws, parent.ref, policy, objective="speed")
    with pytest.raises(ValueError, match="keys must be unique"):
        compress(ws, parent.ref, policy, plan=[PLAN[0], PLAN[0]])


def _np_front(acc: np.ndarray, cost: np.ndarray) -> set[int]:
    """Independent Pareto front by a sweep over costs: at each cost, the most accurate points are on the
    front when they beat every cheaper point (ties with each other are all on it: none dominates)."""
    front, best = set(), -np.inf
    for c in np.unique(cost):
        top = acc[cost == c].max()
        if top > best:
            front |= {int(i) for i in np.flatnonzero((cost == c) & (acc == top))}
            best = top
    return front


def test_pareto_front_matches_a_sweep() -> None:
    from assay.compress.search import pareto_front

    rng = np.random.default_rng(0)
    for _ in range(20):
        acc, cost = rng.integers(0, 6, 12) / 10, rng.integers(1, 6, 12).astype(float)
        points = [{"key": str(i), "metrics": {"accuracy": {"value": a}, "size_on_disk": {"value": c}}}
                  for i, (a, c) in enumerate(zip(acc, cost, strict=True))]  # fmt: skip
        assert {int(k) for k in pareto_front(points, "size_on_disk")} == _np_front(acc, cost)


def test_a_rerun_regates_the_same_version(root: tuple[Workspace, VersionInfo]) -> None:
    ws, parent = root
    policy = Policy.from_toml_text(POLICY)
    first = compress(ws, parent.ref, policy, plan=PLAN[:1]).document["trials"][0]
    n_versions = len(ws.store.list_versions("bars"))
    second = compress(ws, parent.ref, policy, plan=PLAN[:1]).document["trials"][0]
    assert second["version"] == first["version"] and len(ws.store.list_versions("bars")) == n_versions
    assert f"the same model as {first['version']}" in second["notes"][0]
    assert second["run_id"] != first["run_id"]  # a new gate run, recorded like any other

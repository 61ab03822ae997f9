"""The orchestrator and ``assay trust`` end to end on a tiny registered CNN (12x12 bars, 3 classes):
every family reports, measurements are in the schema, the run is recorded with a report and plots,
a variant without gradients is attacked by transfer and Square, and a failing family becomes an error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from assay.cli import app
from assay.data import load_dataset, parse_data_arg
from assay.measurement import Measurement
from assay.release import Workspace, data_for, model_of, train_version
from assay.train import TrainConfig
from assay.trust import FAMILIES, TrustConfig, has_gradients, run_trust
from assay.trust_runs import trust_version
from tests.unit.tolerances import assert_same_decisions, assert_within, network_forward

SMALL = TrustConfig(
    adversarial_n=60,
    pgd_steps=3,
    corruption_n=90,
    ood_n=60,
    membership_n=90,
    n_boot=100,
    square_n=20,
    square_queries=10,
    corruptions=("gaussian_noise", "contrast", "rotate"),
)


def test_the_suite_on_a_registered_version(registered: tuple[Workspace, str], tmp_path: Path) -> None:
    ws, ref = registered
    run = trust_version(ws, ref, config=SMALL, out_dir=tmp_path)
    ms = run.result.measurements
    assert {m.family for m in ms} >= set(FAMILIES)
    by_name = {m.name: m for m in ms}
    errors = [m for m in ms if m.status == "error"]
    assert not errors, errors
    assert by_name["fairness"].status == "skipped"  # the bars data has no groups, and says so
    assert by_name["adv_sanity[linf]"].details["subset"]["n"] == 60
    assert (
        "ood_auroc[digits:energy]" in by_name and "corruption_mca" in by_name and "mia_auc[loss]" in by_name
    )
    for m in ms:  # the JSON schema round trip
        assert Measurement.from_dict(json.loads(json.dumps(m.to_dict()))).name == m.name
    doc = json.loads(run.json.read_text())
    assert {"ood", "adversarial", "robustness"} <= {m["family"] for m in doc["measurements"]}
    names = [m["name"] for m in doc["measurements"]]
    assert "accuracy" in names and len(names) == len(set(names))  # the standard evaluation kept, no clash
    page = run.html.read_text()  # the curves are drawn inside the report, not in files beside it
    section = page[page.index('<section id="robustness-curves"') :].split("</section>")[0]
    assert section.count('<svg class="plot"') == 2 and "Not measured" not in section
    assert "Robust accuracy against eps" in section and "corruption severity" in section
    assert ws.store.get_run(run.run_id) is not None


def test_a_failing_family_is_an_error_not_a_crash(registered: tuple[Workspace, str]) -> None:
    ws, ref = registered
    version = ws.store.resolve(ref)
    model = model_of(ws, version)
    data, _ = data_for(version)
    broken = TrustConfig(families=("robustness", "ood"), corruptions=("no_such",), ood_n=30, n_boot=100)
    result = run_trust(model, data, config=broken)
    assert [m.status for m in result.measurements if m.family == "robustness"] == ["error"]
    assert any(m.status == "ok" for m in result.measurements if m.family == "ood")


def test_a_variant_without_gradients_is_attacked_by_transfer_and_square(
    registered: tuple[Workspace, str],
) -> None:
    ws, ref = registered
    version = ws.store.resolve(ref)
    parent = model_of(ws, version)
    from dataclasses import replace

    variant = replace(parent, manifest={**parent.manifest, "backend": "onnxruntime"})  # no gradients claimed
    assert has_gradients(parent) and not has_gradients(variant)
    data, _ = data_for(version)
    result = run_trust(variant, data, config=replace(SMALL, families=("adversarial",)), parent=parent)
    attacks = {m.details.get("attack") for m in result.measurements}
    assert attacks == {"transfer", "square"}
    assert all(
        m.details["white_box"] is False and "no gradients" in m.details["note"] for m in result.measurements
    )


def test_cli_json(registered: tuple[Workspace, str], tmp_path: Path) -> None:
    ws, ref = registered
    result = CliRunner().invoke(
        app,
        [
            "trust",
            ref,
            "--json",
            "--families",
            "ood,privacy",
            "--n-boot",
            "100",
            "--out",
            str(tmp_path),
            "--home",
            str(ws.store.home),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {m["family"] for m in doc["measurements"]} >= {"ood", "privacy"} and Path(doc["report"]).is_file()
    table = CliRunner().invoke(
        app,
        [
            "trust",
            ref,
            "--families",
            "privacy",
            "--n-boot",
            "100",
            "--out",
            str(tmp_path),
            "--home",
            str(ws.store.home),
        ],
        env={"COLUMNS": "200"},
    )
    assert table.exit_code == 0 and "mia_auc[loss]" in table.stdout and "Report:" in table.stdout
    bad = CliRunner().invoke(app, ["trust", ref, "--families", "vibes", "--home", str(ws.store.home)])
    assert bad.exit_code == 2 and "Unknown --families" in bad.output


def test_trust_measurements_in_a_gate_rule(registered: tuple[Workspace, str]) -> None:
    from assay.gate import Policy, evaluate_policy
    from assay.trust import cached_outputs, gate_ready

    ws, ref = registered
    version = ws.store.resolve(ref)
    model = model_of(ws, version)
    data, _ = data_for(version)
    result = run_trust(model, data, config=TrustConfig(families=("ood",), ood_n=60, n_boot=100))
    auroc = next(m for m in result.measurements if m.name == "ood_auroc[noise:energy]")
    assert auroc.value is not None
    policy_text = """
[policy]
name = "trust"
n_bootstrap = 200
[[rules]]
metric = "ood_auroc[noise:energy]"
kind = "at_least"
threshold = {threshold}
"""
    outputs = cached_outputs(model, ws.cache_dir, version.artifact_digest)(data.test)
    for threshold, expected in ((auroc.value - 0.01, True), (auroc.value + 0.01, False)):
        policy = Policy.from_toml_text(
            policy_text.format(threshold=threshold), extra_metrics=gate_ready(result.measurements)
        )
        verdict = evaluate_policy(
            policy,
            outputs,
            outputs,
            baseline_efficiency=result.measurements,
            candidate_efficiency=result.measurements,
        )
        assert verdict.passed is expected


def test_the_suite_on_a_table(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "home")
    spec = parse_data_arg("sklearn:breast_cancer")
    data = load_dataset(spec)
    version, _ = train_version(
        ws, "cancer", data, spec, arch="mlp", config=TrainConfig(epochs=3, precision="fp32"), progress=False
    )
    model = model_of(ws, version)
    config = TrustConfig(
        families=("robustness", "adversarial", "ood", "fairness", "privacy"), n_boot=100, membership_n=100
    )
    ms = {m.name: m for m in run_trust(model, data, config=config).measurements}
    assert not [m for m in ms.values() if m.status == "error"], ms
    assert "corruption_accuracy[table_missing@5]" in ms and ms["slices_found"].details["tested"] > 0
    assert ms["adv_accuracy"].status == "skipped" and ms["ood"].status == "skipped"


def test_the_suite_predicts_with_the_models_own_weights(registered: tuple[Workspace, str]) -> None:
    """The suite's channels-last copy gives the predictor's logits and leaves the model alone."""
    import torch

    from assay.trust import _logits_fn

    ws, ref = registered
    model = model_of(ws, ws.store.resolve(ref))
    assert model.module is not None
    x = np.random.default_rng(0).random((300, 1, 12, 12), dtype=np.float32)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    fast = _logits_fn(model)(x)
    expected = model.predictor.logits_and_features(x)[0]
    # both within float32 rounding of the module's function in float64 (tests/unit/tolerances.py)
    ref = network_forward(model.module, x)
    assert_within(fast, ref.logits, ref.logits_bound, "the suite's logits")
    assert_within(expected, ref.logits, ref.logits_bound, "the predictor's logits")
    assert_same_decisions(ref.logits, ref.logits_bound, fast, expected, max_undecided=0.02)
    for name, tensor in model.module.state_dict().items():
        assert torch.equal(tensor, before[name]) and tensor.is_contiguous(), name

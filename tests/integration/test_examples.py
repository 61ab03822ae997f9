"""The files in examples/ are what the README points users at: they must stay valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from assay.cli import app
from assay.gate import Policy
from assay.pipeline import load_pipeline

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_policy_is_valid() -> None:
    policy = Policy.from_toml(EXAMPLES / "policy.toml")
    assert [r.metric for r in policy.rules] == ["accuracy", "ece_debiased", "latency_p50_b1"]
    result = CliRunner().invoke(app, ["policy", "--check", str(EXAMPLES / "policy.toml")])
    assert result.exit_code == 0 and "valid, 3 rule(s)" in result.stdout


def test_example_pipeline_loads_with_its_policy() -> None:
    pipeline = load_pipeline(EXAMPLES / "fmnist-small.toml")
    assert pipeline.model.spec == {"channels": [16, 32], "hidden": 64}
    assert pipeline.policy().name == "release"  # the policy path resolves next to the pipeline file


def test_unknown_pipeline_key_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text((EXAMPLES / "fmnist-small.toml").read_text().replace("epochs = 4", "epoch = 4"))
    result = CliRunner().invoke(app, ["run", str(bad)])
    assert result.exit_code == 2 and "'train.epoch'" in result.stderr and "Traceback" not in result.stderr


def test_interrupted_training_leaves_nothing(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during training: exit 130, no version, no artifact, no run."""

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("assay.release.train", interrupted)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--name", "wine", "--data", "sklearn:wine", "--arch", "mlp"])
    assert result.exit_code == 130 and "nothing was half-written" in result.stderr
    listed = runner.invoke(app, ["models", "list", "--json"])
    assert listed.stdout.strip() == "[]"
    assert not any((isolated_home / "artifacts").rglob("*.safetensors"))

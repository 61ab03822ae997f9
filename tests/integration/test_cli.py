"""The CLI end to end on small real data (scikit-learn's digits), as a user would drive it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from typer.testing import CliRunner

from assay.cli import app
from assay.outputs import load_predictions

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def ok_json(*args: str) -> dict:  # type: ignore[type-arg]
    code, stdout, stderr = invoke(*args, "--json")
    assert code == 0, stderr
    return json.loads(stdout)  # type: ignore[no-any-return]


TRAIN = (
    "train",
    "--name",
    "digits",
    "--data",
    "sklearn:digits",
    "--arch",
    "mlp",
    "--epochs",
    "4",
    "--precision",
    "fp32",
)


def test_release_loop(tmp_path: Path) -> None:
    v1 = ok_json(*TRAIN, "--licence", "CC-BY-4.0", "--description", "digit reader")
    assert v1["version"] == "digits@v1"
    card = ok_json("eval", "digits@v1", "--no-efficiency")["models"]["candidate"]["card"]
    assert card["licence"] == "CC-BY-4.0" and card["intended_use"] == "digit reader"
    code, _, stderr = invoke("eval", "digits@v1", "--data", "sklearn:wine")  # 13 features, 3 classes
    assert code == 2 and "Traceback" not in stderr
    assert "digits@v1 was made for table of 64 features" in stderr and "sklearn-wine" in stderr
    promoted = ok_json("models", "promote", "digits@v1")
    assert promoted["changed"] and promoted["to_version"] == 1

    # A deliberately crippled candidate: 2 hidden units and one epoch, so the gate must refuse it.
    v2 = ok_json(
        "train",
        "--name",
        "digits",
        "--data",
        "sklearn:digits",
        "--arch",
        "mlp",
        "--spec",
        '{"hidden": [2]}',
        "--epochs",
        "1",
        "--precision",
        "fp32",
    )
    code, stdout, _ = invoke("gate", "digits@production", v2["version"], "--json")
    verdict = json.loads(stdout)["verdict"]
    assert code == 1 and verdict["passed"] is False
    accuracy_rule = next(r for r in verdict["rules"] if r["metric"] == "accuracy")
    assert not accuracy_rule["passed"] and accuracy_rule["delta"] < -0.05

    code, _, stderr = invoke("models", "promote", "digits@v2")
    assert code == 1 and "--force" in stderr and "Traceback" not in stderr
    forced = ok_json("models", "promote", "digits@v2", "--force", "--reason", "testing the override")
    assert forced["to_version"] == 2
    back = ok_json("models", "rollback", "digits")
    assert back["to_version"] == 1
    # A version never gated may not take over an alias that already has a holder.
    v3 = ok_json(*TRAIN)
    code, _, stderr = invoke("models", "promote", v3["version"])
    assert code == 1 and "never gated" in stderr and "assay gate digits@production digits@v3" in stderr

    shown = ok_json("models", "show", "digits")
    assert [v["gate_status"] for v in sorted(shown["versions"], key=lambda v: v["version"])] == [
        "none",
        "failed",
        "none",
    ]
    actions = [(h["action"], h["forced"]) for h in shown["alias_history"]]
    assert ("promote", True) in actions and ("rollback", False) in actions

    # The same model gated against itself passes: identical predictions, zero delta.
    code, stdout, _ = invoke("gate", "digits@v1", "digits@v1", "--json", "--no-efficiency")
    assert code == 0 and json.loads(stdout)["verdict"]["passed"]


def write_predictions(path: Path, labels: np.ndarray, logits: np.ndarray) -> Path:
    np.savez(path, label=labels, logits=logits, id=np.array([f"e{i}" for i in range(len(labels))]))
    return path


def test_predictions_files_evaluate_and_gate(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, c = 3000, 5
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), labels] += 2.5  # a decent classifier
    base = write_predictions(tmp_path / "base.npz", labels, logits)
    doc = ok_json("eval", str(base))
    accuracy = next(m for m in doc["measurements"] if m["name"] == "accuracy")
    assert accuracy["value"] == pytest.approx(accuracy_score(labels, softmax(logits, 1).argmax(1)))
    assert accuracy["ci_low"] < accuracy["value"] < accuracy["ci_high"] and accuracy["n"] == n
    assert Path(doc["report"]).is_file()

    same = write_predictions(tmp_path / "same.npz", labels, logits.copy())
    code, stdout, _ = invoke("gate", str(base), str(same), "--json")
    assert code == 0, stdout
    code, stdout, _ = invoke("gate", str(base), str(same))  # the table: no latency in predictions files
    latency_row = next(line for line in stdout.splitlines() if "latency_p50_b1" in line)
    assert "skipped" in latency_row and "pass" not in latency_row

    extra_class = write_predictions(tmp_path / "six.npz", labels, np.hstack([logits, np.zeros((n, 1))]))
    code, _, stderr = invoke("gate", str(base), str(extra_class))
    assert code == 2 and "different numbers of classes (5 vs 6" in stderr

    worse_logits = logits.copy()
    right = np.flatnonzero(logits.argmax(1) == labels)[:150]  # 5% of examples turned wrong
    worse_logits[right, labels[right]] -= 10
    worse = write_predictions(tmp_path / "worse.npz", labels, worse_logits)
    code, stdout, _ = invoke("gate", str(base), str(worse))
    assert code == 1 and "fails the gate" in stdout


def _digits_copy(path: Path, *, images: bool, divisor: int = 1) -> Path:
    """scikit-learn's digits as a user's own .npz copy: 8x8 uint8 images (0-16 counts) or a 64-column
    table, split their own way."""
    digits = load_digits()
    x = digits.images // divisor
    x = x.astype(np.uint8) if images else x.reshape(len(x), -1).astype(np.float32)
    order = np.random.default_rng(1).permutation(len(x))
    train, test = order[:1400], order[1400:]
    np.savez(path, x_train=x[train], y_train=digits.target[train], x_test=x[test], y_test=digits.target[test])
    return path


def test_data_made_another_way_is_refused_unless_forced(tmp_path: Path) -> None:
    """The silent false pass of issue 13: a model trained on a differently scaled copy of the same
    images, gated against the original on the copy's data. Refused (exit 2) with what differs; forced,
    the run records and shows it."""
    ok_json(*TRAIN)
    copy = _digits_copy(tmp_path / "mydigits.npz", images=True)
    ok_json("train", "--name", "mydigits-cnn", "--data", f"npz:{copy}", "--arch", "cnn", "--epochs", "1")
    for args in (("gate", "digits@v1", "mydigits-cnn@v1"), ("eval", "digits@v1", "--data", f"npz:{copy}")):
        code, _, stderr = invoke(*args, "--no-efficiency")
        assert code == 2 and "Traceback" not in stderr, stderr
        assert "digits@v1 was made for table of 64 features standardised" in stderr
        assert "kind: the model takes table inputs, the data gives image inputs" in stderr
        assert "--force-data" in stderr and "--save-predictions" in stderr

    # The same table scaled another way (counts of 0-4 instead of 0-16): same kind and shape, other scale.
    quarters = _digits_copy(tmp_path / "quarters.npz", images=False, divisor=4)
    code, _, stderr = invoke("eval", "digits@v1", "--data", f"npz:{quarters}", "--no-efficiency")
    assert code == 2 and "scale: " in stderr and "scaled another way" in stderr
    # The raw table itself is fine: digits@v1 standardises it with its own training rows' statistics.
    raw = _digits_copy(tmp_path / "raw.npz", images=False)
    accuracy = next(
        m for m in ok_json("eval", "digits@v1", "--data", f"npz:{raw}", "--no-efficiency")["measurements"]
        if m["name"] == "accuracy"
    )  # fmt: skip
    assert accuracy["value"] > 0.85

    code, stdout, stderr = invoke(
        "gate", "digits@v1", "mydigits-cnn@v1", "--no-efficiency", "--force-data", "--json"
    )
    assert code in (0, 1) and "forced: digits@v1: kind:" in stderr
    document = json.loads(stdout)
    record = document["input_contract"]
    assert record["forced"] is True and record["examples"].startswith("the test split of mydigits")
    assert record["models"]["mydigits-cnn@v1"]["differences"] == []
    assert [d.split(":")[0] for d in record["models"]["digits@v1"]["differences"]] == ["kind"]
    assert (
        "Forced: digits@v1 ran on data that does not fit its input contract"
        in Path(document["report"]).read_text()
    )
    stored = ok_json("report", str(document["run_id"]))
    assert json.loads(Path(stored["json"]).read_text())["input_contract"] == record


def test_saved_predictions_gate_against_their_model_with_zero_churn(tmp_path: Path) -> None:
    ok_json(*TRAIN)
    for suffix in ("npz", "parquet"):
        saved = tmp_path / f"digits.{suffix}"
        evaluated = ok_json("eval", "digits@v1", "--no-efficiency", "--save-predictions", str(saved))
        ids = [f"test-{i}" for i in range(360)]
        outputs = load_predictions(saved)
        assert outputs.ids.tolist() == ids and outputs.n == evaluated["dataset"]["n"]
        for pair in (("digits@v1", str(saved)), (str(saved), "digits@v1")):
            code, stdout, stderr = invoke("gate", *pair, "--json")
            assert code == 0, stderr
            verdict = json.loads(stdout)["verdict"]
            churn = next(m for m in verdict["churn"] if m["name"] == "churn")
            assert churn["value"] == 0 and churn["n"] == 360
            assert all(c["delta"] == 0 for c in verdict["comparisons"] if c["family"] != "efficiency")
    # A gate against a file is a recorded run, but not one that makes the version promotable.
    assert ok_json("models", "show", "digits")["versions"][0]["gate_status"] == "none"
    shuffled = tmp_path / "wrong-ids.npz"
    o = load_predictions(tmp_path / "digits.npz")
    np.savez(shuffled, label=o.labels, probs=o.probs, id=np.array([f"x-{i}" for i in range(o.n)]))
    code, _, stderr = invoke("gate", "digits@v1", str(shuffled), "--no-efficiency")
    assert code == 2 and "not on the same examples" in stderr


def test_pipeline_file_first_release_then_gate(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        '[data]\nsource = "sklearn:wine"\n[model]\nname = "wine"\narch = "mlp"\n'
        '[train]\nepochs = 30\nprecision = "fp32"\n'
    )
    first = ok_json("run", str(pipeline))
    assert first["version"] == "wine@v1" and first["promoted"] and first["baseline"] is None
    code, stdout, stderr = invoke("run", str(pipeline), "--json")
    second = json.loads(stdout)
    assert second["baseline"] == "wine@v1" and second["version"] == "wine@v2"
    # Same seed, same data, same recipe: identical weights, so the gate passes and v2 is promoted.
    assert code == 0 and second["promoted"] and second["gate_status"] == "passed", stderr


def test_report_rerenders_from_run_and_json(tmp_path: Path) -> None:
    labels = np.arange(200) % 4
    logits = np.eye(4)[labels] * 3 + np.random.default_rng(1).normal(size=(200, 4))
    doc = ok_json("eval", str(write_predictions(tmp_path / "p.npz", labels, logits)))
    from_run = ok_json("report", str(doc["run_id"]), "--out", str(tmp_path / "r1"))
    assert Path(from_run["html"]).read_text().count("<svg") >= 1
    json_path = Path(doc["report"]).with_suffix(".json")
    from_json = ok_json("report", str(json_path), "--out", str(tmp_path / "r2"))
    assert Path(from_json["html"]).is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "--name", "x", "--data", "idx:/nonexistent/folder"), "Dataset folder not found"),
        (("train", "--name", "x", "--data", "sklearn:digits", "--spec", "{not json"), "Bad training option"),
        (("train", "--name", "x", "--data", "sklearn:digits", "--precision", "fp8"), "Bad training option"),
        (("train", "--name", "x", "--data", "sklearn:digits", "--arch", "resnet"), "Unknown model 'resnet'"),
        (
            (
                "train",
                "--name",
                "x",
                "--data",
                "sklearn:digits",
                "--arch",
                "mlp",
                "--spec",
                '{"n_classes": 2}',
            ),
            "Cannot set ['n_classes']",
        ),
        (("train", "--name", "bad@name", "--data", "sklearn:wine", "--arch", "mlp"), "Model name 'bad@name'"),
        (
            ("train", "--name", "x", "--data", "sklearn:digits", "--limit", "5"),
            "--limit 5 is below the 10 classes",
        ),
        (("eval", "nosuchmodel@production"), "nosuchmodel"),
        (("gate", "a.npz", "b@v1"), "No model named 'b'"),
        # Refused before any evaluation is spent, not after it.
        (("eval", "nosuchmodel@v1", "--save-predictions", "out.csv"), "predictions are written as .npz"),
        (("eval", "digits@v1", "--target", "label"), "--target label names a column of --data"),
        (("report", "missing.json"), "No such run id or report file"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    code, _, stderr = invoke(*args)
    assert code == 2, stderr
    assert message in stderr and "Traceback" not in stderr


def test_bad_files_exit_2(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip")
    code, _, stderr = invoke("eval", str(corrupt))
    assert code == 2 and "not a readable .npz" in stderr

    out_of_range = write_predictions(tmp_path / "oor.npz", np.array([0, 1, 9]), np.eye(3))
    code, _, stderr = invoke("eval", str(out_of_range))
    assert code == 2 and "label 9 at row 2 is out of range for 3 classes" in stderr

    good = write_predictions(tmp_path / "good.npz", np.arange(30) % 3, np.tile(np.eye(3), (10, 1)))
    code, _, stderr = invoke("gate", str(good), str(good), "--json")  # one file against itself
    assert code == 0 and "Traceback" not in stderr, stderr
    code, _, stderr = invoke("eval", str(good), "--n-boot", "0")
    assert code == 2 and "--n-boot must be at least 100 for stable 95% intervals; got 0" in stderr
    malformed = tmp_path / "malformed.toml"
    malformed.write_text("[policy\nalpha = 0.05\n")
    code, _, stderr = invoke("gate", str(good), str(good), "--policy", str(malformed))
    assert code == 2 and "malformed.toml" in stderr and "Traceback" not in stderr

    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[[rules]]\nmetric = "acuracy"\nkind = "non_inferiority"\nmargin = 0.01\n')
    code, _, stderr = invoke("gate", str(good), str(good), "--policy", str(unknown))
    assert code == 2 and "acuracy" in stderr and "accuracy" in stderr


def test_failed_training_leaves_the_store_empty(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(
        bad,
        x_train=np.zeros((10, 4, 4)),
        y_train=np.arange(10) % 2,
        x_test=np.zeros((4, 4, 4)),
        y_test=np.array([0, 1, 2, 0]),
    )
    code, _, stderr = invoke("train", "--name", "m", "--data", f"npz:{bad}")
    assert code == 2 and "never occur in the training split" in stderr
    assert ok_json("models", "list") == []


def test_version_and_help_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import version

    code, stdout, _ = invoke("--version")
    assert code == 0 and stdout.strip() == f"assay {version('assay')}"
    monkeypatch.setenv("COLUMNS", "80")
    code, stdout, _ = invoke("serve", "--help")
    # Every option name whole (rich's help table cut them to "--max-windows-per…" at 80 columns).
    assert code == 0 and "--max-windows-per-minute" in stdout and "…" not in stdout
    assert max(map(len, stdout.splitlines())) <= 80

"""``assay data audit`` and ``assay data dedupe`` end to end, as a user would drive them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from assay.cli import app
from tests.unit.data.audit.conftest import smooth_images

runner = CliRunner()
QUICK = "class_balance,exact_duplicates,near_duplicates,perceptual_duplicates,leakage"


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def leaky_npz(tmp_path: Path) -> Path:
    """200 train, 40 val, 60 test uint8 images; 6 test images copied from train, 2 exact repeats in train."""
    rng = np.random.default_rng(0)
    x = np.rint(smooth_images(300, 11) * 255).astype(np.uint8)[:, 0]
    y = rng.integers(0, 3, 300)
    x_train, x_val, x_test = x[:200].copy(), x[200:240], x[240:].copy()
    x_test[:6] = x_train[50:56]
    x_train[150:152] = x_train[10:12]
    path = tmp_path / "leaky.npz"
    np.savez(
        path, x_train=x_train, y_train=y[:200], x_val=x_val, y_val=y[200:240], x_test=x_test, y_test=y[240:]
    )
    return path


def test_audit_writes_the_three_files_and_reports_the_planted_leak(leaky_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    code, stdout, stderr = invoke(
        "data", "audit", "--data", f"npz:{leaky_npz}", "--checks", QUICK, "--out", str(out), "--json"
    )
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["status"] == "complete" and not document["refused"]
    by_name = {m["name"]: m for m in document["measurements"]}
    leak = by_name["leakage[test:train]"]
    assert leak["details"]["count"] == 6 and leak["n"] == 60
    assert {e["id"] for e in leak["details"]["examples"]} == {f"test-{k}" for k in range(6)}
    assert by_name["exact_duplicates[train]"]["details"]["count"] == 2
    assert document["summary"]["leakage_test_train"] == pytest.approx(0.1)
    files = {key: Path(path) for key, path in document["files"].items()}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files.values())
    assert files["html"].name.startswith("audit-leaky-") and files["html"].parent == out
    croissant = json.loads(files["croissant"].read_text())
    (source,) = croissant["distribution"]
    assert (
        source["name"] == "leaky.npz"
        and source["sha256"] == hashlib.sha256(leaky_npz.read_bytes()).hexdigest()
    )
    assert "6 of 60" in croissant["rai:dataLimitations"]
    # The datasheet links to the audit's governance section, which maps the findings with their numbers.
    assert croissant["subjectOf"]["url"] == f"{files['html'].name}#governance"
    html = files["html"].read_text()
    assert 'id="governance"' in html and 'href="#metric-leakage[test:train]"' in html
    assert 'id="metric-leakage[test:train]"' in html
    (measure_21,) = [s for s in document["governance"]["covered"] if s["id"] == "MEASURE 2.1"]
    (audit,) = [e for e in measure_21["evidence"] if e["key"] == "data_audit"]
    assert "A.7.4" in audit["iso"] and "leakage[test:train]" in {i["name"] for i in audit["items"]}


@pytest.mark.filterwarnings("ignore::DeprecationWarning:rdflib.*")
def test_the_croissant_file_of_a_real_source_validates(leaky_npz: Path, tmp_path: Path) -> None:
    mlc = pytest.importorskip("mlcroissant")
    code, _, stderr = invoke(
        "data", "audit", "--data", f"npz:{leaky_npz}", "--checks", QUICK, "--out", str(tmp_path)
    )
    assert code == 0, stderr
    (datasheet,) = tmp_path.glob("audit-leaky-*.croissant.json")
    dataset = mlc.Dataset(jsonld=datasheet)
    assert not dataset.metadata.ctx.issues.errors


def test_the_leakage_policy_refuses_with_exit_1(leaky_npz: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke(
        "data",
        "audit",
        "--data",
        f"npz:{leaky_npz}",
        "--checks",
        QUICK,
        "--out",
        str(tmp_path),
        "--fail-on-leakage",
        "--max-leakage",
        "0.05",
    )
    assert code == 1
    assert "refused:" in stderr and "10.00% of test examples have a copy in train" in stderr
    code, _, _ = invoke(
        "data",
        "audit",
        "--data",
        f"npz:{leaky_npz}",
        "--checks",
        QUICK,
        "--out",
        str(tmp_path),
        "--fail-on-leakage",
        "--max-leakage",
        "0.2",
    )
    assert code == 0


def test_dedupe_writes_a_copy_without_the_leaked_and_duplicated_examples(
    leaky_npz: Path, tmp_path: Path
) -> None:
    cleaned = tmp_path / "clean.npz"
    code, stdout, stderr = invoke(
        "data", "dedupe", "--data", f"npz:{leaky_npz}", "--out", str(cleaned), "--json"
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["removed"] == {"train": 8, "val": 0, "test": 0}
    assert set(summary["removed_ids"]["train"]) == {f"train-{k}" for k in (*range(50, 56), 150, 151)}
    with np.load(cleaned) as z:
        assert z["x_train"].dtype == np.uint8 and z["x_train"].shape == (192, 1, 16, 16)
        assert z["x_test"].shape[0] == 60 and "train-50" not in z["ids_train"].tolist()
    code, stdout, _ = invoke(
        "data",
        "audit",
        "--data",
        f"npz:{cleaned}",
        "--checks",
        QUICK,
        "--out",
        str(tmp_path / "again"),
        "--json",
    )
    assert code == 0
    again = {m["name"]: m for m in json.loads(stdout)["measurements"]}
    assert again["leakage[test:train]"]["details"]["count"] == 0
    assert again["exact_duplicates[train]"]["details"]["count"] == 0


def test_clean_subset_score_next_to_the_full_score(leaky_npz: Path, tmp_path: Path) -> None:
    with np.load(leaky_npz) as z:
        y_test = z["y_test"]
    rng = np.random.default_rng(3)
    preds = np.where(np.arange(60) < 6, y_test, rng.integers(0, 3, 60))  # right on every leaked example
    probs = np.eye(3)[preds] * 0.9 + 0.1 / 3
    predictions = tmp_path / "preds.npz"
    np.savez(predictions, label=y_test, probs=probs, id=np.char.add("test-", np.arange(60).astype(str)))
    code, stdout, stderr = invoke(
        "data",
        "audit",
        "--data",
        f"npz:{leaky_npz}",
        "--checks",
        QUICK,
        "--predictions",
        str(predictions),
        "--out",
        str(tmp_path),
        "--json",
    )
    assert code == 0, stderr
    scores = {s["name"]: s for s in json.loads(stdout)["scores"]}
    assert scores["accuracy[all]"]["value"] == pytest.approx((preds == y_test).mean())
    assert scores["accuracy[clean of leakage]"]["value"] == pytest.approx((preds[6:] == y_test[6:]).mean())
    assert scores["accuracy[clean of leakage]"]["n"] == 54


def _text_table(tmp_path: Path) -> Path:
    rng = np.random.default_rng(4)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
        "nu",
        "xi",
        "omicron",
        "pi",
        "rho",
    ]
    notes = [" ".join(rng.choice(words, 20)) for _ in range(200)]
    notes[5] += " reach me at someone@example.com"
    notes[9] += " card 4111 1111 1111 1111"
    notes[11] += " card 4111 1111 1111 1112"
    path = tmp_path / "notes.csv"
    pd.DataFrame({"note": notes, "size": rng.normal(size=200), "label": rng.integers(0, 2, 200)}).to_csv(
        path, index=False
    )
    return path


def test_a_table_with_text_pii_and_a_reference_corpus(tmp_path: Path) -> None:
    table = _text_table(tmp_path)
    frame = pd.read_csv(table)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(frame["note"].tolist()[:3]) + "\n")
    code, stdout, stderr = invoke(
        "data", "audit", "--data", f"csv:{table}", "--target", "label", "--reference", f"text:{corpus}",
        "--skip", "label_issues", "--out", str(tmp_path / "a"), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["summary"]["pii_counts"]["email"] == 1
    assert document["summary"]["pii_counts"]["payment_card"] == 1
    assert "someone@example.com" not in stdout and "4111 1111 1111 1111" not in stdout
    contamination = [m for m in document["measurements"] if m["name"].startswith("contamination.")]
    assert contamination and all(m["status"] == "ok" for m in contamination)


def test_dedupe_of_a_text_table_drops_the_training_copy_of_a_leaked_text(tmp_path: Path) -> None:
    table = _text_table(tmp_path)
    frame = pd.read_csv(table)
    code, stdout, stderr = invoke(
        "data",
        "audit",
        "--data",
        f"csv:{table}",
        "--target",
        "label",
        "--checks",
        "leakage",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert code == 0, stderr
    assert (
        next(m for m in json.loads(stdout)["measurements"] if m["name"] == "leakage[test:train]")["details"][
            "count"
        ]
        == 0
    )
    frame.loc[len(frame)] = frame.loc[0]  # a copy of row 0 at the end: lands in some split
    frame.to_csv(table, index=False)
    cleaned = tmp_path / "clean.csv"
    code, stdout, stderr = invoke(
        "data", "dedupe", "--data", f"csv:{table}", "--target", "label", "--out", str(cleaned), "--json"
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert sum(summary["removed"].values()) == 1 and summary["removed"]["test"] == 0
    out = pd.read_csv(cleaned)
    assert len(out) == len(frame) - 1 and list(out.columns[:2]) == ["split", "id"]
    assert out["note"].duplicated().sum() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data", "npz:/nonexistent.npz"), "Dataset file not found"),
        (("--data", "csv:{table}", "--target", "nope"), "no column 'nope'"),
        (("--data", "csv:{table}", "--target", "label", "--text", "missing"), "no column 'missing'"),
        (("--data", "npz:{garbage}"), "not a readable .npz file"),
        (("--data", "npz:{empty}"), "split is empty"),
        (("--data", "npz:{mismatched}"), "labels must be a vector of 5 entries, got shape (4,)"),
        (("--data", "sklearn:digits", "--checks", "nope"), "Unknown audit_check 'nope'"),
        (("--data", "sklearn:digits", "--max-leakage", "2"), "--max-leakage is a share"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"nope")
    empty = tmp_path / "empty.npz"
    np.savez(
        empty,
        x_train=np.zeros((5, 4, 4)),
        y_train=np.zeros(5, int),
        x_test=np.zeros((0, 4, 4)),
        y_test=np.zeros(0, int),
    )
    mismatched = tmp_path / "mismatched.npz"
    np.savez(
        mismatched,
        x_train=np.zeros((5, 4, 4)),
        y_train=np.zeros(4, int),
        x_test=np.zeros((3, 4, 4)),
        y_test=np.zeros(3, int),
    )
    table = _text_table(tmp_path)
    filled = [a.format(table=table, garbage=garbage, empty=empty, mismatched=mismatched) for a in args]
    code, stdout, stderr = invoke("data", "audit", *filled, "--out", str(tmp_path / "out"))
    assert code == 2, stdout + stderr
    assert message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_supplied_label_probabilities_and_declared_facts(leaky_npz: Path, tmp_path: Path) -> None:
    with np.load(leaky_npz) as z:
        y_train = z["y_train"]
    probs = np.eye(3)[y_train] * 0.8 + 0.2 / 3
    probs[:4] = np.eye(3)[(y_train[:4] + 1) % 3] * 0.9 + 0.1 / 3  # four confidently "mislabelled" rows
    label_probs = tmp_path / "oof.npz"
    np.savez(label_probs, label=y_train, probs=probs, id=np.char.add("train-", np.arange(200).astype(str)))
    declare = tmp_path / "declare.toml"
    declare.write_text('[dataset]\nlicence = "CC0-1.0"\nintended_use = "tests"\ncollection = "numpy blobs"\n')
    out = tmp_path / "a"
    code, stdout, stderr = invoke(
        "data", "audit", "--data", f"npz:{leaky_npz}", "--checks", "label_issues",
        "--label-probs", str(label_probs), "--declare", str(declare), "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    document = json.loads(stdout)
    m = next(m for m in document["measurements"] if m["name"] == "label_issues[train]")
    assert "supplied probabilities" in m["estimator"]
    assert set(m["details"]["flagged_ids"]) == {f"train-{k}" for k in range(4)}
    assert "unreliable" not in m["details"] and m["details"]["model"]["accuracy"] == pytest.approx(196 / 200)
    croissant = json.loads(Path(document["files"]["croissant"]).read_text())
    assert croissant["license"] == "CC0-1.0" and croissant["rai:dataUseCases"] == "tests"
    assert "likely label errors in train" in croissant["rai:dataAnnotationAnalysis"]
    wrong = tmp_path / "wrong.npz"
    np.savez(
        wrong, label=(y_train + 1) % 3, probs=probs, id=np.char.add("train-", np.arange(200).astype(str))
    )
    code, _, stderr = invoke(
        "data", "audit", "--data", f"npz:{leaky_npz}", "--label-probs", str(wrong), "--out", str(out)
    )
    assert code == 2 and "its labels differ from the train split's" in stderr


def test_every_audit_keeps_its_own_report_and_prints_where(leaky_npz: Path, tmp_path: Path) -> None:
    runs = [invoke("data", "audit", "--data", f"npz:{leaky_npz}", "--checks", "class_balance",
                   "--out", str(tmp_path)) for _ in range(2)]  # fmt: skip
    printed = []
    for code, stdout, stderr in runs:
        assert code == 0, stderr
        line = next(line for line in stdout.splitlines() if line.startswith("Report:"))
        printed.append(line.split()[1])
    assert printed[0] != printed[1] and all(Path(p).is_file() for p in printed)
    assert len(list(tmp_path.glob("audit-leaky-*.html"))) == 2
    assert len(list(tmp_path.glob("audit-leaky-*.json"))) == 4  # each document beside its datasheet


def test_weak_features_are_flagged_unreliable_in_the_cli_json_and_report(tmp_path: Path) -> None:
    from tests.unit.data.audit.sentences import bag_of_words, noisy_sentences

    data = noisy_sentences("weak")
    counts = bag_of_words(data.texts)
    table = tmp_path / "sentences.csv"
    frame = pd.DataFrame(counts, columns=[f"h{k}" for k in range(counts.shape[1])])
    frame.insert(0, "text", data.texts)
    frame["topic"] = [f"topic{k}" for k in data.labels]
    frame.to_csv(table, index=False)
    args = ("data", "audit", "--data", f"csv:{table}", "--target", "topic", "--checks", "label_issues",
            "--out", str(tmp_path / "a"))  # fmt: skip
    code, stdout, stderr = invoke(*args, "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    reason = document["summary"]["unreliable"]["label_issues[train]"]
    assert "the quick model is" in reason and "--label-probs" in reason
    assert document["summary"]["label_issues_train"] is None
    accuracy = next(m for m in document["measurements"] if m["name"] == "label_model_accuracy[train]")
    assert (
        accuracy["ci_low"] < accuracy["details"]["required_accuracy"] and not accuracy["details"]["reliable"]
    )
    assert "1 finding marked unreliable" in Path(document["files"]["html"]).read_text()
    code, stdout, stderr = invoke(*args)
    assert code == 0, stderr
    assert "(unreliable)" in stdout and "unreliable: label_issues[train]: the quick model is" in stdout

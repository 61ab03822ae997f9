"""``assay data splits``: the splits assay makes of a source, and the ids a predictions file must name."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from assay.cli import app
from assay.data import load_dataset, parse_data_arg

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_sizes_fingerprints_and_class_counts_are_the_loaders(tmp_path: Path) -> None:
    code, stdout, stderr = invoke("data", "splits", "--data", "sklearn:digits", "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    dataset = load_dataset(parse_data_arg("sklearn:digits"))
    assert document["fingerprint"] == dataset.fingerprint() and document["dataset"] == "sklearn-digits"
    for name, split in dataset.splits().items():
        listed = document["splits"][name]
        assert listed["n"] == split.n and listed["fingerprint"] == split.fingerprint()
        counts = pd.Series(split.y).map(dict(enumerate(dataset.class_names))).value_counts()
        assert listed["class_counts"] == {c: int(counts.get(c, 0)) for c in dataset.class_names}
        assert "examples" not in listed  # ids only when asked for
    code, stdout, _ = invoke("data", "splits", "--data", "sklearn:digits")
    assert code == 0 and all(s.fingerprint()[:16] in stdout for s in dataset.splits().values())


def test_ids_name_the_rows_of_the_source_they_were_read_from() -> None:
    code, stdout, stderr = invoke("data", "splits", "--data", "sklearn:digits", "--ids", "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    dataset = load_dataset(parse_data_arg("sklearn:digits"))
    raw = load_digits()
    mean, sd = _standardisation(raw.data, document["splits"]["train"]["examples"])
    seen: set[int] = set()
    for name, split in dataset.splits().items():
        listed = document["splits"][name]
        assert listed["rows_of"] == "rows of sklearn.datasets.load_digits()"
        assert [e["id"] for e in listed["examples"]] == split.ids.tolist()
        rows = np.array([e["row"] for e in listed["examples"]])
        np.testing.assert_array_equal(raw.target[rows], split.y)
        # The inputs assay holds are the raw rows put through its standardisation, computed in float64 and
        # rounded once to float32: within one float32 step of the float64 result.
        want = (raw.data[rows] - mean) / sd
        np.testing.assert_array_less(np.abs(split.x - want), np.spacing(np.abs(want).astype(np.float32)))
        seen.update(rows.tolist())
    assert seen == set(range(len(raw.target)))  # every row in exactly one split (sizes add up)
    assert sum(s.n for s in dataset.splits().values()) == len(raw.target)


def _standardisation(raw: np.ndarray, train: list[dict[str, object]]) -> tuple[np.ndarray, np.ndarray]:
    """What the loader standardises a table with: the training rows' mean and sd (0 read as 1), float64."""
    rows = raw[[int(e["row"]) for e in train]].astype(np.float64)  # type: ignore[call-overload]
    sd = rows.std(axis=0)
    return rows.mean(axis=0), np.where(sd == 0, 1.0, sd)


def test_a_predictions_file_built_from_the_listed_ids_pairs_with_assays_split(tmp_path: Path) -> None:
    """The user's own model on the raw rows (no assay scaling), its out-of-fold probabilities written
    with the listed ids: the audit accepts them as the training split's (ids and labels pair)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import cross_val_predict

    code, stdout, stderr = invoke("data", "splits", "--data", "sklearn:digits", "--split", "train", "--ids")
    assert code == 0, stderr
    listed = pd.read_csv(io.StringIO(stdout), sep="\t")
    assert list(listed.columns) == ["split", "id", "label", "class", "row", "rows_of"]
    assert (listed["split"] == "train").all()
    raw = load_digits()
    x, y = raw.data[listed["row"]], raw.target[listed["row"]]
    probs = cross_val_predict(LinearDiscriminantAnalysis(), x, y, cv=3, method="predict_proba")
    oof = tmp_path / "oof.npz"
    np.savez(oof, id=listed["id"].to_numpy().astype(str), label=listed["label"].to_numpy(), probs=probs)
    code, stdout, stderr = invoke(
        "data", "audit", "--data", "sklearn:digits", "--checks", "label_issues", "--label-probs", str(oof),
        "--out", str(tmp_path / "a"), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    accuracy = next(
        m for m in json.loads(stdout)["measurements"] if m["name"] == "label_model_accuracy[train]"
    )
    assert accuracy["value"] == pytest.approx((probs.argmax(axis=1) == y).mean())
    assert accuracy["details"]["reliable"]


def test_image_files_keep_their_rows_and_the_validation_split_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "small.npz"
    y_train, y_test = rng.integers(0, 3, 60), rng.integers(0, 3, 20)
    np.savez(
        path, x_train=rng.random((60, 4, 4)), y_train=y_train, x_test=rng.random((20, 4, 4)), y_test=y_test
    )
    code, stdout, stderr = invoke(
        "data", "splits", "--data", f"npz:{path}", "--ids", "--json", "--limit", "10"
    )
    assert code == 0, stderr
    splits = json.loads(stdout)["splits"]
    for name, labels in (("train", y_train), ("val", y_train), ("test", y_test)):
        assert splits[name]["rows_of"] == f"x_{'test' if name == 'test' else 'train'} of small.npz"
        rows = [e["row"] for e in splits[name]["examples"]]
        assert [e["id"] for e in splits[name]["examples"]] == [
            f"{name if name != 'val' else 'train'}-{r}" for r in rows
        ]
        assert [e["label"] for e in splits[name]["examples"]] == labels[rows].tolist()
        assert splits[name]["n"] == len(rows) <= 10
    assert not set(e["row"] for e in splits["train"]["examples"]) & {
        e["row"] for e in splits["val"]["examples"]
    }


def test_a_table_lists_rows_of_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    table = tmp_path / "people.csv"
    frame = pd.DataFrame({"age": rng.integers(18, 90, 50), "label": rng.choice(["no", "yes"], 50)})
    frame.to_csv(table, index=False)
    args = ("data", "splits", "--data", f"csv:{table}", "--target", "label", "--ids", "--json")
    code, stdout, stderr = invoke(*args)
    assert code == 0, stderr
    splits = json.loads(stdout)["splits"]
    assert splits["test"]["rows_of"] == "rows of people.csv (0-based, header not counted)"
    dataset = load_dataset(parse_data_arg(f"csv:{table}", target="label"))
    mean, sd = _standardisation(frame[["age"]].to_numpy(), splits["train"]["examples"])
    for name, split in dataset.splits().items():
        rows = [e["row"] for e in splits[name]["examples"]]
        assert frame["label"][rows].tolist() == [e["class"] for e in splits[name]["examples"]]
        x = (frame[["age"]].to_numpy(np.float32)[rows] - mean) / sd
        np.testing.assert_allclose(x, split.x, rtol=1e-5, atol=1e-5)
    code, stdout, _ = invoke(*args, "--split", "test")
    assert code == 0 and list(json.loads(stdout)["splits"]) == ["test"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data", "sklearn:digits", "--split", "holdout"), "Unknown split 'holdout'"),
        (("--data", "sklearn:nope"), "Unknown scikit-learn dataset 'nope'"),
        (("--data", "npz:/nonexistent.npz"), "Dataset file not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    code, stdout, stderr = invoke("data", "splits", *args)
    assert code == 2, stdout + stderr
    assert message in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.special import softmax

from assay.errors import DataError
from assay.outputs import from_arrays, load_predictions, write_predictions


def arrays(n: int = 50, c: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c))
    return {"label": rng.integers(0, c, n), "logits": logits, "id": np.array([f"ex{i}" for i in range(n)])}


def test_logits_become_probabilities_like_scipy(tmp_path: Path) -> None:
    a = arrays()
    np.savez(tmp_path / "p.npz", **a)
    out = load_predictions(tmp_path / "p.npz")
    np.testing.assert_allclose(out.probs, softmax(a["logits"], axis=1), rtol=1e-12)
    np.testing.assert_array_equal(out.preds, a["logits"].argmax(1))
    assert out.ids[3] == "ex3" and out.n_classes == 4


def test_parquet_with_list_columns_and_groups(tmp_path: Path) -> None:
    a = arrays()
    probs = softmax(a["logits"], axis=1)
    table = pa.table({"label": a["label"], "probs": list(probs), "group": ["a", "b"] * 25})
    pq.write_table(table, tmp_path / "p.parquet")
    out = load_predictions(tmp_path / "p.parquet")
    np.testing.assert_allclose(out.probs, probs)
    assert out.groups is not None and out.groups[1] == "b"
    assert out.ids[0] == "0"  # ids default to row numbers


def test_save_and_reload_is_identical(tmp_path: Path) -> None:
    a = arrays()
    out = from_arrays(a["label"], logits=a["logits"], ids=a["id"], features=np.ones((50, 3)))
    out.save(tmp_path / "cache" / "o.npz")
    back = load_predictions(tmp_path / "cache" / "o.npz")
    np.testing.assert_array_equal(back.probs, out.probs)
    assert back.fingerprint() == out.fingerprint()
    assert back.features is not None and back.features.shape == (50, 3)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["o.npz"]  # no temporary file left


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": np.full(50, 7)}, "label 7 at row 0 is out of range for 4 classes"),
        ({"probs": np.full((50, 4), 0.3), "logits": None}, "must be a distribution"),
        ({"logits": np.full((50, 4), np.nan)}, "NaN or infinite"),
        ({"id": np.array(["same"] * 50)}, "'id' values must be unique"),
        ({"label": np.arange(50) + 0.5}, "whole class indices"),
        ({"probs": np.full((50, 4), 0.25)}, r"'probs' is not softmax\('logits'\)"),
        ({"id": np.array(["x"] * 3)}, "'id' has 3 rows but 'label' has 50"),
        ({"id": np.arange(100).reshape(50, 2)}, r"'id' must be one value per example, got shape \(50, 2\)"),
        ({"group": np.zeros((50, 2))}, r"'group' must be one value per example"),
    ],
)
def test_bad_predictions_files(tmp_path: Path, change: dict[str, np.ndarray | None], message: str) -> None:
    a: dict[str, np.ndarray | None] = {**arrays(), **change}
    np.savez(tmp_path / "p.npz", **{k: v for k, v in a.items() if v is not None})
    with pytest.raises(DataError, match=message) as caught:
        load_predictions(tmp_path / "p.npz")
    assert str(caught.value).startswith(str(tmp_path / "p.npz"))  # names the file at fault


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_predictions(tmp_path / "x.npz")
    (tmp_path / "x.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(DataError, match="not a readable parquet"):
        load_predictions(tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"unsupported predictions format '\.csv'"):
        (tmp_path / "x.csv").write_text("a")
        load_predictions(tmp_path / "x.csv")
    np.savez(tmp_path / "nolabel.npz", probs=np.eye(3))
    with pytest.raises(DataError, match="no 'label' column"):
        load_predictions(tmp_path / "nolabel.npz")
    np.savez(tmp_path / "noprobs.npz", label=np.arange(3))
    with pytest.raises(DataError, match="needs a 'probs' or a 'logits'"):
        load_predictions(tmp_path / "noprobs.npz")


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_written_predictions_read_back_unchanged_with_ordinary_permissions(
    tmp_path: Path, suffix: str
) -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(20, 3))
    outputs = from_arrays(
        rng.integers(0, 3, 20), logits=logits, ids=np.array([f"e{i}" for i in range(20)]),
        groups=np.array(["a", "b"] * 10),
    )  # fmt: skip
    path = write_predictions(outputs, tmp_path / f"out{suffix}")
    back = load_predictions(path)
    assert back.ids.tolist() == outputs.ids.tolist() and back.groups.tolist() == outputs.groups.tolist()
    np.testing.assert_array_equal(back.probs, outputs.probs)
    np.testing.assert_array_equal(back.labels, outputs.labels)
    ordinary = tmp_path / "ordinary"
    ordinary.write_text("")  # what the umask gives any new file: not owner-only as mkstemp's would be
    assert path.stat().st_mode & 0o777 == ordinary.stat().st_mode & 0o777
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(DataError, match=r"written as \.npz or \.parquet"):
        write_predictions(outputs, tmp_path / "out.csv")

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

from assay.data import DataSpec, Split, load_dataset, parse_data_arg
from assay.errors import DataError, UsageError
from tests.conftest import needs_fashion_mnist
from tests.unit.data.test_idx import write_idx


def test_npz_images_scaled_and_split(image_npz: Path) -> None:
    d = load_dataset(parse_data_arg(f"npz:{image_npz}"))
    assert d.kind == "image" and d.input_shape == (1, 12, 12)
    assert d.train.n + d.val.n == 600 and d.test.n == 300
    assert d.val.n == 60  # 10% stratified
    assert d.train.x.min() >= 0.0 and d.train.x.max() <= 1.0
    # Stratified: class shares in val match train within one example per class.
    for cls in range(3):
        assert abs((d.val.y == cls).mean() - (d.train.y == cls).mean()) < 0.03
    assert len(set(d.train.ids) | set(d.val.ids)) == 600  # no id in both


def test_split_is_seeded(image_npz: Path) -> None:
    a = load_dataset(parse_data_arg(f"npz:{image_npz}", seed=1))
    b = load_dataset(parse_data_arg(f"npz:{image_npz}", seed=1))
    c = load_dataset(parse_data_arg(f"npz:{image_npz}", seed=2))
    assert a.fingerprints() == b.fingerprints()
    assert a.fingerprints()["val"] != c.fingerprints()["val"]


def test_fingerprint_sees_one_pixel(image_npz: Path, tmp_path: Path) -> None:
    z = dict(np.load(image_npz))
    z["x_test"] = z["x_test"].copy()
    z["x_test"][7, 3, 3] += 0.01
    np.savez(tmp_path / "changed.npz", **z)
    before = load_dataset(parse_data_arg(f"npz:{image_npz}")).fingerprints()
    after = load_dataset(parse_data_arg(f"npz:{tmp_path / 'changed.npz'}")).fingerprints()
    assert before["train"] == after["train"] and before["test"] != after["test"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda z: z.update(y_test=z["y_test"] + 5), r"test label\(s\) \[5, 6, 7\] never occur"),
        (lambda z: z.update(y_train=z["y_train"][:-1]), "labels must be a vector of 600"),
        (lambda z: z["x_test"].__setitem__((0, 0, 0), np.nan), "NaN"),
        (lambda z: z.pop("y_test"), r"missing array\(s\) \['y_test'\]"),
        (lambda z: z.update(x_train=z["x_train"] * 10), "must lie in \\[0, 1\\]"),
    ],
)
def test_bad_npz(image_npz: Path, tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    z = {k: v.copy() for k, v in np.load(image_npz).items()}
    mutate(z)
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(DataError, match=message):
        load_dataset(parse_data_arg(f"npz:{tmp_path / 'bad.npz'}"))


def test_labels_out_of_range_in_test_only(image_npz: Path, tmp_path: Path) -> None:
    """A test label beyond every training class is caught (class count comes from both splits)."""
    z = {k: v.copy() for k, v in np.load(image_npz).items()}
    z["y_test"][0] = -1
    np.savez(tmp_path / "neg.npz", **z)
    with pytest.raises(DataError, match="labels must be >= 0; found -1"):
        load_dataset(parse_data_arg(f"npz:{tmp_path / 'neg.npz'}"))


def test_corrupt_and_missing_npz(tmp_path: Path) -> None:
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_dataset(parse_data_arg(f"npz:{tmp_path / 'corrupt.npz'}"))
    with pytest.raises(DataError, match="not found"):
        load_dataset(parse_data_arg(f"npz:{tmp_path / 'absent.npz'}"))


def test_idx_directory(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), True
        )
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 4, False)
    d = load_dataset(parse_data_arg(f"idx:{tmp_path}"))
    assert d.n_classes == 4 and d.train.n + d.val.n == 50 and d.test.n == 20
    assert d.test.x.dtype == np.float32 and d.test.x.max() <= 1.0


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Dataset folder not found"):
        load_dataset(parse_data_arg(f"idx:{tmp_path / 'nope'}"))
    with pytest.raises(DataError, match="missing 'train-images-idx3-ubyte'"):
        load_dataset(parse_data_arg(f"idx:{tmp_path}"))


def test_csv_table_with_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(3, 2, size=n),
            "colour": rng.choice(["red", "blue"], n),
            "region": rng.choice(["north", "south"], n),
            "label": rng.choice(["cat", "dog"], n),
        }
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    d = load_dataset(parse_data_arg(f"csv:{tmp_path / 't.csv'}", target="label", groups=["region"]))
    assert d.kind == "table" and d.class_names == ["cat", "dog"]
    assert "colour_red" in d.feature_names and "region" not in " ".join(d.feature_names)
    assert d.test.groups is not None and set(d.test.groups) <= {"north", "south"}
    # Standardised with the training rows' own statistics (validation rows excluded): mean 0, std 1.
    np.testing.assert_allclose(d.train.x[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.train.x[:, :2].std(0), 1, atol=1e-4)
    assert abs(d.val.x[:, :2].mean()) > 1e-4  # validation rows did not take part
    with pytest.raises(DataError, match="no column 'nope'"):
        load_dataset(parse_data_arg(f"csv:{tmp_path / 't.csv'}", target="nope"))
    with pytest.raises(UsageError, match="needs --target"):
        load_dataset(parse_data_arg(f"csv:{tmp_path / 't.csv'}"))


def test_table_missing_values(tmp_path: Path) -> None:
    pd.DataFrame({"a": [1.0, None, 3.0, 4.0] * 10, "y": [0, 1] * 20}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match="missing or infinite"):
        load_dataset(parse_data_arg(f"csv:{tmp_path / 'm.csv'}", target="y"))


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine"])
def test_sklearn_sets_match_sklearn(name: str) -> None:
    bunch = getattr(datasets, f"load_{name}")()
    d = load_dataset(parse_data_arg(f"sklearn:{name}"))
    assert d.train.n + d.val.n + d.test.n == len(bunch.target)
    assert d.n_classes == len(bunch.target_names)
    assert d.input_shape == (bunch.data.shape[1],)
    assert (
        np.bincount(np.concatenate([d.train.y, d.val.y, d.test.y])).tolist()
        == np.bincount(bunch.target).tolist()
    )


def test_bad_source_strings() -> None:
    with pytest.raises(UsageError, match="Cannot read data source"):
        parse_data_arg("ftp:whatever")
    with pytest.raises(
        UsageError, match="data source 'sklearn:wine': 'limit': Input should be greater than 0"
    ):
        parse_data_arg("sklearn:wine", limit=0)
    with pytest.raises(UsageError, match="Unknown scikit-learn dataset 'iris'"):
        load_dataset(DataSpec(kind="sklearn", path="iris"))


def test_limit_is_stratified_subset(image_npz: Path) -> None:
    d = load_dataset(parse_data_arg(f"npz:{image_npz}", limit=90))
    assert d.train.n == 90 and d.test.n == 90
    full = load_dataset(parse_data_arg(f"npz:{image_npz}"))
    np.testing.assert_allclose(np.bincount(d.test.y) / 90, np.bincount(full.test.y) / 300, atol=1 / 90)


@needs_fashion_mnist
def test_fashion_mnist_from_debian_package() -> None:
    d = load_dataset(DataSpec(kind="fashion-mnist"))
    assert d.train.n + d.val.n == 60_000 and d.test.n == 10_000
    assert d.input_shape == (1, 28, 28) and d.n_classes == 10
    assert np.bincount(d.test.y).tolist() == [1000] * 10
    assert d.licence == "MIT"


def test_rare_classes_fall_back_to_an_unstratified_split(tmp_path: Path) -> None:
    """One example of a class cannot be stratified; scikit-learn would raise, we split without it."""
    y = ["a"] * 30 + ["b"] * 29 + ["c"]
    pd.DataFrame({"x": np.arange(60.0), "y": y}).to_csv(tmp_path / "rare.csv", index=False)
    d = load_dataset(parse_data_arg(f"csv:{tmp_path / 'rare.csv'}", target="y"))
    assert d.train.n + d.val.n + d.test.n == 60


def test_limit_below_the_class_count_is_a_usage_error(image_npz: Path) -> None:
    with pytest.raises(UsageError, match="--limit 2 is below the 3 classes"):
        load_dataset(parse_data_arg(f"npz:{image_npz}", limit=2))
    d = load_dataset(parse_data_arg(f"npz:{image_npz}", limit=4))  # tight, but every class fits
    assert d.test.n == 4


def test_groups_are_part_of_the_fingerprint(image_npz: Path) -> None:
    split = load_dataset(parse_data_arg(f"npz:{image_npz}")).test
    regrouped = Split(split.x, split.y, split.ids, np.array(["g"] * split.n))
    assert regrouped.fingerprint() != split.fingerprint()


def test_an_empty_split_is_named(tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"
    x = np.zeros((0, 4, 4), np.float32)
    np.savez(path, x_train=x, y_train=np.zeros(0, np.int64), x_test=np.zeros((3, 4, 4), np.float32),
             y_test=np.zeros(3, np.int64))  # fmt: skip
    with pytest.raises(DataError, match="the train split has no examples"):
        load_dataset(parse_data_arg(f"npz:{path}"))

"""Bad inputs give one clear error naming the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assay.data import parse_data_arg
from assay.data.audit import AuditConfig, AuditData, AuditSplit, load_audit_data
from assay.errors import ConfigError, DataError


def test_an_empty_split_is_refused() -> None:
    with pytest.raises(DataError, match="the test split is empty"):
        AuditData.from_arrays(
            {
                "train": (np.zeros((3, 4)), np.zeros(3, np.int64)),
                "test": (np.zeros((0, 4)), np.zeros(0, np.int64)),
            }
        )


def test_mismatched_lengths_are_refused() -> None:
    split = AuditSplit(ids=np.array(["a", "b"]), labels=np.zeros(3, np.int64), x=np.zeros((3, 2)))
    with pytest.raises(DataError, match="3 inputs, 3 labels, 2 ids; they must match"):
        AuditData("x", "table", {"train": split}, ["0"], "x")


def test_ids_repeated_across_splits_are_refused() -> None:
    a = AuditSplit(ids=np.array(["r-0", "r-1"]), labels=np.zeros(2, np.int64), x=np.zeros((2, 2)))
    with pytest.raises(DataError, match="unique across splits"):
        AuditData("x", "table", {"train": a, "test": a}, ["0"], "x")


def test_a_column_that_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1, 2, 3, 4], "label": [0, 1, 0, 1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="no column 'nope'; columns are \\['a', 'label'\\]"):
        load_audit_data(parse_data_arg(f"csv:{path}", target="label"), text_columns=["nope"])
    with pytest.raises(DataError, match="no column 'target'"):
        load_audit_data(parse_data_arg(f"csv:{path}", target="target"))


def test_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz file"):
        load_audit_data(parse_data_arg(f"npz:{bad}"))
    broken = tmp_path / "bad.parquet"
    broken.write_bytes(b"PAR1garbage")
    with pytest.raises(DataError, match="cannot read as parquet"):
        load_audit_data(parse_data_arg(f"parquet:{broken}", target="y"))
    with pytest.raises(DataError, match="Table not found"):
        load_audit_data(parse_data_arg(f"csv:{tmp_path / 'missing.csv'}", target="y"))


def test_a_table_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("a,label\n")
    with pytest.raises(DataError, match="no rows"):
        load_audit_data(parse_data_arg(f"csv:{path}", target="label"))


def test_bad_config_values_and_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.toml"
    path.write_text("[audit]\nimage_distance = -1\n")
    with pytest.raises(ConfigError, match="'image_distance': Input should be greater than or equal to 0"):
        AuditConfig.from_file(path)
    path.write_text("[audit]\nno_such_threshold = 1\n")
    with pytest.raises(ConfigError, match="no_such_threshold"):
        AuditConfig.from_file(path)
    path.write_text("[audit]\ntext_jaccard = 0.9\n")
    assert AuditConfig.from_file(path).text_jaccard == 0.9

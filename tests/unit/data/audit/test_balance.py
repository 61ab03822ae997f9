"""Balance, representation, outliers and table hygiene on data with planted problems."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from assay.data import parse_data_arg
from assay.data.audit import AuditContext, AuditData, load_audit_data, run_audit
from assay.data.audit.balance import imbalance_ratio, mahalanobis
from assay.stats import wilson_interval
from tests.unit.tolerances import U32, assert_within, gamma


def test_imbalance_ratio_and_minority_share() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [500, 100, 25])
    x = rng.normal(size=(len(y), 4)).astype(np.float32)
    data = AuditData.from_arrays({"train": (x, y)}, class_names=["big", "mid", "small"])
    result = run_audit(AuditContext(data), ["class_balance"])
    assert result.get("imbalance_ratio[train]").value == pytest.approx(20.0) == imbalance_ratio(y, 3)
    share = result.get("minority_class_share[train]")
    assert share.value == pytest.approx(25 / 625)
    assert (share.ci_low, share.ci_high) == pytest.approx(wilson_interval(25, 625))
    assert result.get("imbalance_ratio[train]").details["smallest_class"] == "small"


def test_label_shift_between_splits_is_a_chi_square_test() -> None:
    rng = np.random.default_rng(1)
    y_train, y_test = np.repeat([0, 1], [300, 300]), np.repeat([0, 1], [150, 50])
    data = AuditData.from_arrays(
        {"train": (rng.normal(size=(600, 2)), y_train), "test": (rng.normal(size=(200, 2)), y_test)}
    )
    m = run_audit(AuditContext(data), ["class_balance"]).get("label_shift_p[test:train]")
    expected = stats.chi2_contingency([[300, 300], [150, 50]]).pvalue
    assert m.value == pytest.approx(expected)
    assert m.value < 1e-6


def test_group_shares_with_intervals() -> None:
    rng = np.random.default_rng(2)
    groups = np.array(["a"] * 90 + ["b"] * 10)
    data = AuditData.from_arrays(
        {"train": (rng.normal(size=(100, 3)), rng.integers(0, 2, 100))}, groups={"train": groups}
    )
    m = run_audit(AuditContext(data), ["group_balance"]).get("smallest_group_share[train]")
    assert m.value == pytest.approx(0.1)
    assert m.details["groups"]["a"]["count"] == 90


def test_mahalanobis_matches_scipy_on_full_rank_data() -> None:
    rng = np.random.default_rng(3)
    x = rng.multivariate_normal([1, -2, 0], [[2, 0.5, 0], [0.5, 1, 0.3], [0, 0.3, 0.5]], 2000)
    ours = mahalanobis(x[:10], x, components=3)
    vi = np.linalg.inv(np.cov(x, rowvar=False))
    reference = np.array([distance.mahalanobis(row, x.mean(axis=0), vi) ** 2 for row in x[:10]])
    # Ours projects in float32: z = xV - mV, with x, the whitened basis V and mV rounded to float32. Each
    # z_k is a 3-term dot product of rounded operands, within delta_k = gamma(5) ((|x| + |m|) @ |V|)_k (the
    # products, the sums and the two operand roundings) plus its own rounding U32 |z_k|; the squared
    # distance then moves by at most sum_k (2 |z_k| delta_k + delta_k^2), whatever the summation order.
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    basis = vectors / np.sqrt(values)
    z = (x[:10] - mean) @ basis
    delta = gamma(5) * ((np.abs(x[:10]) + np.abs(mean)) @ np.abs(basis)) + U32 * np.abs(z)
    assert_within(ours, reference, (2 * np.abs(z) * delta + delta**2).sum(axis=1), "squared distances")


def test_planted_outliers_are_flagged_in_test() -> None:
    rng = np.random.default_rng(4)
    train, test = rng.normal(size=(2000, 8)), rng.normal(size=(200, 8))
    test[:10] += 8.0  # far outside
    data = AuditData.from_arrays(
        {"train": (train, rng.integers(0, 2, 2000)), "test": (test, rng.integers(0, 2, 200))}
    )
    result = run_audit(AuditContext(data), ["outliers"])
    m = result.get("outliers[test]")
    flagged = {e["id"] for e in m.details["examples"]}
    assert {f"test-{k}" for k in range(10)} <= flagged
    assert m.details["count"] <= 12  # the planted ten, and the 0.1% tail at most
    assert result.get("outliers[train]").value == pytest.approx(0.001, abs=0.0005)


def _table(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    n = 400
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n).round(),
            "income": rng.normal(50_000, 5_000, n),
            "city": rng.choice(["paris", "lyon", "nice"], n),
            "label": rng.choice(["yes", "no"], n),
        }
    )
    frame.loc[[3, 17, 40], "age"] = np.nan
    return _write(tmp_path, frame)


def _write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    return path


def test_missing_values_are_counted_per_column(tmp_path: Path) -> None:
    data = load_audit_data(parse_data_arg(f"csv:{_table(tmp_path)}", target="label"))
    result = run_audit(AuditContext(data), ["missing_values"])
    total = sum(result.get(f"missing_values[{s}]").details["count"] for s in data.splits)
    assert total == 3
    columns = [result.get(f"missing_values[{s}]").details["columns"] for s in data.splits]
    assert sum(c.get("age", 0) for c in columns) == 3


def test_rows_are_split_as_the_loader_splits_them(tmp_path: Path) -> None:
    from assay.data import load_dataset

    path = tmp_path / "clean.csv"
    rng = np.random.default_rng(6)
    pd.DataFrame(
        {"a": rng.normal(size=300), "b": rng.normal(size=300), "label": rng.integers(0, 3, 300)}
    ).to_csv(path, index=False)
    spec = parse_data_arg(f"csv:{path}", target="label")
    audit, loaded = load_audit_data(spec), load_dataset(spec)
    for name, split in loaded.splits().items():
        ours = audit.splits[name]
        assert ours.ids.tolist() == split.ids.tolist()
        np.testing.assert_array_equal(ours.labels, split.y)
        np.testing.assert_allclose(ours.x, split.x, rtol=1e-5, atol=1e-5)


def test_schema_drift_flags_a_shifted_column_and_unseen_categories(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 1000
    frame = pd.DataFrame(
        {
            "steady": rng.normal(size=n),
            "shifted": rng.normal(size=n),
            "city": rng.choice(["paris", "lyon"], n),
            "label": rng.integers(0, 2, n),
        }
    )
    data = load_audit_data(parse_data_arg(f"csv:{_write(tmp_path, frame)}", target="label"))
    test = data.splits["test"].frame
    assert test is not None
    test["shifted"] = test["shifted"] + 1.0
    test.loc[0, "city"] = "marseille"
    m = run_audit(AuditContext(data), ["schema_drift"]).get("schema_drift[test:train]")
    problems = {e["column"] for e in m.details["examples"]}
    assert problems == {"shifted", "city"}
    assert m.details["count"] == 2 and m.n == 3

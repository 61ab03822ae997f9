"""Balance and representation: class shares, group shares, label shift between splits, outliers; for tables
also missing values and schema drift between splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from assay.data.audit.findings import rate_finding, value_finding
from assay.data.audit.registry import AuditContext, register
from assay.measurement import Measurement
from assay.stats import holm, wilson_interval


def imbalance_ratio(labels: np.ndarray, n_classes: int) -> float:
    """Largest class count over smallest (inf when a class is absent)."""
    counts = np.bincount(labels, minlength=n_classes)
    return float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")


@register("class_balance", "class shares per split, imbalance ratio, label shift between splits")
def class_balance(ctx: AuditContext) -> list[Measurement]:
    names, k = ctx.data.class_names, len(ctx.data.class_names)
    out = []
    train = ctx.data.splits.get("train")
    for split_name, split in ctx.data.splits.items():
        counts = np.bincount(split.labels, minlength=k)
        shares = {
            names[c]: {
                "count": int(counts[c]),
                "share": counts[c] / split.n,
                "ci": wilson_interval(int(counts[c]), split.n),
            }
            for c in range(k)
        }
        smallest = int(counts.argmin())
        out.append(
            value_finding(
                f"imbalance_ratio[{split_name}]",
                imbalance_ratio(split.labels, k),
                split.n,
                "largest class count / smallest class count (1 = balanced)",
                check="class_balance",
                higher_is_better=False,
                classes=shares,
                smallest_class=names[smallest],
                absent_classes=[names[c] for c in range(k) if counts[c] == 0],
                split=split_name,
            )
        )
        out.append(
            rate_finding(
                f"minority_class_share[{split_name}]",
                int(counts[smallest]),
                split.n,
                f"share of the smallest class ({names[smallest]}); uniform would be {1 / k:.3g}",
                check="class_balance",
                higher_is_better=True,
                split=split_name,
            )
        )
        if train is not None and split_name != "train":
            table = np.vstack([np.bincount(train.labels, minlength=k), counts])
            table = table[:, table.sum(axis=0) > 0]
            chi2, p, _, _ = stats.chi2_contingency(table) if table.shape[1] > 1 else (0.0, 1.0, 0, None)
            out.append(
                value_finding(
                    f"label_shift_p[{split_name}:train]",
                    float(p),
                    split.n + train.n,
                    "chi-square test of equal class shares in the two splits (p-value)",
                    check="class_balance",
                    higher_is_better=True,
                    chi2=float(chi2),
                    split=split_name,
                    against="train",
                )
            )
    return out


@register("group_balance", "share of each group per split, where group columns exist")
def group_balance(ctx: AuditContext) -> list[Measurement]:
    if all(s.groups is None for s in ctx.data.splits.values()):
        return [Measurement.skipped("group_balance", "data", "no group columns (--groups)")]
    out = []
    for split_name, split in ctx.data.splits.items():
        if split.groups is None:
            continue
        values, counts = np.unique(split.groups, return_counts=True)
        smallest = int(counts.argmin())
        out.append(
            rate_finding(
                f"smallest_group_share[{split_name}]",
                int(counts[smallest]),
                split.n,
                f"share of the smallest group ({values[smallest]}) of {len(values)}",
                check="group_balance",
                higher_is_better=True,
                groups={
                    str(v): {"count": int(c), "share": c / split.n, "ci": wilson_interval(int(c), split.n)}
                    for v, c in zip(values, counts, strict=True)
                },
                split=split_name,
            )
        )
    return out


def mahalanobis(x: np.ndarray, reference: np.ndarray, components: int = 32, seed: int = 0) -> np.ndarray:
    """Squared Mahalanobis distance of each row of ``x`` in the leading principal components of
    ``reference`` (fitted on a 10,000-row sample of it; components with no variance left out)."""
    rng = np.random.default_rng(seed)
    many = len(reference) > 10_000
    sample = reference[rng.choice(len(reference), 10_000, replace=False)] if many else reference
    sample = np.asarray(sample, dtype=np.float64)
    mean = sample.mean(axis=0)
    covariance = np.atleast_2d(np.cov(sample - mean, rowvar=False))
    values, vectors = np.linalg.eigh(covariance)
    values, vectors = values[::-1][:components], vectors[:, ::-1][:, :components]
    keep = values > 1e-9 * max(values.max(), 1e-300)
    basis = (vectors[:, keep] / np.sqrt(values[keep])).astype(np.float32)
    # Project in float32 (the rows are float32 already) and subtract the projected mean: (x - m) V = xV - mV.
    z = np.asarray(x, dtype=np.float32) @ basis - (mean @ basis).astype(np.float32)
    return (z.astype(np.float64) ** 2).sum(axis=1)


@register("outliers", "examples far from the training distribution (Mahalanobis in principal components)")
def outliers(ctx: AuditContext) -> list[Measurement]:
    if not ctx.has_features:
        return [Measurement.skipped("outliers", "data", "no numeric columns to measure distances on")]
    rows = ctx.space[0]
    train_rows = rows[ctx.split_of == ctx.order.index("train")] if "train" in ctx.order else rows
    q = ctx.config.outlier_quantile
    d2_all = mahalanobis(rows, train_rows, seed=ctx.config.seed)
    train_d2 = d2_all[ctx.split_of == ctx.order.index("train")] if "train" in ctx.order else d2_all
    cutoff = float(np.quantile(train_d2, q))
    out = []
    for k, split_name in enumerate(ctx.order):
        d2 = d2_all[ctx.split_of == k]
        flagged = d2 > cutoff
        ids = ctx.data.splits[split_name].ids
        worst = np.argsort(-d2)[:12]
        out.append(
            rate_finding(
                f"outliers[{split_name}]",
                int(flagged.sum()),
                len(d2),
                f"share whose squared Mahalanobis distance (32 principal components of train) exceeds the "
                f"{q} quantile of train's own; {1 - q:.3g} expected for a split drawn like train",
                check="outliers",
                examples=[{"id": str(ids[w]), "distance": float(d2[w])} for w in worst if flagged[w]],
                split=split_name,
                cutoff=cutoff,
                expected_rate=1 - q,
            )
        )
    return out


@register("missing_values", "missing values per column and split", ("table",))
def missing_values(ctx: AuditContext) -> list[Measurement]:
    if any(s.frame is None for s in ctx.data.splits.values()):
        return [
            Measurement.skipped("missing_values", "data", "needs the raw table (a csv: or parquet: source)")
        ]
    out = []
    for split_name, split in ctx.data.splits.items():
        assert split.frame is not None
        missing = split.frame.isna().to_numpy()
        row_missing = missing.any(axis=1)
        per_column = {
            str(c): int(v) for c, v in zip(split.frame.columns, missing.sum(axis=0), strict=True) if v
        }
        out.append(
            rate_finding(
                f"missing_values[{split_name}]",
                int(row_missing.sum()),
                split.n,
                f"share of {split_name} rows with at least one missing value",
                check="missing_values",
                examples=split.ids[row_missing][:12].tolist(),
                columns=per_column,
                split=split_name,
            )
        )
    return out


def _kind(column: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(column):
        return "bool"
    if pd.api.types.is_numeric_dtype(column):
        return "numeric"
    return "text"


@register("schema_drift", "column types, unseen categories and distribution shift between splits", ("table",))
def schema_drift(ctx: AuditContext) -> list[Measurement]:
    if "train" not in ctx.data.splits:
        return [Measurement.skipped("schema_drift", "data", "no train split to compare against")]
    if any(s.frame is None for s in ctx.data.splits.values()):
        return [
            Measurement.skipped("schema_drift", "data", "needs the raw table (a csv: or parquet: source)")
        ]
    train = ctx.data.splits["train"].frame
    assert train is not None
    out = []
    for split_name, split in ctx.data.splits.items():
        if split_name == "train":
            continue
        frame = split.frame
        assert frame is not None
        problems: dict[str, str] = {}
        p_values: dict[str, float] = {}
        for column in train.columns:
            a, b = train[column], frame[column]
            if _kind(a) != _kind(b):
                problems[str(column)] = f"type {_kind(a)} in train, {_kind(b)} in {split_name}"
            elif _kind(a) == "numeric":
                x, y = a.dropna().to_numpy(float), b.dropna().to_numpy(float)
                if len(x) and len(y):
                    p_values[str(column)] = float(stats.ks_2samp(x, y).pvalue)
            elif str(column) not in ctx.data.text_columns or a.nunique() <= 50:
                unseen = set(b.dropna().astype(str)) - set(a.dropna().astype(str))
                if unseen:
                    problems[str(column)] = f"{len(unseen)} categor(y/ies) never seen in train"
        if p_values:
            adjusted = holm(list(p_values.values()))
            for (column, p), q in zip(p_values.items(), adjusted, strict=True):
                if q < ctx.config.drift_alpha:
                    problems[column] = f"distribution differs from train (KS p = {p:.2g}, Holm {q:.2g})"
        n_columns = len(train.columns)
        out.append(
            rate_finding(
                f"schema_drift[{split_name}:train]",
                len(problems),
                n_columns,
                f"share of columns whose type, categories or distribution (two-sample KS, Holm-adjusted, "
                f"alpha {ctx.config.drift_alpha}) differ from train",
                check="schema_drift",
                examples=[{"column": c, "problem": m} for c, m in problems.items()],
                split=split_name,
                against="train",
                unit_of_n="columns",
            )
        )
    return out

"""Every registered audit check, on image and table data: measurements of family 'data', well formed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from assay.data.audit import CHECKS, AuditContext, AuditData, AuditSplit, run_audit
from assay.errors import NotFoundError
from assay.measurement import Measurement
from tests.unit.data.audit.conftest import Planted


def _table() -> AuditData:
    rng = np.random.default_rng(0)
    splits = {}
    for name, n in (("train", 120), ("test", 40)):
        frame = pd.DataFrame(
            {"value": rng.normal(size=n), "note": [f"row {k} mail a{k}@b.org" for k in range(n)]}
        )
        splits[name] = AuditSplit(
            ids=np.char.add(f"{name}-", np.arange(n).astype(str)),
            labels=rng.integers(0, 2, n),
            x=frame[["value"]].to_numpy(np.float32),
            groups=rng.choice(["g1", "g2"], n),
            frame=frame,
            meta=pd.DataFrame({"label": rng.integers(0, 2, n)}),
        )
    return AuditData(
        "table", "table", splits, ["a", "b"], "table", text_columns=["note"], feature_columns=["value"]
    )


@pytest.mark.parametrize("name", CHECKS.names())
@pytest.mark.parametrize("kind", ["image", "table"])
def test_every_check_returns_well_formed_measurements(name: str, kind: str, planted: Planted) -> None:
    data = planted.data if kind == "image" else _table()
    probs = None
    if name == "label_issues":  # supplied probabilities keep the contract test fast
        rng = np.random.default_rng(1)
        probs = {"train": rng.dirichlet(np.ones(len(data.class_names)), data.splits["train"].n)}
    ctx = AuditContext(data, probs=probs, reference_texts=["row 1 mail"] if kind == "table" else None)
    result = run_audit(ctx, [name])
    assert result.measurements
    for m in result.measurements:
        assert isinstance(m, Measurement)
        assert m.family == "data"
        assert m.status in ("ok", "skipped"), m.details
        Measurement.from_dict(m.to_dict())  # the JSON round trip
        if m.status == "skipped":
            assert m.details["reason"]
            continue
        assert m.details["check"] == name
        assert m.value is not None and math.isfinite(m.value)
        if m.details.get("interval") == "wilson":
            assert 0 <= m.ci_low <= m.value <= m.ci_high <= 1  # type: ignore[operator]
            assert m.details["count"] == round(m.value * m.n)  # type: ignore[operator]
            assert len(m.details["examples"]) <= 12


def test_unknown_check_names_list_the_known_ones(planted: Planted) -> None:
    with pytest.raises(NotFoundError, match="Known: class_balance"):
        run_audit(AuditContext(planted.data), ["no_such_check"])

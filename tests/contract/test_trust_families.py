"""The contract every trust family in assay.trust.TRUST_FAMILIES keeps, run over every registered name.

On a tiny registered CNN (12x12 bars, 3 classes), a family run alone reports measurements of its own
family, each ``ok`` or ``skipped`` with the reason (none fails on a model it applies to), in the JSON
schema; every one a gate rule can name (assay.catalogue) carries the catalogue's direction and comes with
per-example evidence that reproduces its value, so two models can be compared in pairs.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from assay import catalogue
from assay.measurement import Measurement
from assay.release import data_for, model_of
from assay.trust import FAMILIES, TRUST_FAMILIES, TrustConfig, run_trust
from assay.workspace import Workspace

SMALL = TrustConfig(
    adversarial_n=40, pgd_steps=2, corruption_n=60, corruptions=("contrast", "jpeg"), ood_n=40,
    membership_n=60, n_boot=100, square_n=10, square_queries=5,
)  # fmt: skip


def test_the_built_in_families_are_registered_in_suite_order() -> None:
    assert TRUST_FAMILIES.in_order()[: len(FAMILIES)] == list(FAMILIES)
    assert TrustConfig().families == FAMILIES


@pytest.mark.parametrize("name", TRUST_FAMILIES.names())
def test_a_family_reports_its_own_measurements_with_evidence(
    name: str, registered: tuple[Workspace, str]
) -> None:
    ws, ref = registered
    version = ws.store.resolve(ref)
    data, _ = data_for(version)
    result = run_trust(model_of(ws, version), data, config=replace(SMALL, families=(name,)))
    assert list(result.seconds) == [name] and result.measurements
    gateable = catalogue.trust_entries()
    for m in result.measurements:
        assert isinstance(m, Measurement) and m.family == name, m
        assert m.status in ("ok", "skipped"), m.details
        assert Measurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m
        if m.status == "skipped":
            assert m.details["reason"]
            continue
        assert m.estimator.strip() and m.value is not None
        entry = gateable.get(m.name)
        if entry is None:
            continue
        assert (entry.family, entry.higher_is_better) == (m.family, m.higher_is_better), m.name
        evidence = result.per_example[m.name]  # a rule on it is judged in pairs
        value = evidence.replicates(np.arange(len(evidence.ids))[None, :])[0]
        assert value == pytest.approx(m.value, abs=1e-12), m.name
    assert set(result.per_example) <= set(gateable)

"""Trust measurements in gate rules, paired: the paired delta and p-value of robust accuracy and of an
OOD AUROC against independent references (statsmodels' exact McNemar, SciPy's binomial test and paired
bootstrap, scikit-learn's AUROC), examples matched by id, and ``assay gate`` running the trust families
a policy names on both models: a model passes against itself, a weakened copy fails, a misspelt trust
metric is a ConfigError listing the names (exit codes 0, 1, 2)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar
from typer.testing import CliRunner

from assay.catalogue import trust_entries
from assay.cli import app
from assay.compare import PerExample, compare_per_example
from assay.errors import ConfigError, DataError
from assay.gate import Policy
from assay.measurement import Measurement
from assay.metrics import ood
from assay.models import save_model
from assay.release import Workspace, data_for, model_of
from assay.trust import families_for, gate_config

N_BOOT = 2000


def _measurement(name: str, value: float, higher_is_better: bool = True) -> Measurement:
    return Measurement(name=name, family="adversarial", value=value, higher_is_better=higher_is_better)


def _robust(hits: np.ndarray, ids: np.ndarray, name: str = "adv_accuracy[pgd-linf@0.1]") -> PerExample:
    return PerExample.mean(_measurement(name, float(hits.mean())), ids, hits)


def _scipy_paired_interval(statistic, *samples: np.ndarray) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """SciPy's paired percentile bootstrap of ``statistic(*samples, axis)`` (its own generator)."""
    result = stats.bootstrap(
        samples, statistic, paired=True, vectorized=True, n_resamples=N_BOOT, method="percentile",
        rng=np.random.default_rng(1),
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def test_paired_robust_accuracy_equals_exact_mcnemar_and_a_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    n = 400
    base = rng.random(n) < 0.55
    flip = rng.random(n)
    cand = np.where(base, flip > 0.15, flip < 0.03)  # loses 15% of the hits, gains 3% of the misses
    ids = np.array([f"test-{i}" for i in range(n)])
    result = compare_per_example(_robust(base, ids), _robust(cand, ids), n_boot=N_BOOT, seed=0)
    c = result.comparison
    b_only, c_only = int(np.sum(base & ~cand)), int(np.sum(~base & cand))
    table = [[int(np.sum(base & cand)), b_only], [c_only, int(np.sum(~base & ~cand))]]
    assert c.test == "exact McNemar"
    assert c.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)
    assert c.p_value == pytest.approx(stats.binomtest(c_only, b_only + c_only, 0.5).pvalue, rel=1e-9)
    assert c.delta == pytest.approx(cand.mean() - base.mean()) and c.n == n
    low, high = _scipy_paired_interval(
        lambda b, k, axis: np.mean(k, axis=axis) - np.mean(b, axis=axis),
        base.astype(float),
        cand.astype(float),
    )
    assert c.delta_ci_low == pytest.approx(low, abs=0.01) and c.delta_ci_high == pytest.approx(high, abs=0.01)
    assert c.delta_ci_high < 0  # a loss of about 7 points on 400 examples is resolved
    # Pairing is by id: the candidate's evidence in another order gives the very same comparison.
    order = rng.permutation(n)
    shuffled = compare_per_example(
        _robust(base, ids), _robust(cand[order], ids[order]), n_boot=N_BOOT, seed=0
    ).comparison
    assert (shuffled.delta, shuffled.delta_ci_low, shuffled.delta_ci_high, shuffled.p_value) == (
        c.delta, c.delta_ci_low, c.delta_ci_high, c.p_value
    )  # fmt: skip


def test_paired_ood_auroc_equals_scikit_learn_and_a_paired_bootstrap() -> None:
    rng = np.random.default_rng(1)
    n_id, n_ood = 150, 100
    is_ood = np.r_[np.zeros(n_id, bool), np.ones(n_ood, bool)]
    # Two detectors sharing most of their noise (as two versions of one model do), the second sharper.
    shared = rng.normal(size=n_id + n_ood)
    base_scores = shared - 1.0 * is_ood + 0.5 * rng.normal(size=is_ood.size)
    cand_scores = shared - 1.6 * is_ood + 0.5 * rng.normal(size=is_ood.size)
    ids = np.array([f"id-{i}" for i in range(n_id)] + [f"noise:{i}" for i in range(n_ood)])

    def evidence(scores: np.ndarray) -> PerExample:
        value = roc_auc_score(is_ood, -scores)
        m = Measurement(name="ood_auroc[noise:energy]", family="ood", value=value, higher_is_better=True)
        return PerExample(m, ids, ood.detection_replicates(scores[:n_id], scores[n_id:], "auroc"))

    c = compare_per_example(evidence(base_scores), evidence(cand_scores), n_boot=N_BOOT, seed=0).comparison
    expected = roc_auc_score(is_ood, -cand_scores) - roc_auc_score(is_ood, -base_scores)
    assert c.test == "paired bootstrap" and c.delta == pytest.approx(expected, abs=1e-12)

    def auroc_delta(flags: np.ndarray, b: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
        # Mann-Whitney: AUROC = (rank sum of the OOD examples - n1(n1 + 1)/2) / (n1 n0), ties mid-ranked.
        n1 = flags.sum(axis=axis)
        n0 = flags.shape[axis] - n1

        def auroc(scores: np.ndarray) -> np.ndarray:
            ranks = stats.rankdata(-scores, axis=axis)
            return ((ranks * flags).sum(axis=axis) - n1 * (n1 + 1) / 2) / (n1 * n0)

        return auroc(k) - auroc(b)

    low, high = _scipy_paired_interval(auroc_delta, is_ood, base_scores, cand_scores)
    assert c.delta_ci_low == pytest.approx(low, abs=0.015) and c.delta_ci_high == pytest.approx(
        high, abs=0.015
    )
    assert c.delta_ci_low > 0


def test_improvement_and_non_inferiority_rules_on_paired_robust_accuracy() -> None:
    from assay.gate import evaluate_policy
    from assay.outputs import from_arrays

    rng = np.random.default_rng(3)
    n = 500
    labels = rng.integers(0, 3, n)
    outputs = from_arrays(labels, logits=rng.normal(size=(n, 3)))  # the same clean outputs for both
    base = rng.random(n) < 0.4
    cand = base | (rng.random(n) < 0.12)  # a hardened candidate: robust wherever the baseline was, and more
    ids = np.array([f"test-{i}" for i in range(n)])
    policy = Policy.from_toml_text(
        '[policy]\nname = "robust"\n'
        '[[rules]]\nmetric = "adv_accuracy[pgd-linf@0.1]"\nkind = "improvement"\n'
        '[[rules]]\nmetric = "adv_accuracy[pgd-linf@0.1]"\nkind = "non_inferiority"\nmargin = 0.01\n'
        '[[rules]]\nmetric = "adv_accuracy[pgd-linf@0.1]"\nkind = "improvement"\nmin_effect = 0.2\n'
    )
    verdict = evaluate_policy(
        policy, outputs, outputs, baseline_per_example={"adv_accuracy[pgd-linf@0.1]": _robust(base, ids)},
        candidate_per_example={"adv_accuracy[pgd-linf@0.1]": _robust(cand, ids)},
    )  # fmt: skip
    improved, non_inferior, too_much = verdict.rules
    gained = int(np.sum(cand & ~base))
    assert (improved.test, improved.alternative) == ("exact McNemar", "greater") and improved.passed
    assert improved.p_value == pytest.approx(
        stats.binomtest(gained, gained, 0.5, alternative="greater").pvalue
    )
    assert non_inferior.passed and non_inferior.test == "paired bootstrap"
    assert not too_much.passed and not verdict.passed  # +7 points is not the +20 the third rule asks for
    assert non_inferior.delta == pytest.approx(cand.mean() - base.mean())


def test_evidence_on_different_examples_is_a_data_error() -> None:
    hits = np.ones(10, bool)
    a = _robust(hits, np.array([f"test-{i}" for i in range(10)]))
    b = _robust(hits, np.array([f"test-{i}" for i in range(5, 15)]))
    with pytest.raises(DataError, match=r"different examples .* 5 in common"):
        compare_per_example(a, b)


def test_policies_know_the_trust_metrics_and_name_a_misspelt_one() -> None:
    names = trust_entries()
    rule = '[[rules]]\nmetric = "{}"\nkind = "non_inferiority"\nmargin = 0.02\n'
    for name in ("adv_accuracy[pgd-linf@0.1]", "corruption_mca", "ood_auroc[digits:energy]"):
        assert Policy.from_toml_text(rule.format(name)).rules[0].metric == name and name in names
    assert families_for(["accuracy", "ood_auroc[digits:energy]", "adv_accuracy[fgsm-l2@1]"]) == (
        "adversarial", "ood"
    )  # fmt: skip
    with pytest.raises(ConfigError) as e:
        Policy.from_toml_text(rule.format("adv_accuracy[pgd-linf@0.01]"), source="p.toml")
    message = str(e.value)
    assert message.startswith("p.toml: rule 1 ('adv_accuracy[pgd-linf@0.01]'): unknown metric")
    assert "did you mean 'adv_accuracy[pgd-linf@0.1]'?" in message
    assert "accuracy, adaptive_ece" in message and "adv_accuracy[<fgsm|pgd>-<norm>@<eps>]" in message
    assert "linf eps 0.05, 0.1, 0.2" in message and "ood_<auroc|aupr|fpr_at_95_tpr>" in message


POLICY = """\
[policy]
name = "robust"
n_bootstrap = 200

[[rules]]
metric = "adv_accuracy[pgd-linf@0.1]"
kind = "non_inferiority"
margin = 0.05

[[rules]]
metric = "ood_auroc[noise:energy]"
kind = "non_inferiority"
margin = 0.05
gated = false
"""


@pytest.fixture(scope="module")
def weakened(registered: tuple[Workspace, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A copy of the registered model with noise on its weights: robust accuracy falls well below."""
    ws, ref = registered
    version = ws.store.resolve(ref)
    module = copy.deepcopy(model_of(ws, version).module)
    assert module is not None
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.6 * p.std())
    folder = save_model(module, tmp_path_factory.mktemp("weak") / "model")
    weak = ws.store.register_version(
        version.model, artifact_dir=folder, spec=version.spec, config_hash="weakened", parent=ref,
        lineage=version.lineage, environment={}, description="weights with noise",
    )  # fmt: skip
    return weak.ref


def _gate(ws: Workspace, base: str, cand: str, policy: Path, out: Path) -> tuple[int, dict]:  # type: ignore[type-arg]
    args = ["gate", base, cand, "--policy", str(policy), "--no-efficiency", "--json"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--home", str(ws.store.home)])
    return result.exit_code, (
        json.loads(result.stdout) if result.exit_code in (0, 1) else {"out": result.output}
    )


def test_assay_gate_pairs_robust_accuracy(
    registered: tuple[Workspace, str], weakened: str, tmp_path: Path
) -> None:
    ws, ref = registered
    policy = tmp_path / "robust.toml"
    policy.write_text(POLICY)
    code, same = _gate(ws, ref, ref, policy, tmp_path)
    assert code == 0, same
    rule = same["verdict"]["rules"][0]
    assert rule["passed"] and rule["delta"] == 0 and rule["test"] == "paired bootstrap"
    comparisons = {c["name"]: c for c in same["verdict"]["comparisons"]}
    robust = comparisons["adv_accuracy[pgd-linf@0.1]"]
    assert robust["test"] == "exact McNemar" and robust["n"] == 1000 and robust["family"] == "adversarial"
    assert comparisons["ood_auroc[noise:energy]"]["test"] == "paired bootstrap"
    names = {m["name"] for m in same["measurements"]}  # only the families the rules name were run
    assert "adv_accuracy[pgd-linf@0.1]" in names and "ood_auroc[noise:energy]" in names
    assert not any(n.startswith(("corruption_", "mia_", "adv_accuracy[pgd-l2")) for n in names)

    code, weak = _gate(ws, ref, weakened, policy, tmp_path)
    assert code == 1, weak
    rule = weak["verdict"]["rules"][0]
    assert not rule["passed"] and rule["delta_ci_high"] < -0.05, rule
    robust = next(c for c in weak["verdict"]["comparisons"] if c["name"] == "adv_accuracy[pgd-linf@0.1]")
    counts = robust["details"]["baseline_only_correct"], robust["details"]["candidate_only_correct"]
    assert robust["p_value"] == pytest.approx(stats.binomtest(counts[1], sum(counts), 0.5).pvalue)
    assert Path(weak["report"]).read_text().count("adv_accuracy[pgd-linf@0.1]") >= 1

    policy.write_text(POLICY.replace("pgd-linf@0.1]", "pgd-linf@0.15]", 1))
    code, bad = _gate(ws, ref, weakened, policy, tmp_path)
    assert code == 2 and "unknown metric 'adv_accuracy[pgd-linf@0.15]'" in bad["out"], bad


def test_the_suite_keeps_evidence_for_every_gateable_measurement(registered: tuple[Workspace, str]) -> None:
    from assay.trust import TrustConfig, run_trust

    ws, ref = registered
    version = ws.store.resolve(ref)
    data, _ = data_for(version)
    config = TrustConfig(
        families=("robustness", "adversarial", "ood"), adversarial_n=50, pgd_steps=3, corruption_n=80,
        ood_n=40, n_boot=100, corruptions=("contrast", "jpeg"),
    )  # fmt: skip
    result = run_trust(model_of(ws, version), data, config=config)
    measured = {m.name for m in result.measurements if m.status == "ok"}
    assert measured & trust_entries().keys() == result.per_example.keys()
    assert {e.measurement.family for e in result.per_example.values()} == {"robustness", "adversarial", "ood"}
    for name, evidence in result.per_example.items():  # the evidence reproduces its measurement
        value = evidence.replicates(np.arange(len(evidence.ids))[None, :])[0]
        assert value == pytest.approx(evidence.measurement.value, abs=1e-12), name
    assert len(result.per_example["corruption_accuracy[jpeg@3]"].ids) == 80
    assert len(result.per_example["ood_auroc[noise:energy]"].ids) == data.test.n + 40


def test_square_pairs_a_variant_without_gradients_with_its_fp32_parent(
    registered: tuple[Workspace, str],
) -> None:
    from dataclasses import replace

    from assay.trust import TrustConfig, run_trust

    ws, ref = registered
    version = ws.store.resolve(ref)
    parent = model_of(ws, version)
    variant = replace(parent, manifest={**parent.manifest, "backend": "onnxruntime"})  # no gradients claimed
    data, _ = data_for(version)
    name = "adv_accuracy[square-linf@0.1]"
    gated = gate_config([name], n_boot=100, seed=3)  # what assay gate runs on both models for this rule
    assert gated is not None and (gated.families, gated.norms, gated.square) == (("adversarial",), (), True)
    assert (gated.n_boot, gated.seed) == (100, 3)
    pgd = gate_config(["adv_accuracy[pgd-l2@1]"], n_boot=100, seed=0)
    assert pgd is not None and (pgd.norms, pgd.square) == (("l2",), None)
    assert gate_config([r.metric for r in Policy.default().rules], n_boot=1000, seed=0) is None
    config = TrustConfig(
        families=("adversarial",), norms=(), square=True, square_n=60, square_queries=20, n_boot=100
    )
    fp32 = run_trust(parent, data, config=config).per_example
    assert [k for k in fp32 if "square" in k] and not [k for k in fp32 if "pgd" in k]  # Square alone
    grad_free = run_trust(variant, data, config=config, parent=parent).per_example
    c = compare_per_example(fp32[name], grad_free[name], n_boot=200).comparison
    assert c.test == "exact McNemar" and c.n == 60  # the same 60 seeded examples for both
    assert abs(c.delta) <= 0.05  # one function (up to float rounding) under the same seeded search

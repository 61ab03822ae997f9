"""Drift detectors against independent references, calibration on fresh null windows, planted shifts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import pdist
from statsmodels.stats.multitest import multipletests

from assay.errors import DataError, UsageError
from assay.outputs import softmax
from assay.serve import drift
from assay.serve.drift import Calibration, Window, baseline_for, calibrate, evaluate
from assay.serve.reference import build_reference, input_summaries, ood_scores
from assay.stats import wilson_interval
from tests.unit.serve import alarms, digits, table_rows, windows

# --- statistics against scipy / statsmodels ------------------------------------------------------------


@pytest.mark.parametrize("discrete", [False, True])
def test_ks_matches_scipy(discrete: bool) -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=400)
    windows = rng.normal(0.2, 1.1, size=(6, 50))
    if discrete:  # ties inside and across the samples
        ref, windows = np.round(ref * 2), np.round(windows * 2)
    d = drift.ks_statistic(np.sort(ref), windows)
    nlp = drift.ks_neg_log10_p(d, 50, 400)
    for i, w in enumerate(windows):
        res = stats.ks_2samp(w, ref, method="asymp")
        assert d[i] == pytest.approx(res.statistic, abs=1e-12)
        assert 10 ** -nlp[i] == pytest.approx(res.pvalue, rel=1e-9)


@pytest.mark.parametrize(("correction", "method"), [("bh", "fdr_bh"), ("holm", "holm")])
def test_min_adjusted_p_matches_statsmodels(correction: drift.Correction, method: str) -> None:
    p = np.random.default_rng(1).random((20, 7)) ** 3
    got = drift.min_adjusted_p(p, correction)
    for i, row in enumerate(p):
        assert got[i] == pytest.approx(multipletests(row, method=method)[1].min(), rel=1e-12)


def test_psi_matches_direct_formula() -> None:
    rng = np.random.default_rng(2)
    ref, live = rng.normal(size=1000), rng.normal(0.5, 1, size=200)
    edges = drift.psi_edges(ref)
    e = np.histogram(ref, np.r_[-np.inf, edges, np.inf])[0] / ref.size
    a = np.histogram(live, np.r_[-np.inf, edges, np.inf])[0] / live.size
    eps = 1e-4  # the documented floor on a bin share
    e, a = np.maximum(e, eps), np.maximum(a, eps)
    expect = float(np.sum((a - e) * np.log(a / e)))
    got = drift.psi(drift.bin_shares(ref, edges), drift.bin_shares(live, edges))
    assert got == pytest.approx(expect, rel=1e-6)  # histogram bins are closed on the left: ties aside, equal
    assert drift.psi(drift.bin_shares(ref, edges), drift.bin_shares(ref, edges)) == 0.0


def _reference(n: int = 2000, seed: int = 0, agreement: float | None = None) -> drift.Reference:
    x, logits, features, labels = table_rows(n, seed)
    return build_reference(x, logits, features, labels, agreement=agreement)


def _window(x: np.ndarray, logits: np.ndarray, features: np.ndarray | None = None, labels=None, shadow=None):
    probs = softmax(logits)
    return Window(
        inputs=input_summaries(x)[1], confidence=probs.max(1), predictions=probs.argmax(1),
        ood=ood_scores(logits), embeddings=features, labels=labels, shadow_predictions=shadow,
    )  # fmt: skip


def test_window_statistics_match_scipy() -> None:
    ref = _reference(agreement=0.9)
    cal = calibrate(ref, window=100, false_alarm_windows=50, n_resamples=200)
    base = baseline_for(ref, cal)
    x, logits, features, labels = table_rows(100, seed=7)
    labels = labels.copy()
    labels[:40] = -1  # unlabelled rows are left out of the accuracy test
    shadow = softmax(logits).argmax(1)
    shadow[:25] = (shadow[:25] + 1) % 4
    w = _window(x, logits, features, labels, shadow)
    results = {r.name: r for r in evaluate(base, cal, w)}
    assert set(results) == set(drift.DETECTORS)
    cmp_rows, _ = drift.split_halves(ref.n, 100, cal.seed)
    # features: KS per column, BH across columns, statistic = -log10 of the smallest adjusted p
    ps = [stats.ks_2samp(x[:, j], ref.inputs[cmp_rows, j], method="asymp").pvalue for j in range(4)]
    adjusted = multipletests(ps, method="fdr_bh")[1]
    assert results["features"].statistic == pytest.approx(-np.log10(adjusted.min()), rel=1e-6)
    rows = {r["name"]: r for r in results["features"].details["features"]}
    assert [rows[f"x{j}"]["p_adjusted"] for j in range(4)] == pytest.approx(adjusted.tolist(), rel=1e-6)
    # confidence: KS on the max probability
    conf_p = stats.ks_2samp(w.confidence, ref.probs[cmp_rows].max(1), method="asymp").pvalue
    assert results["confidence"].statistic == pytest.approx(-np.log10(conf_p), rel=1e-6)
    # predictions: chi-square goodness of fit on the (pooled) class counts
    counts = np.bincount(base.bin_of_class[w.predictions], minlength=base.bin_share.size)
    chi = stats.chisquare(counts, f_exp=100 * base.bin_share)
    assert results["predictions"].statistic == pytest.approx(-np.log10(chi.pvalue), rel=1e-6)
    # ood rate: one-sided binomial test of the share above the reference's 95th percentile
    k = int((w.ood > np.quantile(ref.ood[cmp_rows], 0.95)).sum())
    binom_p = stats.binomtest(k, 100, base.ood_rate, alternative="greater").pvalue
    assert results["ood_rate"].statistic == pytest.approx(-np.log10(binom_p), rel=1e-6)
    # accuracy: beta-binomial predictive lower tail of the correct count among the 60 labelled rows
    has = labels >= 0
    correct = int((w.predictions[has] == labels[has]).sum())
    c = int((ref.probs[cmp_rows].argmax(1) == ref.labels[cmp_rows]).sum())
    acc_p = stats.betabinom.cdf(correct, 60, c + 0.5, cmp_rows.size - c + 0.5)
    assert results["accuracy"].statistic == pytest.approx(-np.log10(acc_p), rel=1e-6)
    assert results["accuracy"].details["n_labelled"] == 60
    # agreement: 25 planted disagreements on 100 shadowed rows against 0.9 on the reference
    assert results["agreement"].details["agreement"] == 0.75
    assert results["agreement"].alarm
    json.dumps([r.to_dict() for r in results.values()])  # details are plain JSON
    low, high = wilson_interval(75, 100)
    assert results["agreement"].explain() == (
        f"agreement 75.0% [{low:.1%}, {high:.1%}] on 100 examples, reference 90.0%"
    )
    low, high = wilson_interval(correct, 60)
    assert results["accuracy"].explain() == (
        f"accuracy {correct / 60:.1%} [{low:.1%}, {high:.1%}] on 60 examples, "
        f"reference {(c + 0.5) / (cmp_rows.size + 1):.1%}"
    )


def test_explanations_name_what_moved() -> None:
    """A planted shift of one column is named by the features detector; confidence and OOD rate give
    the window's value against the reference's."""
    ref = _reference()
    cal = calibrate(ref, window=200, false_alarm_windows=50, n_resamples=200)
    x, logits, features, _ = table_rows(200, seed=8)
    x = x.copy()
    x[:, 2] = x[:, 2] * 3 + 2
    results = {r.name: r for r in evaluate(baseline_for(ref, cal), cal, _window(x, logits * 0.2, features))}
    assert results["features"].alarm
    assert results["features"].explain().startswith("most shifted: x2 (KS ")
    conf = results["confidence"]
    assert conf.explain() == (
        f"mean confidence {conf.details['mean']:.1%}, reference {conf.details['reference_mean']:.1%}"
    )
    assert conf.details["mean"] < conf.details["reference_mean"]  # logits scaled down: less confident
    assert results["ood_rate"].explain().startswith("OOD rate ")
    assert results["predictions"].explain().startswith("class ")
    # details without what the line needs (a result built by hand) give no line, and no error: the guard
    # writes incidents with it
    assert all(drift.DetectorResult(name, 1.0, 0.5, True, {}).explain() == "" for name in drift.DETECTORS)


def test_mmd_random_features_against_exact_quadratic_estimator() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 5)), rng.normal(0.3, 1, size=(80, 5))
    sigma = drift.median_heuristic(np.r_[x, y])
    assert sigma == pytest.approx(np.median(pdist(np.r_[x, y])), rel=1e-9)

    def gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma**2))

    def unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
        n, m = len(kxx), len(kyy)
        xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        return float(xx + yy - 2 * kxy.mean())

    ff = drift.FourierFeatures.draw(5, sigma, 4096, seed=0)
    px, py = ff.transform(x), ff.transform(y)
    got = drift.mmd2_unbiased_from_sums(px.sum(0), 60, py.sum(0), 80)[0]
    # 1) the linear-time formula is the quadratic unbiased estimator of the random-feature kernel; the
    # features are computed in float32, so the formula's ‖φ‖² = 1 holds to 1e-7 and the identity to 1e-9
    assert got == pytest.approx(unbiased(px @ px.T, py @ py.T, px @ py.T), abs=1e-9)
    # 2) the random-feature kernel approximates the Gaussian kernel, so the MMD² is close to the exact one
    exact = unbiased(gram(x, x), gram(y, y), gram(x, y))
    assert got == pytest.approx(exact, abs=0.01)
    assert np.abs(px @ py.T - gram(x, y)).max() < 0.08


# --- calibration -------------------------------------------------------------------------------------


def test_budget_split_and_tail() -> None:
    alphas = drift.split_budget(["features", "predictions", "confidence"], 300)
    assert sum(alphas.values()) == pytest.approx(1 / 300) and len(set(alphas.values())) == 1
    weighted = drift.split_budget(["features", "predictions"], 100, {"features": 3, "predictions": 1})
    assert weighted["features"] == pytest.approx(0.0075)
    with pytest.raises(UsageError, match="> 1"):
        drift.split_budget(["features"], 1)
    null = np.random.default_rng(4).exponential(2.0, size=4000)
    thr, tail = drift.tail_threshold(null, 1e-4)  # beyond the sample: an exponential tail
    assert tail == "exponential" and thr == pytest.approx(2.0 * np.log(1e4), rel=0.1)
    thr, tail = drift.tail_threshold(null, 0.05)
    assert tail == "empirical" and thr == pytest.approx(np.quantile(null, 0.95), rel=0.01)


def test_calibration_is_json_and_tied_to_its_reference() -> None:
    ref = _reference()
    cal = calibrate(ref, window=100, n_resamples=300)
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal
    assert sum(cal.alphas.values()) == pytest.approx(1 / 1000)
    assert set(cal.thresholds) == {
        "features",
        "embeddings",
        "predictions",
        "confidence",
        "ood_rate",
        "accuracy",
    }
    with pytest.raises(DataError, match="different reference"):
        baseline_for(_reference(seed=1), cal)
    with pytest.raises(DataError, match="Not an assay calibration"):
        Calibration.from_dict({"window": 3})
    with pytest.raises(DataError, match="malformed"):
        Calibration.from_dict({**cal.to_dict(), "thresholds": None})
    with pytest.raises(UsageError, match="too small"):
        calibrate(ref, window=1500)
    with pytest.raises(UsageError, match="Unknown detector"):
        calibrate(ref, window=100, detectors=["nope"])
    with pytest.raises(UsageError, match="cannot support"):
        calibrate(ref, window=100, detectors=["agreement"])


def test_false_alarm_rate_on_fresh_null_windows() -> None:
    """Budget 50 windows: 2000 windows of fresh rows from the reference's distribution alarm at a rate
    whose Wilson interval is not above 1/50 (and not absurdly below it: the thresholds are not infinite)."""
    window, budget, n_windows = 100, 50, 2000
    ref = _reference(n=4000, seed=0)
    cal = calibrate(ref, window=window, false_alarm_windows=budget, seed=0)
    base = baseline_for(ref, cal)
    x, logits, features, labels = table_rows(window * n_windows, seed=99)
    raised = alarms(base, cal, windows(base, x, logits, features, labels, window))
    low, high = wilson_interval(int(raised.sum()), n_windows)
    assert low <= 1 / budget, f"false-alarm rate {raised.mean():.4f} is above the budget 1/{budget}"
    assert high >= 0.002, f"false-alarm rate {raised.mean():.4f}: the thresholds are far too conservative"


# --- planted shifts on real data (scikit-learn's digits) ---------------------------------------------


def _digits_setup(budget: float = 200):
    images, labels, model = digits()
    order = np.random.default_rng(0).permutation(len(images))
    ref_rows, live_rows = order[:1000], order[1000:]
    logits, features = model(images[ref_rows])
    ref = build_reference(images[ref_rows], logits, features, labels[ref_rows])
    cal = calibrate(ref, window=200, false_alarm_windows=budget, seed=0)
    return images[live_rows], labels[live_rows], model, ref, cal


def _alarm_rates(shift, n_windows: int = 40, weights: np.ndarray | None = None):
    images, labels, model, ref, cal = _digits_setup()
    base = baseline_for(ref, cal)
    rng = np.random.default_rng(5)
    per_detector: dict[str, int] = {name: 0 for name in cal.thresholds}
    any_alarm = 0
    p = None if weights is None else weights[labels] / weights[labels].sum()
    for _ in range(n_windows):
        rows = rng.choice(len(images), 200, replace=False, p=p)
        x = shift(images[rows], rng)
        logits, features = model(x)
        results = evaluate(base, cal, _window(x, logits, features))
        any_alarm += any(r.alarm for r in results)
        for r in results:
            per_detector[r.name] += r.alarm
    return any_alarm / n_windows, {k: v / n_windows for k, v in per_detector.items()}


def test_contrast_reduction_alarms() -> None:
    rate, per = _alarm_rates(lambda x, rng: 0.5 + 0.5 * (x - 0.5))
    assert rate >= 0.9 and per["features"] >= 0.9


def test_gaussian_noise_alarms() -> None:
    rate, per = _alarm_rates(lambda x, rng: np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1))
    assert rate >= 0.9 and per["features"] >= 0.9


def test_label_shift_alarms_predictions() -> None:
    weights = np.ones(10)
    weights[:3] = 4.0  # classes 0-2 four times as common
    _, per = _alarm_rates(lambda x, rng: x, weights=weights)
    assert per["predictions"] >= 0.9


def test_unshifted_digits_stay_within_budget() -> None:
    rate, _ = _alarm_rates(lambda x, rng: x)
    low, _ = wilson_interval(round(rate * 40), 40)
    assert low <= 1 / 200

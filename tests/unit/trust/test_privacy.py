"""Membership inference: AUC equals scikit-learn's, TPR at 0.1% FPR equals a direct count, a model
overfit to a small training set leaks (AUC clearly above 0.5) while the well-regularised shared model
stays near 0.5, and the shadow-model attack learns the same signal."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from assay.metrics import privacy as pv
from tests.conftest import needs_fashion_mnist
from tests.unit.trust.conftest import SmallModel, fit, tiny_cnn


def test_auc_and_tpr_at_low_fpr_equal_references() -> None:
    rng = np.random.default_rng(0)
    m, n = rng.normal(0.5, 1, 3000), rng.normal(0, 1, 3000)
    y = np.r_[np.ones(m.size), np.zeros(n.size)]
    assert pv.membership_auc(m, n) == pytest.approx(roc_auc_score(y, np.r_[m, n]), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, np.r_[m, n], drop_intermediate=False)
    assert pv.tpr_at_fpr(m, n) == pytest.approx(tpr[fpr <= 0.001].max(), abs=1e-12)
    ms = {x.name: x for x in pv.attack_measurements(m, n, attack="toy", n_boot=200)}
    auc = ms["mia_auc[toy]"]
    assert auc.ci_low is not None and auc.ci_high is not None and auc.ci_low < (auc.value or 0) < auc.ci_high
    assert "note" not in auc.details  # 3000 non-members: 0.1% FPR is 3 false positives


def _probs(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():  # float64 softmax: confident members must not all round to p = 1
        return torch.softmax(model(torch.from_numpy(x)).double(), 1).numpy()


@needs_fashion_mnist
def test_an_overfit_model_leaks_and_a_regularised_one_does_not(small_model: SmallModel) -> None:
    clean = ~small_model.poisoned
    xm, ym = small_model.x_train[clean][:2000], small_model.y_train[clean][:2000]
    xn, yn = small_model.x_test[:2000], small_model.y_test[:2000]
    regular = pv.loss_attack_measurements(
        _probs(small_model.model, xm), ym, _probs(small_model.model, xn), yn, n_boot=200
    )[0]
    overfit = tiny_cnn(8)
    xs, ys = xm[:100], ym[:100]
    fit(overfit, xs, ys, epochs=100)
    leaky = pv.loss_attack_measurements(
        _probs(overfit, xs), ys, _probs(overfit, xn[:500]), yn[:500], n_boot=200
    )[0]
    assert leaky.value is not None and leaky.ci_low is not None and leaky.ci_low > 0.6
    assert regular.value is not None and abs(regular.value - 0.5) < 0.05
    assert leaky.details["attack"] == "loss" and leaky.family == "privacy"

    def train_shadow(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        shadow = tiny_cnn(8, seed=1)
        fit(shadow, x, y, epochs=100, seed=1)
        return lambda batch: _probs(shadow, batch)

    shadow_x, shadow_y = xm[1000:1200], ym[1000:1200]
    scores = pv.shadow_attack_scores(
        train_shadow,
        shadow_x,
        shadow_y,
        np.r_[_probs(overfit, xs), _probs(overfit, xn[:500])],
        np.r_[ys, yn[:500]],
        n_shadows=1,
    )
    assert pv.membership_auc(scores[:100], scores[100:]) > 0.6

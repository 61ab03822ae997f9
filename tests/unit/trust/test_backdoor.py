"""Backdoor detection on the planted BadNets trigger of the shared model: the trigger works, robust
whitening finds the poisoned examples (recall >= 0.8 at <= 5% false positives), plain spectral
signatures are reported as they are; both detectors stay quiet on a synthetic clean class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from assay.errors import UsageError
from assay.metrics import backdoor as bd
from tests.conftest import needs_fashion_mnist
from tests.unit.trust.conftest import TARGET, SmallModel, stamp


def _features(small: SmallModel) -> np.ndarray:
    with torch.no_grad():
        return small.model.features(torch.from_numpy(small.x_train)).numpy()


@needs_fashion_mnist
def test_the_planted_backdoor_is_found(small_model: SmallModel) -> None:
    with torch.no_grad():
        triggered = stamp(small_model.x_test[small_model.y_test != TARGET])
        success = float((small_model.model(torch.from_numpy(triggered)).argmax(1) == TARGET).float().mean())
    assert success > 0.5  # the backdoor was learnt: a real defect to find
    f, y, poisoned = _features(small_model), small_model.y_train, small_model.poisoned
    detection = bd.robust_whitened(f, y, epsilon=0.05)
    recall = detection.flagged[poisoned].mean()
    false_positive = detection.flagged[(y == TARGET) & ~poisoned].mean()
    assert recall >= 0.8 and false_positive <= 0.05, (recall, false_positive)
    ms = {m.name: m for m in bd.backdoor_measurements(f, y, epsilon=0.05)}
    listed = ms[f"backdoor_flagged[robust_whitened:{TARGET}]"].details["suspicious_ids"]
    assert np.mean(poisoned[np.array(listed[:10], dtype=int)]) >= 0.8  # the first ids to inspect are poison


def test_detectors_on_synthetic_features() -> None:
    rng = np.random.default_rng(0)
    scale = np.linspace(3, 0.5, 16)  # an anisotropic clean class
    clean = rng.normal(size=(400, 16)) * scale
    poison = rng.normal(size=(20, 16)) * scale
    poison[:, 12] += 8.0  # along a low-variance direction: 5% x 8² < 3², not the top singular vector
    f = np.vstack([clean, poison])
    y = np.zeros(420, dtype=int)
    truth = np.r_[np.zeros(400, bool), np.ones(20, bool)]
    white = bd.robust_whitened(f, y)
    assert white.flagged[truth].mean() >= 0.9 and white.flagged[~truth].mean() <= 0.05
    spectral = bd.spectral_signatures(f, y)
    assert spectral.flagged.sum() == int(np.ceil(1.5 * 0.05 * 420))  # the paper's quota
    assert spectral.flagged[truth].mean() < 0.5  # why robust whitening exists: spectral misses this one
    ac = bd.activation_clustering(rng.normal(size=(300, 16)), np.zeros(300, dtype=int))
    assert not ac.flagged.any()  # one Gaussian blob: neither half is small, nothing flagged
    with pytest.raises(UsageError, match="epsilon"):
        bd.spectral_signatures(f, y, epsilon=0.6)

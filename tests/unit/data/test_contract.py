"""The input contract: planted mismatches are found, data made the same way passes, tables are
re-standardised with the model's own statistics (checked against scikit-learn's StandardScaler)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler

from assay.data import Dataset, InputContract, load_dataset, parse_data_arg
from tests.conftest import write_bars


def _digits_images(path: Path, *, divisor: int = 1, as_table: bool = False, seed: int = 0) -> Path:
    """scikit-learn's digits as an .npz copy: 8x8 uint8 images of 0-16 counts (or a 64-column table)."""
    digits = load_digits()
    x = (digits.images // divisor).astype(np.uint8)
    if as_table:
        x = x.reshape(len(x), -1).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[:1400], order[1400:]
    np.savez(path, x_train=x[train], y_train=digits.target[train], x_test=x[test], y_test=digits.target[test])
    return path


def _contract(data: Dataset, source: str = "test") -> InputContract:
    return InputContract.of(data, source)


def test_round_trips_through_json() -> None:
    data = load_dataset(parse_data_arg("sklearn:digits"))
    contract = _contract(data, "sklearn:digits")
    assert InputContract.from_dict(json.loads(json.dumps(contract.to_dict()))) == contract
    assert contract.kind == "table" and contract.shape == (64,) and contract.transform == "standardise"
    assert len(contract.mean) == len(contract.sd) == 64 and contract.class_names == tuple("0123456789")


def test_planted_mismatches_are_found_and_data_made_the_same_way_is_not(tmp_path: Path) -> None:
    """Recall and precision of the check on planted cases: every mismatch found, no clean case flagged."""
    digits = load_dataset(parse_data_arg("sklearn:digits"))
    bars = load_dataset(parse_data_arg(f"npz:{write_bars(tmp_path / 'bars.npz', 300, 150)}"))
    images = load_dataset(parse_data_arg(f"npz:{_digits_images(tmp_path / 'img.npz')}"))
    sixteenths = load_dataset(parse_data_arg(f"npz:{_digits_images(tmp_path / 'img16.npz', divisor=4)}"))
    raw_table = load_dataset(parse_data_arg(f"npz:{_digits_images(tmp_path / 't.npz', as_table=True)}"))
    other_split = load_dataset(parse_data_arg("sklearn:digits", seed=3))
    reshuffled = load_dataset(parse_data_arg(f"npz:{_digits_images(tmp_path / 's.npz', seed=1)}"))
    wine = load_dataset(parse_data_arg("sklearn:wine"))
    renamed = replace(digits, feature_names=[*digits.feature_names[1:], digits.feature_names[0]])
    named = replace(digits, class_names=[f"digit {c}" for c in digits.class_names])

    planted = {  # (model's data, evaluated data) -> the difference that must be named
        "table model, image data": (digits, images, "kind"),
        "image model, table data": (images, raw_table, "kind"),
        "other image shape": (images, bars, "shape"),
        "other features": (digits, wine, "shape"),
        "features in another order": (digits, renamed, "features"),
        "other class names": (named, replace(digits, class_names=list("abcdefghij")), "classes"),
        "0-255 images as 0-4 counts": (images, sixteenths, "scale"),
    }  # fmt: skip
    clean = {
        "its own data": (digits, digits),
        "another seeded split of the same source": (digits, other_split),
        "an .npz copy of the raw table, standardised with other rows": (digits, raw_table),
        "images, another split": (images, reshuffled),
        "index class names against named ones": (named, digits),
    }  # fmt: skip
    found = {case: _contract(model).fit(data).differences for case, (model, data, _) in planted.items()}
    flagged = {case: _contract(model).fit(data).differences for case, (model, data) in clean.items()}
    for case, (_, _, what) in planted.items():
        assert any(d.startswith(f"{what}:") for d in found[case]), (case, found[case])
    assert not any(flagged.values()), flagged  # precision 1 on these cases, recall 1 above


def test_tables_are_restandardised_with_the_models_own_statistics(tmp_path: Path) -> None:
    """A table model's inputs are its training rows' statistics applied to the new raw rows."""
    model_data = load_dataset(parse_data_arg("sklearn:digits"))
    other = load_dataset(parse_data_arg(f"npz:{_digits_images(tmp_path / 't.npz', as_table=True)}"))
    fitted = _contract(model_data).fit(other)
    assert fitted.differences == ()

    digits = load_digits()
    # The raw rows of the model's training split, recovered from assay's standardised ones and its stats.
    mean, sd = model_data.standardisation  # type: ignore[misc]
    scaler = StandardScaler().fit(model_data.train.x.astype(np.float64) * sd + mean)
    raw_test = np.asarray(
        [digits.images[i].ravel() for i in np.random.default_rng(0).permutation(len(digits.images))[1400:]],
        dtype=np.float64,
    )
    expected = scaler.transform(raw_test)
    # Two float32 roundings stand between them: of assay's stored standardised inputs, and of the result
    # (half an ulp each, as the statistics are float64 on both sides): within 2 ulp of the largest value.
    ulp = float(np.spacing(np.float32(np.abs(expected).max())))
    np.testing.assert_allclose(fitted.data.test.x, expected, rtol=0, atol=2 * ulp)
    # Data already made by the same contract is returned unchanged, to the bit.
    assert _contract(model_data).fit(model_data).data is model_data


def test_describe_names_kind_shape_classes_and_source() -> None:
    contract = _contract(load_dataset(parse_data_arg("sklearn:wine")), "sklearn:wine")
    assert contract.describe() == (
        "table of 13 features standardised with its training rows' mean and sd, 3 classes, from sklearn:wine"
    )


@pytest.mark.parametrize("ratio", [0.4, 2.6])
def test_scale_check_bounds(ratio: float, tmp_path: Path) -> None:
    """Images multiplied by a factor beyond the stated sd ratio (2) are flagged; within it they are not."""
    data = load_dataset(parse_data_arg(f"npz:{write_bars(tmp_path / 'b.npz', 300, 150)}"))
    scaled = replace(data, test=replace(data.test, x=np.clip(data.test.x * ratio, 0, None)))
    mild = replace(data, test=replace(data.test, x=data.test.x * 1.2))
    assert any(d.startswith("scale:") for d in _contract(data).fit(scaled).differences)
    assert _contract(data).fit(mild).differences == ()

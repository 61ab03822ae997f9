"""The contract every compressor in assay.compress.COMPRESSORS keeps, run over every registered name.

With its default parameters (a shorter training where it trains) on a tiny trained CNN, a compressor
leaves its source untouched and writes a model folder that loads through the adapters and predicts
every class's logits for a batch; or it says why it cannot run here (:class:`~assay.compress.Skipped`,
with the reason). The text compressors (``TEXT_COMPRESSORS``) keep the same contract on a tiny random
BERT classifier.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from assay.compress import COMPRESSORS, Built, Context, Skipped
from assay.compress.text import TEXT_COMPRESSORS, TextContext, TextSource
from assay.data import Dataset
from assay.models import ZooModel
from assay.models.adapters import load_artifact

# Parameters that keep a compressor's own training short here (distillation trains 8 epochs by default).
SHORT: dict[str, dict[str, object]] = {"distill": {"epochs": 1}}


@pytest.mark.parametrize("name", COMPRESSORS.names())
def test_a_compressor_builds_a_loadable_model_or_says_why_not(
    name: str, tiny_cnn: ZooModel, bars_data: Dataset, ctx: Context, tmp_path: Path
) -> None:
    compressor = COMPRESSORS.get(name)
    assert callable(compressor) and len(inspect.signature(compressor).parameters) == 4
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    out = tmp_path / name
    try:
        built = compressor(tiny_cnn, ctx, out, dict(SHORT.get(name, {})))
    except Skipped as e:
        assert str(e).strip(), f"{name} skipped without a reason"
        return
    finally:
        after = tiny_cnn.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), f"{name} modified its source model"
    assert isinstance(built, Built) and built.spec["arch"] == tiny_cnn.spec["arch"]
    loaded = load_artifact(out)
    logits, _ = loaded.predictor.logits_and_features(bars_data.test.x[:16])
    assert logits.shape == (16, bars_data.n_classes) and np.isfinite(logits).all()
    assert loaded.weights.is_file() and loaded.parameters > 0


@pytest.fixture(scope="module")
def text_source(tmp_path_factory: pytest.TempPathFactory) -> TextSource:
    """A tiny random BERT classifier staged as the hf adapter stores it."""
    pytest.importorskip("transformers")
    from tests.unit.models.test_adapter_hf import stage_and_load, tiny_classifier

    root = tmp_path_factory.mktemp("text-contract")
    tiny_classifier(root / "bert", num_labels=2)  # the classes of tiny_text_data, which drop_layers trains on
    loaded = stage_and_load(root / "bert", root)
    return TextSource(loaded.weights.parent, loaded.manifest)


@pytest.mark.parametrize("name", TEXT_COMPRESSORS.names())
def test_a_text_compressor_builds_a_loadable_model_or_says_why_not(
    name: str, text_source: TextSource, tmp_path: Path
) -> None:
    from tests.unit.models.test_heads import tiny_text_data

    data = tiny_text_data()
    compressor = TEXT_COMPRESSORS.get(name)
    assert callable(compressor) and len(inspect.signature(compressor).parameters) == 4
    before = (text_source.folder / "model.safetensors").read_bytes()
    out = tmp_path / name
    try:
        compressor(text_source, TextContext(data, calibration_size=32), out, {})
    except Skipped as e:
        assert str(e).strip(), f"{name} skipped without a reason"
        return
    finally:
        assert (text_source.folder / "model.safetensors").read_bytes() == before, f"{name} changed its source"
    loaded = load_artifact(out)
    logits, _ = loaded.predictor.logits_and_features(data.test.x[:16])
    assert logits.shape == (16, text_source.num_labels) and np.isfinite(logits).all()
    assert loaded.weights.is_file() and loaded.parameters > 0

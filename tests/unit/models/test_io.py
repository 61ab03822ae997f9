from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from assay.errors import ConfigError, DataError, NotFoundError
from assay.models import build_model, count_parameters, default_spec, load_model, save_model
from assay.models.io import SPEC, WEIGHTS


@pytest.mark.parametrize(("arch", "shape"), [("cnn", (1, 28, 28)), ("mlp", (13,))])
def test_round_trip_is_exact(tmp_path: Path, arch: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(default_spec(arch, shape, 5)).eval()
    x = torch.rand(4, *shape)
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert torch.equal(model(x), loaded(x))
    assert loaded.features(x).shape == (
        4,
        model.spec.get("hidden", [0, 64])[-1] if arch == "mlp" else model.spec["hidden"],
    )
    assert count_parameters(loaded) == count_parameters(model)


def test_weights_are_safetensors_not_pickle(tmp_path: Path) -> None:
    save_model(build_model(default_spec("mlp", (4,), 2)), tmp_path / "m")
    raw = (tmp_path / "m" / WEIGHTS).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])  # safetensors: 8-byte length, then a JSON header
    assert "classifier.weight" in header
    assert b"\x80\x04" not in raw[:2]  # no pickle protocol marker at the start


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model(default_spec("mlp", (4,), 2))
    save_model(model, tmp_path / "m")
    before = (tmp_path / "m" / WEIGHTS).read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("assay.models.io.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(build_model(default_spec("mlp", (4,), 3)), tmp_path / "m")
    assert (tmp_path / "m" / WEIGHTS).read_bytes() == before  # the old model is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left


def test_bad_model_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a model folder"):
        load_model(tmp_path)
    save_model(build_model(default_spec("mlp", (4,), 2)), tmp_path / "m")
    spec = json.loads((tmp_path / "m" / SPEC).read_text())
    spec["spec"]["hidden"] = [7]
    (tmp_path / "m" / SPEC).write_text(json.dumps(spec))
    with pytest.raises(DataError, match="weights do not load"):
        load_model(tmp_path / "m")


def test_spec_errors() -> None:
    with pytest.raises(NotFoundError, match=r"Unknown model 'resnet'\. Known: cnn, mlp"):
        default_spec("resnet", (1, 28, 28), 10)
    with pytest.raises(ConfigError, match="square images"):
        default_spec("cnn", (13,), 2)
    with pytest.raises(ConfigError, match=r"Cannot set \['n_classes'\] on a 'cnn' model"):
        default_spec("cnn", (1, 28, 28), 10, {"n_classes": 2})
    with pytest.raises(
        ConfigError, match=r"Cannot set \['bogus'\] on a 'mlp' model.*\['dropout', 'hidden'\]"
    ):
        default_spec("mlp", (4,), 2, {"bogus": 1})
    with pytest.raises(ConfigError, match="needs an 'arch'"):
        build_model({"channels": [1]})

"""The executors' contract without a cluster: the local executor runs units in order and fails fast, a
folder packs and unpacks whole, and a loaded model pickles as its files and predicts the same after."""

from __future__ import annotations

import gc
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from assay.errors import MissingExtraError, UsageError
from assay.executor import LocalExecutor, PackedFolder, executor_for
from assay.models import build_model, default_spec, save_model
from assay.models.adapters import load_artifact


def _fails(x: int) -> int:
    if x == 2:
        raise UsageError("two is refused")
    return x


def test_local_map_keeps_the_order_and_stops_at_the_first_failure() -> None:
    started: list[str] = []
    ex = LocalExecutor()
    assert ex.map(pow, [(2, 3), (3, 2), (5, 0)], ["a", "b", "c"], on_start=started.append) == [8, 9, 1]
    assert started == ["a", "b", "c"] and ex.describe() == {"kind": "local"}
    started.clear()
    with pytest.raises(UsageError, match="two is refused"):
        ex.map(_fails, [(1,), (2,), (3,)], ["1", "2", "3"], on_start=started.append)
    assert started == ["1", "2"]  # the third never started


def test_a_failed_unit_keeps_its_exception_for_result() -> None:
    task = LocalExecutor().submit(_fails, 2, label="two")
    with pytest.raises(UsageError):
        task.result()


class _Holder:
    def __init__(self, folder: Path) -> None:
        self.folder = folder


def test_a_packed_folder_loads_whole_and_its_files_go_with_what_it_loaded(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"\x00" * 10)
    (tmp_path / "sub" / "b.json").write_text('{"k": 1}')
    packed = pickle.loads(pickle.dumps(PackedFolder.of(tmp_path)))
    assert set(packed.files) == {"a.bin", "sub/b.json"}
    holder = packed.load(_Holder)
    folder = holder.folder
    assert folder != tmp_path and (folder / "a.bin").read_bytes() == b"\x00" * 10
    assert (folder / "sub" / "b.json").read_text() == '{"k": 1}'
    del holder
    gc.collect()
    assert not folder.exists()  # dropped with the object that used it

    def refuses(folder: Path) -> None:
        raise ValueError(f"no model in {folder}")

    with pytest.raises(ValueError, match="no model in") as e:
        packed.load(refuses)
    assert not Path(str(e.value).removeprefix("no model in ")).exists()  # nothing left behind


def test_a_loaded_model_pickles_as_its_files_and_predicts_the_same(tmp_path: Path) -> None:
    spec = default_spec("mlp", [6], 3, {"hidden": [8]})
    save_model(build_model(spec), tmp_path / "model")
    model = load_artifact(tmp_path / "model")
    copy = pickle.loads(pickle.dumps(model))
    assert (
        copy.folder is not None
        and copy.folder != model.folder
        and copy.spec == model.spec
        and copy.parameters == model.parameters
    )
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_array_equal(
        copy.predictor.logits_and_features(x)[0], model.predictor.logits_and_features(x)[0]
    )


def test_ray_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(MissingExtraError, match=r"assay\[ray\]"):
        executor_for("auto")
    assert isinstance(executor_for(None), LocalExecutor)

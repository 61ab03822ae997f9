"""Safe loading: real malicious pickles (built here via __reduce__, never unpickled) are refused before
anything runs; plain state dicts saved by torch (zip and legacy formats) and safetensors files load."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from assay.errors import DataError
from assay.models import build_model, default_spec
from assay.models.safeload import UnsafeFileError, load_state_dict, load_weights, scan_checkpoint, scan_pickle


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(default_spec("mlp", (4,), 3))


class _Reduce:
    """Pickles as ``fn(*args)``: what an attacker's payload looks like to the unpickler."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args

    def __call__(self, *args: Any) -> Any:  # pickle checks that a reduce callable is callable; never run
        raise AssertionError("a payload was called")


def _payloads(sentinel: Path) -> dict[str, Any]:
    cmd = f"touch {sentinel}"
    import_os = _Reduce(builtins.__import__, "os")
    return {
        "os.system": _Reduce(os.system, cmd),
        "eval": _Reduce(builtins.eval, f"__import__('os').system({cmd!r})"),
        "exec": _Reduce(builtins.exec, f"open({str(sentinel)!r}, 'w')"),
        "subprocess": _Reduce(subprocess.check_call, ["touch", str(sentinel)]),
        # builtins reached through nested globals: getattr(__import__('os'), 'system')(cmd)
        "nested builtins": _Reduce(_Reduce(builtins.getattr, import_os, "system"), cmd),
    }


@pytest.mark.parametrize("name", ["os.system", "eval", "exec", "subprocess", "nested builtins"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_bare_pickles_are_refused_without_running(tmp_path: Path, name: str, protocol: int) -> None:
    sentinel = tmp_path / "pwned"
    payload = {"weight": torch.zeros(2), "evil": _payloads(sentinel)[name]}
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(UnsafeFileError, match="refusing to load") as info:
        load_state_dict(path)
    assert "not on the allow-list" in str(info.value)
    assert not sentinel.exists()  # nothing ran


@pytest.mark.parametrize("name", ["os.system", "eval", "subprocess", "nested builtins"])
def test_malicious_torch_zip_checkpoints_are_refused(tmp_path: Path, name: str) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / "model.pth"
    torch.save({"weight": torch.zeros(2), "evil": _payloads(sentinel)[name]}, path)  # a real zip checkpoint
    with pytest.raises(UnsafeFileError, match="not on the allow-list"):
        load_state_dict(path)
    assert not sentinel.exists()


def test_the_refusal_names_the_dangerous_globals(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    nested = _payloads(tmp_path / "x")["nested builtins"]
    path.write_bytes(pickle.dumps(nested, protocol=4))
    with pytest.raises(UnsafeFileError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert "builtins.getattr" in message and "builtins.__import__" in message


def test_stack_global_through_the_memo_is_read_and_refused() -> None:
    # Protocol 4 by hand: the module string is memoised, then fetched back with BINGET for STACK_GLOBAL.
    data = (
        b"\x80\x04"  # PROTO 4
        b"\x8c\x02os\x94"  # SHORT_BINUNICODE 'os', MEMOIZE -> memo[0]
        b"\x8c\x04junk\x94"  # SHORT_BINUNICODE 'junk', MEMOIZE -> memo[1]
        b"0"  # POP
        b"h\x00"  # BINGET 0 -> 'os'
        b"\x8c\x06system\x94"  # SHORT_BINUNICODE 'system', MEMOIZE
        b"\x93"  # STACK_GLOBAL
        b"\x8c\x04true\x85R."  # 'true', TUPLE1, REDUCE, STOP
    )
    scan = scan_pickle(data)
    assert ("os", "system") in scan.globals and not scan.safe


def test_a_stack_global_whose_name_is_computed_is_refused() -> None:
    # The name comes from a REDUCE result (not a plain string): the walk cannot read it, so it refuses.
    data = pickle.dumps(_Reduce(str, "os"), protocol=4)[:-1] + b"\x8c\x06system\x93."
    scan = scan_pickle(data)
    assert any("not plain strings" in r for r in scan.refused)


def test_inst_opcode_is_refused() -> None:
    data = b"(ios\nsystem\nS'true'\n."  # protocol 0: MARK, INST 'os system', ...
    assert not scan_pickle(data).safe


@pytest.mark.parametrize("legacy", [False, True])
def test_a_plain_state_dict_saved_by_torch_loads(tmp_path: Path, legacy: bool) -> None:
    model = _model()
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    assert all(scan.safe for scan in scan_checkpoint(path))
    state = load_state_dict(path)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    fresh = build_model(default_spec("mlp", (4,), 3))
    loaded = load_weights(fresh, path)
    x = torch.randn(5, 4)
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    assert not torch.equal(fresh.eval()(x), loaded(x))  # the caller's model was not mutated


def test_a_wrapped_checkpoint_with_parameters_loads(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.ckpt"
    torch.save({"state_dict": {"w": torch.nn.Parameter(torch.ones(2))}, "epoch": 3}, path)
    assert torch.equal(load_state_dict(path)["w"], torch.ones(2))


def test_safetensors_load(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(6.0).reshape(2, 3)}, str(path))
    assert torch.equal(load_state_dict(path)["a"], torch.arange(6.0).reshape(2, 3))


def test_other_formats_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(UnsafeFileError, match=r"refusing to load a '\.pkl' file"):
        load_state_dict(path)


def test_a_bare_pickle_of_safe_tensors_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    path.write_bytes(pickle.dumps({"w": 1}, protocol=2))
    with pytest.raises(UnsafeFileError, match="bare pickle"):
        load_state_dict(path)


def test_non_tensor_payload_and_corrupt_files_are_refused(tmp_path: Path) -> None:
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(UnsafeFileError, match="not a state dict"):
        load_state_dict(listed)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 7)
    with pytest.raises(DataError, match="safetensors"):
        load_state_dict(broken)
    with pytest.raises(DataError, match="not found"):
        load_state_dict(tmp_path / "missing.pt")

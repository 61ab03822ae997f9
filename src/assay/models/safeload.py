"""Load weights from a file a user hands us, without ever running code from it (fail closed).

    .safetensors                 read by safetensors: a JSON header and raw tensor bytes, no code at all
    .pt / .pth / .bin / .ckpt    a torch checkpoint (zip with ``*/data.pkl``, or the legacy sequence of
                                 pickles): every pickle in it is walked opcode by opcode first
                                 (:func:`scan_pickle`), and only if each global it imports is on
                                 :data:`ALLOWED_GLOBALS` is it loaded, with ``torch.load(weights_only=True)``
    anything else                refused

The walk never unpickles: it reads opcodes with :mod:`pickletools`. A global must be named in plain sight:
``GLOBAL`` carries its name, ``STACK_GLOBAL`` takes it from the two strings pushed just before it (directly
or through the memo). A ``STACK_GLOBAL`` whose name the walk cannot read, and the class-building opcodes
``INST``/``OBJ``, are refused rather than guessed at. The allow-list is the handful of callables a
``torch.save`` of a state dict uses; ``torch.load(weights_only=True)`` is a second, independent guard.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from assay.errors import DataError

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

_STORAGES = [
    f"{kind}Storage"
    for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
                 "ComplexFloat", "ComplexDouble", "Untyped")
]  # fmt: skip
_DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"]

# What torch.save({name: tensor}) writes, and nothing that can reach a callable beyond tensor rebuilding.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch", "Size"),
        ("torch", "device"),
        ("torch.serialization", "_get_layout"),
        *(("torch", name) for name in _STORAGES),
        *(("torch", dtype) for dtype in _DTYPES),
    }
)

# The legacy (pre-zip) torch format starts with this number, pickled on its own.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PICKLES = 5  # magic, protocol version, sys info, the object, the storage keys; raw bytes follow

_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                         "SHORT_BINSTRING"})  # fmt: skip
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_NO_PUSH_OPS = frozenset({"PROTO", "FRAME", "MEMOIZE", *_PUT_OPS})
_REFUSED_OPS = frozenset({"INST", "OBJ"})  # build an instance of a class named inline


class UnsafeFileError(DataError):
    """A weights file that assay will not load: its format, or a global it would import, is not allowed."""


@dataclass(frozen=True)
class PickleScan:
    """What a walk over one pickle found: every global it imports and the ones off the allow-list."""

    globals: list[tuple[str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # human-readable reasons, empty when safe

    @property
    def safe(self) -> bool:
        return not self.refused


def _walk(stream: io.BytesIO) -> PickleScan:
    """Walk one pickle from ``stream``'s position to its STOP opcode (the stream is left after it)."""
    found: list[tuple[str, str]] = []
    refused: list[str] = []
    memo: dict[int, str | None] = {}
    pushed: list[str | None] = []  # what each value-pushing opcode pushed: a string, or None for other
    try:
        for op, arg, _pos in pickletools.genops(stream):
            name = op.name
            if name in _REFUSED_OPS:
                refused.append(f"opcode {name} ({arg!r}) builds an arbitrary class instance")
                pushed.append(None)
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                found.append((module, attr))
                pushed.append(None)
            elif name == "STACK_GLOBAL":
                module_s, attr_s = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                if module_s is None or attr_s is None:
                    refused.append("STACK_GLOBAL whose module and name are not plain strings")
                else:
                    found.append((module_s, attr_s))
                pushed.append(None)
            elif name in _STRING_OPS:
                pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
            elif name in _GET_OPS:
                pushed.append(memo.get(int(arg or 0)))
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in _PUT_OPS:
                memo[int(arg or 0)] = pushed[-1] if pushed else None
            elif name not in _NO_PUSH_OPS:
                pushed.append(None)
    except (ValueError, EOFError) as e:  # pickletools' errors for truncated or malformed streams
        refused.append(f"not a well-formed pickle ({e})")
    for module, attr in found:
        if (module, attr) not in ALLOWED_GLOBALS:
            refused.append(f"imports {module}.{attr}, which is not on the allow-list")
    return PickleScan(globals=found, refused=refused)


def scan_pickle(data: bytes) -> PickleScan:
    """Walk the single pickle in ``data`` without executing it."""
    return _walk(io.BytesIO(data))


def _legacy_pickles(data: bytes) -> Iterator[PickleScan]:
    stream = io.BytesIO(data)
    first = _walk(stream)
    yield first
    if not first.safe:
        return
    try:
        magic = _first_int(data)
    except ValueError:
        magic = None
    if magic != _LEGACY_MAGIC:
        yield PickleScan(refused=["a bare pickle, not a torch checkpoint (torch.save writes a zip archive)"])
        return
    for _ in range(_LEGACY_PICKLES - 1):
        yield _walk(stream)


def _first_int(data: bytes) -> int:
    """The integer a legacy checkpoint's first pickle holds (read from its opcodes, not unpickled)."""
    for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
        if isinstance(arg, int) and op.name in (
            "LONG1",
            "LONG4",
            "LONG",
            "INT",
            "BININT",
            "BININT1",
            "BININT2",
        ):
            return arg
        if op.name == "STOP":
            break
    raise ValueError("no integer")


def scan_checkpoint(path: str | Path) -> list[PickleScan]:
    """Walk every pickle inside a torch checkpoint file (zip or legacy format) without executing any."""
    path = Path(path)
    data = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.namelist() if m.endswith(".pkl")]
            if not members:
                return [PickleScan(refused=["a zip archive with no pickle in it is not a torch checkpoint"])]
            return [_walk(io.BytesIO(archive.read(m))) for m in members]
    return list(_legacy_pickles(data))


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict"):  # the two common checkpoint wrappers
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise UnsafeFileError(
            f"{path}: holds a {type(obj).__name__}, not a state dict of named tensors; save "
            "model.state_dict() (ideally with safetensors) instead."
        )
    return dict(obj)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The named tensors in a weights file, loaded without running code from it; anything else is refused.

    Raises :class:`UnsafeFileError` (a :class:`~assay.errors.DataError`) naming the file and the reason:
    an unknown format, a global off the allow-list, or a payload that is not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Weights file not found: {path}.")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError) as e:
            raise DataError(f"{path}: not a readable safetensors file ({e}).") from None
    if suffix not in PICKLE_SUFFIXES:
        raise UnsafeFileError(
            f"{path}: refusing to load a '{suffix or 'extensionless'}' file. assay loads weights only from "
            f".safetensors, or from torch checkpoints ({', '.join(PICKLE_SUFFIXES)}) after checking them."
        )
    reasons = [reason for scan in scan_checkpoint(path) for reason in scan.refused]
    if reasons:
        raise UnsafeFileError(
            f"{path}: refusing to load this pickle-based file: {'; '.join(dict.fromkeys(reasons))}. "
            "Nothing from it was executed. Convert trusted weights to .safetensors."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for files it will not load
        raise UnsafeFileError(f"{path}: torch.load(weights_only=True) refused it ({e}).") from None
    return _as_state_dict(obj, path)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """A copy of ``model`` with the weights in ``path`` (see :func:`load_state_dict`); ``model`` is kept."""
    import copy

    state = load_state_dict(path)
    target = copy.deepcopy(model)
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DataError(f"{path}: the weights do not fit this model ({e}).") from None
    return target

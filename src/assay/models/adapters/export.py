"""The export adapter: a ``torch.export`` program (``.pt2``, written by ``torch.export.save``), run by torch.

What ``torch.export.load`` and ``program.module()`` do with a ``.pt2`` (read in torch 2.13's
``torch/export/pt2_archive/_package.py``, ``torch/_export/serde/serialize.py``, ``torch/export/_unlift.py``
and ``torch/fx/graph.py``), and so what in one can run code:

    in the archive                          torch does                              runs code from it?
    data/weights/weight_N, tensor_N         copies the raw bytes into a storage     no
    the same, ``use_pickle`` in the config   ``torch.load(weights_only=False)``      yes
    data/constants/opaque_obj_N             ``pickle.loads``                        yes
    data/constants/custom_obj_N             the TorchScript unpickler               yes (torchbind)
    data/sample_inputs/<name>.pt            ``torch.load(weights_only=True)``, and  yes (the fallback)
                                            where that fails ``weights_only=False``
    data/aotinductor/...                    dlopens the compiled library            yes (native code)
    symbolic shapes (``expr_str``)          ``sympy.sympify``, which evals them      yes
    treespec contexts                       ``importlib.import_module`` (enums,     imports a module
                                            defaultdict factories)
    parameter, buffer, argument names,      pasted into the Python source FX        yes, a quote in one
    dict keys of the input structure        generates for ``module()`` and execs    when the program runs
    ``guards_code``                         ``exec`` in ``module()``                yes, unless
                                                                                    ``check_guards=False``
    node targets                            getattr on torch/operator/math; the     what they call, when
                                            verifier keeps ops and higher-order ops  the program runs

(The tests plant four: a sample-inputs pickle, a symbolic shape, a parameter name, a node calling
``aten.from_file``; under torch alone each creates a file, under this adapter none does.) So torch's
``torch.load(weights_only=True)`` is no second guard here: its loader falls back to ``weights_only=False``
and calls ``pickle.loads`` itself. Before torch sees the file, :func:`check_program` reads the archive with
:mod:`zipfile` and :mod:`json` only, and refuses (:class:`UnsafeFileError`, a ``DataError``: exit 2)
anything but what ``torch.export.save`` writes for plain CPU tensors:

- members from an allow-list of paths (no AOTInductor code, no pickled or TorchScript objects, no legacy
  files or second programs), under one root folder, no name twice (zip readers differ on duplicates);
- weight and constant configs with ``use_pickle`` false for every entry;
- sample inputs: a ``torch.save`` archive whose one pickle, walked opcode by opcode
  (:func:`~assay.models.safeload.scan_pickle`), imports only the tensor-rebuilding allow-list, so neither
  of torch's two loads of it can run anything;
- symbolic shapes parsed with :mod:`ast` (which runs nothing) and held to sympy's constructors
  (``Symbol``, ``Integer``, ``Mul``, ``FloorDiv``, ...) over numbers, symbol names and operators, strings
  only as a symbol's name or a float's digits (sympy evaluates other string arguments);
- names that are dotted words, argument names and dict keys that are identifiers; structures of tuples,
  lists and dicts; node targets spelled as ops (``torch.ops.ns.op.overload``) or the scalar operators
  export emits.

After loading, the module is made with ``check_guards=False`` (the guard strings are never executed; the
input checks from the range constraints still run), and every node of its graphs must call an op, a
higher-order op from a short list, or one of those scalar operators; ops that name a file
(``aten.save``, ``aten.from_file``) and ops run in training mode (``dropout(train=True)``, batch norm on
batch statistics: export after ``model.eval()``) are refused.

The program runs as exported: one float32 tensor in; out either a tensor of logits ``(N, C)`` or a pair
``(logits, features)``, whose second member assay uses as the penultimate features (OOD checks, drift
monitor). A program exported with a fixed batch size (no ``dynamic_shapes``, the default) runs in chunks
of that size, the last one padded with copies of its last example whose outputs are dropped: for a model
in eval mode each example's outputs do not depend on the others, so the answers are those of a dynamic
export. Gradients flow through the exported graph (it is plain aten ops on ``nn.Parameter`` weights), so
the white-box attacks get it as ``network``.
"""

from __future__ import annotations

import ast
import io
import json
import keyword
import math
import operator
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from assay.errors import DataError, UsageError
from assay.models.adapters.files import copy_into, in_batches_of, inside, versions_of
from assay.models.loaded import LoadedModel
from assay.models.safeload import UnsafeFileError, scan_pickle

PROGRAM = "program.pt2"

# What torch.export.save writes for one program named "model" with plain CPU tensors (paths under the
# archive's one root folder). Anything else is refused by name.
_MEMBERS = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|\.format_version"
    r"|\.storage_alignment|models/model\.json|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+|data/sample_inputs/model\.pt"
    r"|extra/[^/]+"  # extra files: torch reads them as text, and assay does not read them at all
)
# A torch.save archive of plain tensors (the sample inputs).
_SAVED_MEMBERS = re.compile(
    r"data\.pkl|data/\d+|byteorder|version|\.data/version|\.data/serialization_id|\.format_version"
    r"|\.storage_alignment"
)
_CONFIGS = {
    "data/weights/model_weights_config.json": "weight_",
    "data/constants/model_constants_config.json": "tensor_",
}
_SAMPLE_INPUTS = "data/sample_inputs/model.pt"

# The scalar functions export puts in graphs (symbolic sizes; getitem picks an op's outputs).
_SCALAR_OPS: frozenset[Callable[..., Any]] = frozenset(
    {
        operator.getitem,
        *(getattr(operator, n) for n in ("eq", "ne", "le", "ge", "lt", "gt", "neg", "pos", "mul", "add")),
        *(getattr(operator, n) for n in ("sub", "floordiv", "mod", "pow", "truediv", "and_", "or_")),
        operator.lshift,
        operator.rshift,
        math.trunc,
        *(getattr(torch, f"sym_{n}") for n in ("not", "int", "float", "ite", "max", "min", "sqrt")),
    }
)
_SCALAR_NAMES = frozenset(f"{f.__module__}.{f.__name__}" for f in _SCALAR_OPS)
_OP_NAME = re.compile(r"torch\.ops\.[A-Za-z_]\w*\.[A-Za-z_]\w*(\.[A-Za-z_]\w*)?")
# Higher-order ops that only run subgraphs of the same program (which are checked too).
_HIGHER_ORDER = frozenset(
    {"cond", "while_loop", "map_impl", "scan", "associative_scan", "invoke_subgraph",
     "wrap_with_set_grad_enabled", "wrap_with_autocast"}
)  # fmt: skip
_FILE_ARGUMENTS = frozenset({"filename", "path", "file"})
_MODE_ARGUMENTS = frozenset({"train", "training"})

# Symbolic shapes are sympy's srepr: constructors over numbers and symbol names.
_SYMPY_CALLS = frozenset(
    {"Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "Eq", "Ne",
     "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan", "StrictGreaterThan", "LessThan",
     "GreaterThan", "And", "Or", "Not", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv",
     "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
     "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt",
     "RoundDecimal", "ToFloat", "Identity"}
)  # fmt: skip
_SYMPY_CONSTANTS = frozenset({"true", "false", "oo", "zoo", "nan", "True", "False"})
_SYMBOL_NAME = re.compile(r"[a-z]+\d+")  # export's size symbols: s0, u1, ...
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_ASSUMPTIONS = frozenset(
    {"positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "infinite", "zero",
     "nonzero", "even", "odd", "rational", "commutative", "precision"}
)  # fmt: skip
_SYMPY_NODES = (
    *(ast.Expression, ast.Call, ast.Name, ast.Load, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare),
    *(ast.BoolOp, ast.keyword, ast.operator, ast.unaryop, ast.cmpop, ast.boolop),
)
_MAX_EXPRESSION = 10_000  # characters; export's symbolic sizes are a few dozen
_TREESPEC_DICTS = frozenset({"builtins.dict", "collections.OrderedDict"})
_TREESPEC_TYPES = frozenset({None, "builtins.tuple", "builtins.list", *_TREESPEC_DICTS})
# Names (parameters, buffers, modules, arguments, nodes) that FX pastes into the Python source it generates
# and executes for program.module(): dotted words only, or a quote in one is code.
_DOTTED = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


def _refuse(path: Path, reason: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"{path}: refusing to load this torch.export program: {reason}. Nothing from it was run. assay "
        "loads programs that torch.export.save wrote for plain CPU tensors (export after model.eval())."
    )


def check_program(path: Path) -> None:
    """Refuse a ``.pt2`` that could run code when ``torch.export.load`` reads it (see the module's
    docstring); reads the archive with zipfile and json only. Raises :class:`UnsafeFileError`."""
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a torch.export program (torch.export.save writes a zip archive).")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if len(set(names)) != len(names):
            raise _refuse(path, "the archive names a member twice")
        roots = {name.split("/", 1)[0] for name in names}
        if len(roots) != 1 or any("/" not in name for name in names):
            raise _refuse(path, f"its members are not under one folder (found {sorted(roots)[:5]})")
        root = roots.pop() + "/"
        members = {name[len(root) :]: name for name in names}
        unknown = sorted(m for m in members if not _MEMBERS.fullmatch(m))
        if unknown:
            raise _refuse(
                path, f"it holds members torch.export.save does not write for tensors: {unknown[:8]}"
            )
        if "models/model.json" not in members:
            raise _refuse(path, "it holds no program named 'model' (models/model.json)")

        def read(member: str) -> bytes:
            return archive.read(members[member])

        if read("archive_format").strip() != b"pt2":
            raise _refuse(path, "its archive_format is not 'pt2'")
        named: set[str] = set()
        for config, prefix in _CONFIGS.items():
            if config in members:
                named |= _check_config(path, config, read(config), prefix, members)
        stored = {m for m in members if re.fullmatch(r"data/(weights/weight|constants/tensor)_\d+", m)}
        if stored - named:
            raise _refuse(path, f"it holds tensor files no config names: {sorted(stored - named)[:5]}")
        if _SAMPLE_INPUTS in members:
            _check_saved_tensors(path, read(_SAMPLE_INPUTS))
        _check_program_json(path, read("models/model.json"))


def _json(path: Path, member: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _refuse(path, f"{member} is not JSON ({e})") from None


def _check_config(path: Path, member: str, data: bytes, prefix: str, members: dict[str, str]) -> set[str]:
    """Every weight or constant is raw tensor bytes (never a pickle), on the CPU, in a file that exists;
    the files it names."""
    config = _json(path, member, data)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _refuse(path, f"{member} is not a payload config")
    folder = member.rsplit("/", 1)[0]
    named = set()
    for name, entry in entries.items():
        if not _DOTTED.fullmatch(name):
            raise _refuse(path, f"the tensor name {name[:120]!r} in {member} is not made of dotted words")
        if not isinstance(entry, dict) or entry.get("use_pickle") is not False:
            raise _refuse(path, f"{name!r} is stored as a pickle ({member}): a tensor subclass or an object")
        file = str(entry.get("path_name"))
        if not re.fullmatch(rf"{prefix}\d+", file) or f"{folder}/{file}" not in members:
            raise _refuse(
                path, f"{name!r} names the file {file!r}, which is not a tensor file of the archive"
            )
        device = ((entry.get("tensor_meta") or {}).get("device") or {}).get("type")
        if device != "cpu":
            raise DataError(
                f"{path}: the tensor {name!r} was exported on {device!r}; assay runs programs on the CPU. "
                "Export the model after model.cpu()."
            )
        named.add(f"{folder}/{file}")
    return named


def _check_saved_tensors(path: Path, data: bytes) -> None:
    """The sample inputs: a torch.save archive of plain tensors whose one pickle passes the allow-list."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise _refuse(path, f"{_SAMPLE_INPUTS} is not a torch.save archive")
    with zipfile.ZipFile(io.BytesIO(data)) as saved:
        names = saved.namelist()
        roots = {name.split("/", 1)[0] for name in names}
        if len(set(names)) != len(names) or len(roots) != 1 or any("/" not in n for n in names):
            raise _refuse(path, f"{_SAMPLE_INPUTS} is not a well-formed torch.save archive")
        root = roots.pop() + "/"
        unknown = sorted(n for n in names if not _SAVED_MEMBERS.fullmatch(n[len(root) :]))
        if unknown:
            raise _refuse(path, f"{_SAMPLE_INPUTS} holds more than tensors: {unknown[:5]}")
        if root + "data.pkl" not in names:
            raise _refuse(path, f"{_SAMPLE_INPUTS} holds no pickle of its tensors")
        scan = scan_pickle(saved.read(root + "data.pkl"))
    if not scan.safe:
        raise _refuse(path, f"its sample inputs' pickle {'; '.join(dict.fromkeys(scan.refused))}")


def _walk_json(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a JSON document, depth first."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                yield key, child
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def _check_program_json(path: Path, data: bytes) -> None:
    for key, value in _walk_json(_json(path, "models/model.json", data)):
        if key == "forward_arg_names":
            if not isinstance(value, list) or not all(_is_identifier(v) for v in value):
                raise _refuse(path, f"its argument names {str(value)[:120]} are not Python identifiers")
        elif key == "fqn" or key.endswith(("name", "names")):
            names = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str) and (v == "" or _DOTTED.fullmatch(v)) for v in names):
                raise _refuse(path, f"a {key} {str(value)[:120]!r} is not made of dotted words")
        elif key == "expr_str":
            _check_sympy(path, value)
        elif key == "target":
            if not isinstance(value, str) or not (_OP_NAME.fullmatch(value) or value in _SCALAR_NAMES):
                raise _refuse(path, f"a node calls {str(value)[:120]!r}, which is not a torch op")
        elif key in ("in_spec", "out_spec") and value is not None:
            _check_treespec(path, value)


def _check_sympy(path: Path, text: Any) -> None:
    """A symbolic size is a tree of sympy constructors: torch evaluates the string (sympify), so nothing
    else may be in it; :func:`ast.parse` only parses."""
    if not isinstance(text, str) or len(text) > _MAX_EXPRESSION:
        raise _refuse(path, "a symbolic shape is not a short string")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _refuse(path, f"the symbolic shape {text[:120]!r} is not an expression") from None
    for node in ast.walk(tree):
        bad = not isinstance(node, _SYMPY_NODES)
        if isinstance(node, ast.Name):
            bad = not (
                node.id in _SYMPY_CALLS or node.id in _SYMPY_CONSTANTS or _SYMBOL_NAME.fullmatch(node.id)
            )
        elif isinstance(node, ast.Call):
            # sympy turns string arguments into expressions by evaluating them: only Symbol's name and
            # Float's digits may be strings.
            function = node.func.id if isinstance(node.func, ast.Name) else ""
            bad = function not in _SYMPY_CALLS or any(
                isinstance(a, ast.Constant)
                and isinstance(a.value, str)
                and not (i == 0 and _string_argument_ok(function, a.value))
                for i, a in enumerate(node.args)
            )
        elif isinstance(node, ast.keyword):
            bad = node.arg not in _ASSUMPTIONS or not (
                isinstance(node.value, ast.Constant) and isinstance(node.value.value, bool | int)
            )
        elif isinstance(node, ast.Constant):
            bad = not isinstance(node.value, int | float | str)
        if bad:
            raise _refuse(path, f"the symbolic shape {text[:120]!r} is not made of sympy's size expressions")


def _string_argument_ok(function: str, value: str) -> bool:
    if function == "Symbol":
        return _IDENTIFIER.fullmatch(value) is not None
    return function == "Float" and _NUMBER.fullmatch(value) is not None


def _is_identifier(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


def _check_treespec(path: Path, text: Any) -> None:
    """The input and output structures: tuples, lists and dicts of tensors (pytree imports modules to
    rebuild enum contexts and defaultdict factories), dicts keyed by identifiers (FX pastes the keys
    into the code it generates)."""
    try:
        spec = json.loads(text)
        nodes = [spec[1]]
        while nodes:
            node = nodes.pop()
            kind, context = node["type"], node["context"]
            keys = json.loads(context) if isinstance(context, str) else context
            if kind not in _TREESPEC_TYPES:
                raise _refuse(path, f"an input or output structure is a {str(kind)[:80]!r}")
            if kind in _TREESPEC_DICTS:
                ok = isinstance(keys, list) and all(_is_identifier(k) for k in keys)
            else:
                ok = keys is None
            if not ok:
                raise _refuse(path, f"an input or output structure has the context {str(context)[:120]!r}")
            nodes.extend(node["children_spec"])
    except (TypeError, KeyError, IndexError, json.JSONDecodeError):
        raise _refuse(path, "an input or output structure is not a pytree spec") from None


def _check_graph(path: Path, module: nn.Module) -> None:
    """What will run: every node of every graph of the module calls an allowed op, in eval mode."""
    for sub in module.modules():
        graph = getattr(sub, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if node.op != "call_function":
                raise _refuse(path, f"its graph has a {node.op} node ({node.target})")
            target = node.target
            if isinstance(target, torch._ops.OpOverload):
                _check_op(path, node, target)
            elif isinstance(target, torch._ops.HigherOrderOperator):
                if target.name() not in _HIGHER_ORDER:
                    raise _refuse(path, f"its graph calls the higher-order op {target.name()}")
            elif target not in _SCALAR_OPS:
                raise _refuse(path, f"its graph calls {target!r}, which is not a torch op")


def _check_op(path: Path, node: torch.fx.Node, op: torch._ops.OpOverload) -> None:
    arguments = op._schema.arguments
    if any(a.name in _FILE_ARGUMENTS for a in arguments):
        raise _refuse(path, f"its graph calls {op}, which reads or writes a file")
    for i, argument in enumerate(arguments):
        if argument.name not in _MODE_ARGUMENTS:
            continue
        value = node.args[i] if i < len(node.args) else node.kwargs.get(argument.name)
        if value is True:
            raise DataError(
                f"{path}: the program was exported in training mode ({op} with {argument.name}=True: "
                "dropout active, or batch norm on batch statistics). Export after model.eval()."
            )


@dataclass(frozen=True)
class Signature:
    """The program's one input as exported: its shape (None for a dynamic size) and so its batch size."""

    shape: list[int | None]
    outputs: int

    @property
    def batch(self) -> int | None:
        """The batch size the program takes, where it was exported with a fixed one."""
        return self.shape[0] if self.shape else None


def _signature(path: Path, program: Any) -> Signature:
    signature = program.graph_signature
    inputs = list(signature.user_inputs)
    if len(inputs) != 1:
        raise DataError(
            f"{path}: the program takes {len(inputs)} inputs ({', '.join(map(str, inputs)) or 'none'}); "
            "assay feeds one tensor of examples. Export a module whose forward takes one tensor."
        )
    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == inputs[0])
    value = placeholder.meta.get("val")
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{path}: the program's input {inputs[0]!r} is not a tensor.")
    if value.dtype != torch.float32:
        raise DataError(
            f"{path}: the program takes {value.dtype} inputs; assay feeds float32. Export it with a float32 "
            "example input."
        )
    spec = program.call_spec.out_spec
    outputs = len(signature.user_outputs)
    if outputs not in (1, 2) or not (spec.is_leaf() or spec.type in (tuple, list)):
        raise DataError(
            f"{path}: the program returns {outputs} outputs ({spec}); assay needs the logits (N, C), or a "
            "pair (logits, features)."
        )
    shape: list[int | None] = [d if isinstance(d, int) else None for d in value.shape]
    if not shape:
        raise DataError(f"{path}: the program's input is a scalar; assay feeds a batch of examples.")
    return Signature(shape, outputs)


class ProgramNetwork(nn.Module):
    """The program's module as ``x -> logits`` for any batch size (differentiable), and ``outputs(x)``."""

    def __init__(self, program: nn.Module, batch: int | None) -> None:
        super().__init__()
        self.program, self.batch = program, batch

    def train(self, mode: bool = True) -> ProgramNetwork:
        # An exported module refuses train() and eval(): its mode was fixed when it was exported (and
        # checked to be eval mode), so only this wrapper's flag changes.
        self.training = mode
        return self

    def _once(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.program(x)
        parts = out if isinstance(out, tuple | list) else (out,)
        return parts[0], parts[1] if len(parts) > 1 else None

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and features (None where the program returns only logits)."""
        return in_batches_of(self.batch, x, self._once, torch.cat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)[0]


class ProgramPredictor:
    """A :class:`ProgramNetwork` under inference mode, on numpy batches."""

    def __init__(self, network: ProgramNetwork) -> None:
        self.network = network
        self.name = "torch-export"

    @torch.inference_mode()
    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        logits, features = self.network.outputs(torch.from_numpy(np.ascontiguousarray(x)))
        return logits.float().numpy(), None if features is None else features.float().numpy()


def open_program(path: Path) -> tuple[Any, nn.Module, Signature]:
    """The checked program at ``path``, its module (guards not executed) and its signature."""
    check_program(path)
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # torch raises many types for archives it cannot read; each is a broken file
        raise DataError(f"{path}: torch.export.load cannot read it ({type(e).__name__}: {e}).") from None
    signature = _signature(path, program)
    module = program.module(check_guards=False)
    _check_graph(path, module)
    return program, module, signature


class ExportAdapter:
    name = "export"
    description = "a torch.export program (.pt2, written by torch.export.save), checked before loading"

    def claims(self, source: str) -> bool:
        return source.lower().endswith(".pt2")

    def stage(self, source: str, weights: Path | None, folder: Path) -> dict[str, Any]:
        if weights is not None:
            raise UsageError(
                f"{source}: a torch.export program holds its own weights; leave out the weights."
            )
        folder.mkdir(parents=True)
        # The copy is what is checked and stored, so the file cannot change between the two.
        copied = copy_into(Path(source), folder, PROGRAM)
        try:
            _, _, signature = open_program(copied)
        except DataError as e:
            raise type(e)(str(e).replace(str(copied), source)) from None
        return {"program": PROGRAM, "exported_shape": signature.shape, "outputs": signature.outputs}

    def load(self, folder: Path, manifest: dict[str, Any]) -> LoadedModel:
        path = inside(folder, str(manifest.get("program", PROGRAM)))
        program, module, signature = open_program(path)
        network = ProgramNetwork(module, signature.batch)
        parameters = sum(program.state_dict[name].numel() for name in program.graph_signature.parameters)
        return LoadedModel(
            ProgramPredictor(network), manifest["spec"], manifest, parameters, path, None, network=network
        )

    def frameworks(self) -> dict[str, str]:
        return versions_of("torch")


ADAPTER = ExportAdapter()

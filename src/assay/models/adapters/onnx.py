"""The onnx adapter: an ``.onnx`` file, run by ONNX Runtime on the CPU.

An ONNX file is a protobuf graph of standard operators: reading it runs nothing, and ONNX Runtime runs
only its own kernels (a custom operator domain it has no library for fails to load). What a file can
reach beyond itself is its external data: a tensor may keep its bytes in another file, named by a path
(``location``) that ONNX Runtime opens relative to the model. ``stage`` reads the graph with
``onnx.load(load_external_data=False)`` and finds every such tensor (initializers, sparse initializers,
attribute tensors, in subgraphs, functions and training graphs too); each location must resolve, links
followed, to a regular file inside the model file's folder, or the model is refused with the tensor and
the location named. The ``.onnx`` is copied as ``model.onnx`` and each external file beside it at its
relative path, so the staged folder is self-contained; ``load`` checks the locations again. ONNX Runtime
1.32 (the pinned release) refuses absolute locations and ones that escape the folder, links included, on
its own: a second guard, which older releases may lack.

The graph must take one float32 tensor (inputs that are initializers, as older exporters list them, do
not count). Its outputs: the logits ``(N, C)`` are the output named ``logits``, else the first; the
features (penultimate, for the OOD checks and the drift monitor) are the output named ``features``,
else a second output of rank 2, else there are none. A graph exported with a fixed batch size runs in
chunks of that size, the last padded with copies of its last example whose outputs are dropped (as the
export adapter does, :func:`~assay.models.adapters.files.in_batches_of`). ONNX Runtime computes no
gradients here, so ``network`` is None and the trust suite uses its gradient-free attacks. The parameter
count is the number of elements of the main graph's initializers (weights, and batch-norm statistics an
exporter did not fold).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import DataError, MissingExtraError, UsageError
from assay.models.adapters.files import copy_into, in_batches_of, inside, versions_of
from assay.models.backends import OnnxPredictor
from assay.models.io import SPEC
from assay.models.loaded import LoadedModel
from assay.models.predictor import Predictor

MODEL = "model.onnx"


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise MissingExtraError("onnx", "compress") from None
    return onnx


def read_model(path: Path) -> Any:
    """The graph in ``path`` (a ModelProto), its external data left unread."""
    onnx = import_onnx()
    if not path.is_file():
        raise DataError(f"{path}: the ONNX file is missing.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and onnx's own errors for files that are not models
        raise DataError(f"{path}: not an ONNX model ({type(e).__name__}: {e}).") from None
    if not model.graph.node or not model.opset_import:
        raise DataError(f"{path}: not an ONNX model (it holds no graph of operators).")
    return model


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        sparse = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
        for tensor in [*sparse, *attribute.sparse_tensors]:
            yield from (tensor.values, tensor.indices)
        for graph in [attribute.g] if attribute.HasField("g") else []:
            yield from _graph_tensors(graph)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)


def _tensors(model: Any) -> Iterator[Any]:
    """Every tensor in the model that can hold data: the graph's, its subgraphs', its functions' and its
    training graphs'."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)
    for training in model.training_info:
        yield from _graph_tensors(training.initialization)
        yield from _graph_tensors(training.algorithm)


def external_files(path: Path, model: Any) -> dict[str, Path]:
    """Each external data location the model names, and the file inside ``path``'s folder it resolves to;
    a location that leaves the folder, is missing, or would take the place of the model's own files is a
    DataError naming the tensor."""
    onnx = import_onnx()
    found: dict[str, Path] = {}
    for tensor in _tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {entry.key: entry.value for entry in tensor.external_data}.get("location", "")
        where = f"{path}: the tensor {tensor.name!r} keeps its data in {location!r}"
        if not location:
            raise DataError(f"{where}, which names no file.")
        try:
            resolved = inside(path.parent, location)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
        # The staged copy keeps the location as written, so it must name one place, not one of the
        # folder's own files.
        if os.path.normpath(location) != location:
            raise DataError(f"{where}, which is not a plain relative path (write it as a/b/file).")
        if location in (MODEL, SPEC) or resolved == path.resolve():
            raise DataError(f"{where}, the model's own file; keep the tensors' data in a file of its own.")
        found[location] = resolved
    return found


@dataclass(frozen=True)
class Graph:
    """What assay reads of a graph's interface: its input and the outputs it takes as logits and features."""

    input: str
    shape: list[int | None]  # None for a dimension without a fixed size
    logits: str
    features: str | None
    parameters: int

    @property
    def batch(self) -> int | None:
        """The batch size the graph takes, where it was exported with a fixed one."""
        return self.shape[0] if self.shape else None


def _rank(value: Any) -> int | None:
    tensor = value.type.tensor_type
    return len(tensor.shape.dim) if tensor.HasField("shape") else None


def describe(path: Path, model: Any) -> Graph:
    """The graph's interface, or a DataError saying why assay cannot feed it."""
    onnx = import_onnx()
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        listed = ", ".join(i.name for i in inputs) or "none"
        raise DataError(
            f"{path}: the graph takes {len(inputs)} inputs ({listed}); assay feeds one tensor of examples. "
            "Export a model whose forward takes one tensor."
        )
    (value,) = inputs
    is_tensor = value.type.HasField("tensor_type")
    dtype = value.type.tensor_type.elem_type
    if not is_tensor or dtype != onnx.TensorProto.FLOAT:
        kind = onnx.TensorProto.DataType.Name(dtype) if is_tensor else "not a tensor"
        raise DataError(
            f"{path}: the graph's input {value.name!r} is {kind}; assay feeds float32. Export it with a "
            "float32 example input."
        )
    shape = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    if not shape:
        raise DataError(
            f"{path}: the graph's input {value.name!r} is a scalar; assay feeds a batch of examples."
        )
    outputs = list(graph.output)
    by_name = {o.name: o for o in outputs}
    logits = by_name.get("logits", outputs[0] if outputs else None)
    if logits is None or _rank(logits) not in (2, None):
        listed = ", ".join(f"{o.name} of rank {_rank(o)}" for o in outputs) or "none"
        raise DataError(
            f"{path}: the graph's logits output (the one named 'logits', else the first) is not of shape "
            f"(N, C); its outputs: {listed}."
        )
    rest = [o for o in outputs if o.name != logits.name]
    features = by_name.get("features") or (rest[0] if rest and _rank(rest[0]) == 2 else None)
    return Graph(
        input=value.name,
        shape=shape,
        logits=logits.name,
        features=None if features is None else features.name,
        parameters=sum(prod(t.dims) for t in graph.initializer),
    )


class FixedBatchPredictor:
    """A predictor for a graph that takes exactly ``batch`` examples at once, for batches of any size."""

    def __init__(self, inner: Predictor, batch: int) -> None:
        self.inner, self.batch, self.name = inner, batch, inner.name

    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return in_batches_of(self.batch, x, self.inner.logits_and_features, np.concatenate)


class OnnxAdapter:
    name = "onnx"
    description = "an .onnx file run by ONNX Runtime (external data files only inside its folder)"

    def claims(self, source: str) -> bool:
        return source.lower().endswith(".onnx")

    def stage(self, source: str, weights: Path | None, folder: Path) -> dict[str, Any]:
        if weights is not None:
            raise UsageError(f"{source}: an ONNX file holds its own weights; leave out the weights file.")
        path = Path(source)
        folder.mkdir(parents=True)
        copied = copy_into(path, folder, MODEL)  # what is checked is what is stored
        try:
            model = read_model(copied)
            graph = describe(copied, model)
        except DataError as e:
            raise DataError(str(e).replace(str(copied), source)) from None
        external = external_files(path, model)  # relative to the user's file, named in any refusal
        for location, file in external.items():
            copy_into(file, folder, location)
        return {
            "model": MODEL,
            "input": graph.input,
            "exported_shape": graph.shape,
            "logits": graph.logits,
            "features": graph.features,
            "external_data": sorted(external),
        }

    def load(self, folder: Path, manifest: dict[str, Any]) -> LoadedModel:
        path = inside(folder, str(manifest.get("model", MODEL)))
        model = read_model(path)
        external_files(path, model)  # the stored copy reads nothing outside its folder either
        graph = describe(path, model)
        predictor: Predictor = OnnxPredictor(path, logits=graph.logits, features=graph.features)
        if graph.batch is not None:
            predictor = FixedBatchPredictor(predictor, graph.batch)
        return LoadedModel(predictor, manifest["spec"], manifest, graph.parameters, path, None)

    def frameworks(self) -> dict[str, str]:
        return versions_of("onnx", "onnxruntime")


ADAPTER = OnnxAdapter()

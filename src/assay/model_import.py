"""The one door in for models assay did not train: check, copy into the store, register.

``import_model`` takes a model as its owner has it (a module factory and weights, a ``.pt2`` program, an
``.onnx`` file, a Hugging Face folder; :mod:`assay.models.adapters`), and registers it as a version like
any other:

1. the adapter checks the files and copies what the model needs into a staging folder; nothing from a
   data file runs (pickles are scanned, remote code and paths out of the folder refused);
2. the staged copy is loaded and run on a sample of the data it is meant for: its outputs must be
   one score per class of that data, finite;
3. the folder goes into the content-addressed store and the version row is written in one transaction,
   with the lineage: every file's sha256, the adapter and the framework versions, the source, the data
   and the input contract (:class:`~assay.data.InputContract`) later data must fit.

Any failure before step 3 leaves the store as it was: the staging folder is a temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from assay.data import Dataset, DataSpec, InputContract, load_dataset, source_text
from assay.env import environment
from assay.errors import DataError
from assay.models.adapters import adapter_for
from assay.models.adapters.files import file_digests
from assay.models.io import SPEC
from assay.models.loaded import LoadedModel
from assay.release import register_dataset
from assay.store.records import VersionInfo
from assay.store.refs import check_model_name
from assay.workspace import Workspace

PROBE_EXAMPLES = 32  # validation examples run through the staged model before it is registered


@dataclass(frozen=True)
class Derivation:
    """How assay itself made the model from a registered version (a fine-tune): the lineage then names
    the parent and this recipe instead of an import, with the training record as ``train_version``
    writes it."""

    parent: str  # the ref of the version it was made from
    recipe: dict[str, Any]  # with "kind" and "label", as every recipe
    training: dict[str, Any]  # the training summary
    history: dict[str, list[float]]  # per epoch
    environment: dict[str, Any]  # the training run's (its seeds)


@dataclass(frozen=True)
class Imported:
    """What :func:`import_model` registered, and what the probe on the data saw."""

    version: VersionInfo
    adapter: str
    files: dict[str, str]  # path in the model's folder -> sha256
    probe_accuracy: float  # on a sample of validation examples: a scale that is off shows here first
    chance: float  # the accuracy of always predicting the commonest class of those examples
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form: the version's ref and lineage, the files, the probe, the warnings."""
        v = self.version
        return {
            "version": v.ref,
            "artifact_digest": v.artifact_digest,
            "adapter": self.adapter,
            "files": self.files,
            "probe": {"accuracy": self.probe_accuracy, "chance": self.chance},
            "spec": v.spec,
            "lineage": v.lineage,
            "warnings": self.warnings,
        }


def import_model(
    ws: Workspace,
    name: str,
    source: str | Path,
    *,
    data: DataSpec,
    weights: str | Path | None = None,
    adapter: str | None = None,
    description: str = "",
    licence: str | None = None,
    derived: Derivation | None = None,
) -> Imported:
    """Register a model assay did not train as the next version of ``name``.

    ``source`` is what the adapter reads (``model.py:build``, ``model.pt2``, ``model.onnx``, a Hugging
    Face folder); ``adapter`` names the adapter where the source alone does not tell. ``data`` is the data
    the model is meant for: its classes and inputs become the version's input contract.

    ``derived``: the model was made by assay from a registered version (:mod:`assay.finetune_run`); it
    goes through the same checks, registered with its parent and recipe.

    Raises :class:`~assay.errors.DataError` (unsafe or broken files, a model whose outputs do not fit the
    data) or :class:`~assay.errors.UsageError`, and registers nothing, when any check fails.
    """
    check_model_name(name)
    source = str(source)
    chosen = adapter_for(source, adapter)
    weights_path = Path(weights) if weights is not None else None
    dataset = load_dataset(data)
    with tempfile.TemporaryDirectory(prefix="assay-import-") as tmp:
        folder = Path(tmp) / "model"
        fields = chosen.stage(source, weights_path, folder)
        staged_spec = dict(fields.pop("spec", {}) or {})
        manifest = {**fields, "adapter": chosen.name, "spec": {"arch": chosen.name, **staged_spec}}
        if derived is not None and "source" in manifest:  # the folder it was staged from was temporary
            manifest["source"] = f"{derived.recipe['kind']} of {derived.parent}"
        loaded = chosen.load(folder, manifest)
        accuracy, chance = _probe(loaded, dataset, source)
        manifest["spec"] = {
            **manifest["spec"],
            "n_classes": dataset.n_classes,
            "input_shape": [int(d) for d in dataset.input_shape],
            "input_kind": dataset.kind,
        }
        (folder / SPEC).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        files = file_digests(folder)
        recipe = derived.recipe if derived is not None else {
            "kind": "import",
            "label": f"imported ({chosen.name})",
            "adapter": chosen.name,
            "source": source,
            "weights": None if weights_path is None else str(weights_path),
            "data": data.model_dump(),
        }  # fmt: skip
        made = {} if derived is None else {"training": derived.training, "history": derived.history}
        contract = _contract(dataset, data, manifest)
        register_dataset(ws, dataset)
        version = ws.store.register_version(
            name,
            artifact_dir=folder,
            spec=manifest["spec"],
            config_hash=hashlib.sha256(json.dumps([recipe, files], sort_keys=True).encode()).hexdigest(),
            parent=None if derived is None else derived.parent,
            lineage={
                "datasets": dataset.fingerprints(),
                "dataset": dataset.name,
                "recipe": recipe,
                "files": files,
                "frameworks": chosen.frameworks(),
                "contract": contract.to_dict(),
                "probe": {"n": min(PROBE_EXAMPLES, dataset.val.n), "accuracy": accuracy, "chance": chance},
                **made,
                "description": description,
                "licence": licence,
            },
            environment=environment() if derived is None else derived.environment,
            description=description,
        )
    warnings = []
    if accuracy <= chance:
        warnings.append(
            f"{version.ref} predicts {accuracy:.0%} of {min(PROBE_EXAMPLES, dataset.val.n)} sampled "
            f"validation examples right, no better than always naming the commonest class ({chance:.0%}). "
            f"If it is a good model, its inputs are probably made another way than assay makes them "
            f"({contract.describe()}): check the scaling it was trained with."
        )
    return Imported(version, chosen.name, files, accuracy, chance, warnings)


def _probe(model: LoadedModel, data: Dataset, source: str) -> tuple[float, float]:
    """Run the staged model on a seeded sample of validation examples (splits may be sorted by class):
    one finite score per class, or refused."""
    n = min(PROBE_EXAMPLES, data.val.n)
    rows = np.sort(np.random.default_rng(0).choice(data.val.n, size=n, replace=False))
    x, y = data.val.x[rows], data.val.y[rows]
    try:
        logits, features = model.predictor.logits_and_features(x)
    except DataError:
        raise
    except Exception as e:  # the model's own code or runtime may raise anything on inputs it cannot take
        raise DataError(
            f"{source}: running the model on {n} examples of {data.name} ({data.kind}, one example "
            f"{tuple(data.input_shape)} {data.train.x.dtype}) failed: {type(e).__name__}: "
            f"{' '.join(str(e).split())[:300]}. Import it with the data it was made for."
        ) from None
    logits = np.asarray(logits)
    if logits.shape != (n, data.n_classes):
        raise DataError(
            f"{source}: the model gives outputs of shape {logits.shape[1:]} an example, and {data.name} has "
            f"{data.n_classes} classes ({', '.join(data.class_names[:10])}); it needs one score per class."
        )
    if not np.all(np.isfinite(logits)):
        raise DataError(f"{source}: the model gives non-finite outputs (NaN or inf) on {data.name}.")
    if features is not None and np.asarray(features).shape[0] != n:
        raise DataError(f"{source}: the model's features do not have one row per example.")
    accuracy = float((logits.argmax(1) == y).mean())
    chance = float(np.bincount(y).max() / n)
    return accuracy, chance


def _contract(dataset: Dataset, data: DataSpec, manifest: dict[str, Any]) -> InputContract:
    """The data's contract, with the tokenizer (its class and the digest of its files) and the truncation
    length where the model has them."""
    contract = InputContract.of(dataset, source_text(data))
    tokenizer = manifest.get("tokenizer")
    if isinstance(tokenizer, dict):
        tokenizer = (
            f"{tokenizer.get('class', 'tokenizer')} (files sha256 {str(tokenizer.get('sha256'))[:12]})"
        )
    length = manifest.get("max_length")
    return replace(contract, tokenizer=tokenizer, max_length=None if length is None else int(length))

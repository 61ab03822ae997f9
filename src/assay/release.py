"""The release loop on top of the store: train -> register -> evaluate -> gate -> promote.

Each CLI command calls one function here; the demo and ``assay run`` chain them. A number reaches the
store only through :func:`record_evaluation` or :func:`record_comparison`, which write the report files
first (atomically) and the database rows in one transaction after, so an interruption leaves no run
without its report.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from assay.compare import align
from assay.data import Dataset, DataSpec, Fitted, InputContract, load_dataset, source_text
from assay.errors import DataError, UsageError
from assay.evaluate import Assessment, assess
from assay.gate import Policy
from assay.inference import infer
from assay.metrics.efficiency import measure_efficiency
from assay.models import ZOO, build_model, default_spec, save_model
from assay.models.adapters import load_artifact
from assay.models.loaded import LoadedModel
from assay.outputs import WRITTEN_SUFFIXES, Outputs, load_predictions, write_predictions
from assay.store.records import VersionInfo
from assay.store.refs import check_model_name
from assay.train import TrainConfig, TrainResult, train
from assay.train.loop import seed_everything
from assay.trust import cached_outputs, gate_config, run_trust
from assay.workspace import (
    Evaluated,
    Workspace,
    assess_predictions,
    dataset_info,
    evaluate_predictions,
    gate_predictions,
    is_predictions,
    record_comparison,
    record_evaluation,
)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def register_dataset(ws: Workspace, data: Dataset) -> None:
    ws.store.register_dataset(
        data.name,
        data.fingerprint(),
        source=data.source,
        licence=data.licence,
        n_examples=sum(s.n for s in data.splits().values()),
        splits={name: {"fingerprint": s.fingerprint(), "n": s.n} for name, s in data.splits().items()},
    )


def train_version(
    ws: Workspace,
    name: str,
    data: Dataset,
    data_spec: DataSpec,
    *,
    arch: str,
    config: TrainConfig,
    spec_overrides: dict[str, Any] | None = None,
    parent: str | None = None,
    description: str = "",
    licence: str | None = None,
    audit: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[VersionInfo, TrainResult]:
    """Train, then register the version with its lineage; ``audit`` (the data audit's leakage record and
    any waiver of it) goes into the lineage, so a waived policy stays visible on the version."""
    check_model_name(name)  # before minutes of training, not after
    if data.kind == "text":
        raise UsageError(
            f"{data.name} holds texts; assay's zoo trains image and table models. Bring a text model "
            "through `assay models import` (a Hugging Face folder, e.g. examples/minilm_head.py's), then "
            "fine-tune it with `assay finetune NAME@VERSION`."
        )
    spec = default_spec(arch, data.input_shape, data.n_classes, spec_overrides)
    seed_everything(config.seed)  # before building: the initial weights come from the same seed
    result = train(build_model(spec), data, config, progress=progress)
    register_dataset(ws, data)
    recipe = {
        "kind": "train",
        "arch": arch,
        "spec": spec,
        "train": config.model_dump(),
        "data": data_spec.model_dump(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        artifact = save_model(result.model, Path(tmp) / "model")
        version = ws.store.register_version(
            name,
            artifact_dir=artifact,
            spec=spec,
            config_hash=_hash(recipe),
            parent=parent,
            lineage={
                "datasets": data.fingerprints(),
                "dataset": data.name,
                "recipe": recipe,
                "contract": InputContract.of(data, source_text(data_spec)).to_dict(),
                "training": result.summary(),
                "history": result.history,
                "description": description,
                "licence": licence,
                **({"audit": audit} if audit is not None else {}),
            },
            environment=result.environment,
            description=description,
        )
    return version, result


def version_contract(version: VersionInfo) -> InputContract:
    """The input contract ``version`` was trained with (see :mod:`assay.data.contract`).

    Versions registered before contracts were recorded get theirs from the data their recipe names, made
    the same way again (compressed variants carry their root's).
    """
    if version.spec.get("task") == "causal-lm":  # the one check every classifier path makes first
        raise UsageError(
            f"{version.ref} is a language model, which assay evaluates on a corpus rather than labelled "
            f"inputs: use `assay llm eval {version.ref}` and `assay llm gate BASELINE {version.ref}`."
        )
    stored = version.lineage.get("contract")
    if stored is not None:
        return InputContract.from_dict(stored)
    recorded = version.lineage.get("recipe", {}).get("data")
    if recorded is None:
        raise DataError(
            f"{version.ref} records neither an input contract nor the data it was trained on, so no data "
            "can be checked against it or made into its inputs; register it again with its training data."
        )
    spec = DataSpec.model_validate(recorded)
    return InputContract.of(load_dataset(spec), source_text(spec))


def fit_version(version: VersionInfo, data: Dataset, *, force: bool = False) -> Fitted:
    """``data`` made into ``version``'s inputs by its own contract.

    Raises :class:`~assay.errors.DataError` saying what differs and what to do when the data does not fit
    the contract, unless ``force`` (then the differences travel in the result, for the report to show).
    """
    fitted = version_contract(version).fit(data)
    if fitted.differences and not force:
        raise DataError(
            f"{version.ref} was made for {fitted.contract.describe()}, and {data.name} ({data.source}) "
            f"does not fit: {'; '.join(fitted.differences)}. Evaluate each model on data made its own way "
            f"(`assay eval {version.ref}` without --data runs it on its own source; `--save-predictions "
            "FILE` keeps its outputs, and `assay gate` pairs two such files by example id), convert the "
            "data to the model's contract, or force it (--force-data on assay eval and assay gate; recorded "
            "in the report)."
        )
    check_fits(version, fitted.data)
    return fitted


def data_spec_for(version: VersionInfo, override: DataSpec | None = None) -> DataSpec:
    """The data ``override`` names, else the version's own training data (from its lineage). A table named
    without its label (or text) column takes the version's own: the column it was trained on."""
    own = DataSpec.model_validate(version.lineage["recipe"]["data"])
    spec = override or own
    if spec.kind in ("csv", "parquet", "jsonl"):  # the columns it was made with, where not named again
        own_columns = {"target": own.target, "text": own.text}
        missing = {k: v for k, v in own_columns.items() if getattr(spec, k) is None and v is not None}
        spec = spec.model_copy(update=missing) if missing else spec
    return spec


def data_for(
    version: VersionInfo, override: DataSpec | None = None, *, force: bool = False
) -> tuple[Dataset, DataSpec]:
    """The version's inputs: the data :func:`data_spec_for` names, made by the version's own contract
    (:func:`fit_version`)."""
    spec = data_spec_for(version, override)
    return fit_version(version, load_dataset(spec), force=force).data, spec


def contract_record(fitted: dict[str, Fitted], data: Dataset, split: str) -> dict[str, Any]:
    """What the run's document says about inputs: the examples, each model's contract, what was forced."""
    return {
        "examples": f"the {split} split of {data.name} ({data.source}): {data.split(split).n} examples",
        "models": {
            ref: {
                "contract": f.contract.describe(),
                "source": f.contract.source,
                "differences": list(f.differences),
            }
            for ref, f in fitted.items()
        },
        "forced": any(f.differences for f in fitted.values()),
    }


def check_fits(version: VersionInfo, data: Dataset) -> None:
    """The model's input and class sizes must match the data, or inference would crash deep in torch."""
    spec = version.spec
    wanted: dict[str, Any]
    given: dict[str, Any]
    if spec["arch"] in ZOO:
        expected = default_spec(spec["arch"], data.input_shape, data.n_classes)
        keys = [k for k in ("in_channels", "image_size", "n_features", "n_classes") if k in spec]
        wanted = {k: spec[k] for k in keys}
        given = {k: expected.get(k) for k in keys}
    else:  # imported: the door recorded what it was probed on
        wanted = {"input_shape": list(spec["input_shape"]), "n_classes": spec["n_classes"]}
        given = {"input_shape": list(data.input_shape), "n_classes": data.n_classes}
    if wanted != given:
        raise DataError(
            f"{version.ref} does not fit {data.name}: the model expects {wanted}, the data gives input shape "
            f"{data.input_shape} and {data.n_classes} classes. Evaluate it on data like its training data."
        )


def model_of(ws: Workspace, version: VersionInfo) -> LoadedModel:
    """The version's model on its own backend (torch, torchao or ONNX Runtime)."""
    return load_artifact(artifact_dir(ws, version))


def artifact_dir(ws: Workspace, version: VersionInfo) -> Path:
    if version.artifact_digest is None:
        raise DataError(
            f"{version.ref} was registered without model files; it cannot be run, only its runs read."
        )
    return ws.store.artifacts.path(version.artifact_digest)


def model_info(version: VersionInfo, model: LoadedModel) -> dict[str, Any]:
    training = version.lineage.get("training", {})
    spec = version.spec
    return {
        "ref": version.ref,
        "name": version.model,
        "version": version.version,
        "artifact_digest": version.artifact_digest,
        "parent": version.parent,
        "card": {
            "architecture": f"{spec['arch']} " + json.dumps({k: v for k, v in spec.items() if k != "arch"}),
            "parameters": model.parameters,
            "backend": model.predictor.name,
            "recipe": version.lineage.get("recipe", {}).get("label", "trained"),
            "training_data": f"{version.lineage.get('dataset', '?')} (train split fingerprint "
            f"{version.lineage.get('datasets', {}).get('train', '?')[:12]})",
            "intended_use": version.lineage.get("description") or "not declared",
            "limitations": "measured only on the evaluation split named in this report",
            "licence": version.lineage.get("licence") or "not declared",
            "training": {
                "epochs": training.get("epochs_run"),
                "seconds": training.get("seconds"),
                "precision": training.get("precision"),
                "energy_j": training.get("energy_j"),
                "energy_method": training.get("energy_method"),
                "co2_g": training.get("co2_g"),
                "seed": version.lineage.get("recipe", {}).get("train", {}).get("seed"),
            },
        },
    }


def assess_version(
    ws: Workspace,
    version: VersionInfo,
    data: Dataset,
    split: str = "test",
    *,
    efficiency: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = False,
    model: LoadedModel | None = None,
) -> Assessment:
    """``model``: the version's model when the caller has loaded it already (it is loaded otherwise)."""
    return assess_model(
        model or model_of(ws, version), version, data, split, cache_dir=ws.cache_dir,
        efficiency=efficiency, n_boot=n_boot, seed=seed, progress=progress,
    )  # fmt: skip


def assess_model(
    model: LoadedModel,
    version: VersionInfo,
    data: Dataset,
    split: str = "test",
    *,
    cache_dir: Path | None,
    efficiency: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> Assessment:
    """:func:`assess_version` on a model already loaded, its outputs cached in ``cache_dir`` (None: not
    cached; a worker on another machine has no workspace): what an executor's unit runs."""
    predictor = model.predictor

    def outputs_of(part: str) -> Outputs:  # cached per (artifact digest, split fingerprint, backend)
        return infer(
            predictor, data.split(part), cache_dir=cache_dir, model_digest=version.artifact_digest,
            progress=progress,
        )  # fmt: skip

    outputs = outputs_of(split)
    val = outputs_of("val") if split != "val" else None  # temperature scaling is fitted on validation
    eff = []
    if efficiency:
        eff = measure_efficiency(
            predictor, _one_example(data), parameters=model.parameters, weights_path=model.weights, seed=seed
        )
    return assess(
        outputs,
        info=model_info(version, model),
        val_outputs=val,
        efficiency=eff,
        class_names=data.class_names,
        n_boot=n_boot,
        seed=seed,
        training_curve=version.lineage.get("history"),
    )


def _one_example(data: Dataset) -> np.ndarray:
    """The first test example without its batch dimension, as an array (a 0-d one for a text)."""
    x = data.test.x
    return x[:1].reshape(x.shape[1:])


def evaluate_target(
    ws: Workspace,
    target: str,
    *,
    data_spec: DataSpec | None = None,
    split: str = "test",
    efficiency: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: bool = False,
    force_data: bool = False,
    save_predictions: Path | None = None,
) -> Evaluated:
    """``assay eval``: a model ref (on its own data unless ``data_spec`` names other data, which must fit
    its input contract unless ``force_data``) or a predictions file.

    ``save_predictions``: also write the per-example outputs with their ids as a predictions file
    (``.npz`` or ``.parquet``, see :func:`assay.outputs.write_predictions`), which ``assay gate`` pairs
    with any model evaluated on the same examples.
    """
    if save_predictions is not None and save_predictions.suffix.lower() not in WRITTEN_SUFFIXES:
        raise UsageError(  # before the evaluation, not after minutes of it
            f"--save-predictions {save_predictions}: predictions are written as "
            f"{' or '.join(WRITTEN_SUFFIXES)}, not '{save_predictions.suffix}'."
        )
    if is_predictions(target):  # nothing runs: the file is written again as asked (npz <-> parquet)
        if save_predictions is not None:
            write_predictions(load_predictions(Path(target)), save_predictions)
        return evaluate_predictions(ws, Path(target), n_boot=n_boot, seed=seed, out_dir=out_dir)
    version = ws.store.resolve(target)
    data, fitted = _fitted_data(data_spec, version, [version], force_data)
    assessment = assess_version(
        ws, version, fitted[version.ref].data, split, efficiency=efficiency, n_boot=n_boot, seed=seed,
        progress=progress,
    )  # fmt: skip
    if save_predictions is not None:
        write_predictions(assessment.outputs, save_predictions)
    return record_evaluation(
        ws,
        assessment,
        dataset_info(fitted[version.ref].data, split),
        version=version,
        out_dir=out_dir,
        inputs=fitted[version.ref].data.split(split).x,
        input_contract=contract_record(fitted, data, split),
    )


def _fitted_data(
    data_spec: DataSpec | None, anchor: VersionInfo, versions: list[VersionInfo], force: bool
) -> tuple[Dataset, dict[str, Fitted]]:
    """The data :func:`data_spec_for` names for ``anchor``, loaded once and made into each version's
    inputs."""
    data = load_dataset(data_spec_for(anchor, data_spec))
    return data, {v.ref: fit_version(v, data, force=force) for v in versions}


def _with_trust(
    ws: Workspace, version: VersionInfo, assessment: Assessment, data: Dataset, policy: Policy
) -> Assessment:
    """``assessment`` plus the trust families the policy's rules name (none: unchanged), run on
    ``version`` through the outputs cache, with the policy's seed, so both models see the same examples."""
    config = gate_config([r.metric for r in policy.rules], n_boot=policy.n_bootstrap, seed=policy.seed)
    if config is None:
        return assessment
    model = model_of(ws, version)
    outputs_of = cached_outputs(model, ws.cache_dir, version.artifact_digest)
    return assessment.with_trust(run_trust(model, data, config=config, outputs_of=outputs_of))


def gate_targets(
    ws: Workspace,
    baseline: str,
    candidate: str,
    policy: Policy | str | Path | None,
    *,
    data_spec: DataSpec | None = None,
    efficiency: bool = True,
    out_dir: Path | None = None,
    progress: bool = False,
    force_data: bool = False,
) -> Evaluated:
    """``assay gate``: two model refs, two predictions files, or one of each, under ``policy`` (a policy
    or its TOML file; None: the default policy, :meth:`Policy.default`, or for two lm-eval generation
    logs theirs).

    Model refs run on the same examples (the candidate's data, or the baseline's when the candidate is a
    file, unless ``data_spec`` names other data), each made into inputs by its own input contract; data
    that does not fit a contract is refused unless ``force_data``. A predictions file is paired with the
    models' outputs by example id, so it must hold the same examples with the same labels.
    """
    if is_predictions(baseline) and is_predictions(candidate):
        return gate_predictions(ws, Path(baseline), Path(candidate), policy, out_dir=out_dir)
    policy = Policy.load(policy)
    stats = {"n_boot": policy.n_bootstrap, "seed": policy.seed}
    files = {t: Path(t) for t in (baseline, candidate) if is_predictions(t)}
    versions = {t: ws.store.resolve(t) for t in (baseline, candidate) if t not in files}
    anchor = versions.get(candidate) or versions[baseline]
    data, fitted = _fitted_data(data_spec, anchor, list(versions.values()), force_data)

    def assessed(v: VersionInfo) -> Assessment:
        inputs = fitted[v.ref].data
        own = assess_version(  # a file has no timings to compare with: the model's are not taken
            ws, v, inputs, "test", efficiency=efficiency and not files, progress=progress,
            n_boot=policy.n_bootstrap, seed=policy.seed,
        )  # fmt: skip
        return _with_trust(ws, v, own, inputs, policy)

    models = {t: assessed(v) for t, v in versions.items()}
    first = next(iter(models.values()))
    for t, path in files.items():  # paired by id with the models' outputs; DataError if not the same examples
        models[t] = assess_predictions(path, align(first.outputs, load_predictions(path))[1], **stats)
    c_ver = versions.get(candidate)
    return record_comparison(
        ws,
        models[baseline],
        models[candidate],
        policy,
        dataset_info(fitted[anchor.ref].data, "test"),
        baseline_version=versions.get(baseline),
        candidate_version=c_ver,
        out_dir=out_dir,
        inputs=fitted[c_ver.ref].data.test.x if c_ver else None,
        input_contract=contract_record(fitted, data, "test"),
    )

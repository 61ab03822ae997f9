"""``assay run PIPELINE.toml`` and ``assay demo``: train, register, evaluate or gate, promote.

A pipeline file (every key optional except model.name; paths are relative to the file):

    [data]
    source = "fashion-mnist"        # or idx:DIR, npz:FILE, csv:FILE, parquet:FILE, sklearn:NAME
    # target = "label"; groups = ["region"]; limit = 2000; val_fraction = 0.1; seed = 0

    [model]
    name = "fmnist-cnn"
    arch = "cnn"                    # cnn | mlp
    spec = { channels = [16, 32], hidden = 64 }
    description = "intended use, in one line"

    [train]                         # assay.train.TrainConfig
    epochs = 4

    [gate]
    policy = "policy.toml"          # default: assay's documented default policy
    against = "production"          # the alias the new version is compared with

    [release]
    promote = true                  # move the alias when the gate passes (or on a first release)

    [audit]                         # optional: the leakage policy, checked before training
    max_leakage = 0.0               # refuse when a larger share of test examples has a copy in train
    waive = "reason"                # register anyway; the waiver and the measured leakage are recorded
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assay.config import validation_message
from assay.data import Dataset, DataSpec, parse_data_arg
from assay.errors import ConfigError, RefusedError
from assay.evaluate import Assessment
from assay.gate import Policy
from assay.release import (
    Evaluated,
    Workspace,
    assess_version,
    contract_record,
    dataset_info,
    fit_version,
    record_comparison,
    record_evaluation,
    train_version,
)
from assay.store.records import AliasChange, VersionInfo
from assay.train import TrainConfig, TrainResult


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Strict):
    source: str = "fashion-mnist"
    target: str | None = None
    groups: list[str] = Field(default_factory=list)
    limit: int | None = Field(None, gt=0)
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    seed: int = 0
    licence: str | None = None

    def spec(self) -> DataSpec:
        options = self.model_dump(exclude={"source"})
        return parse_data_arg(self.source, **options)


class ModelSection(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    arch: str = "cnn"
    spec: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    licence: str | None = None  # of the model's weights, e.g. "Apache-2.0"; shown on the model card


class GateSection(_Strict):
    policy: str | None = None
    against: str = "production"


class ReleaseSection(_Strict):
    promote: bool = True


class AuditSection(_Strict):
    max_leakage: float = Field(0.0, ge=0.0, le=1.0)
    waive: str | None = Field(None, min_length=1)


class Pipeline(_Strict):
    data: DataSection = Field(default_factory=lambda: DataSection())
    model: ModelSection
    train: TrainConfig = Field(default_factory=lambda: TrainConfig())
    gate: GateSection = Field(default_factory=lambda: GateSection())
    release: ReleaseSection = Field(default_factory=lambda: ReleaseSection())
    audit: AuditSection | None = None
    base_dir: Path = Path(".")

    def policy(self) -> Policy:
        if self.gate.policy is None:
            return Policy.default()
        return Policy.from_toml(self.base_dir / self.gate.policy)


def load_pipeline(path: str | Path) -> Pipeline:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"Pipeline file not found: {path}.") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e}).") from None
    return pipeline_from_dict(raw, source=str(path), base_dir=path.parent)


def pipeline_from_dict(raw: dict[str, Any], *, source: str, base_dir: Path = Path(".")) -> Pipeline:
    try:
        return Pipeline.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as e:
        raise ConfigError(validation_message(source, e)) from None


@dataclass
class PipelineResult:
    version: VersionInfo
    training: TrainResult
    evaluation: Evaluated
    baseline: VersionInfo | None
    promotion: AliasChange | None
    audit: dict[str, Any] | None = None  # the leakage check, and its waiver if one was needed


def check_leakage(data: Dataset, section: AuditSection) -> dict[str, Any]:
    """The leakage policy: refuse (RefusedError) when the share of test examples with an exact, near or
    perceptual copy in train exceeds ``max_leakage``, unless ``waive`` gives a reason. Returns the record:
    the measurement, the threshold, and the waiver when one was used."""
    from assay.data.audit import AuditConfig, AuditContext, from_dataset, run_audit
    from assay.data.audit.findings import format_finding

    ctx = AuditContext(from_dataset(data), AuditConfig(max_leakage=section.max_leakage))
    leakage = run_audit(ctx, ["leakage"]).get("leakage[test:train]")
    above = leakage.value is not None and leakage.value > section.max_leakage
    record: dict[str, Any] = {
        "leakage": leakage.to_dict(),
        "max_leakage": section.max_leakage,
        "waived": bool(above and section.waive),
        "waiver": section.waive if above else None,
    }
    if above and not section.waive:
        raise RefusedError(
            f"{leakage.details['count']} of {leakage.n} test examples have a copy in train "
            f"({format_finding(leakage.to_dict())}), above the policy's max_leakage of "
            f"{section.max_leakage}. "
            'Write a clean copy with `assay data dedupe`, or waive it with [audit] waive = "reason".'
        )
    return record


def run_pipeline(ws: Workspace, pipeline: Pipeline, *, progress: bool = True) -> PipelineResult:
    from assay.data import load_dataset

    policy = pipeline.policy()  # validate the policy before spending minutes on training
    data_spec = pipeline.data.spec()
    data = load_dataset(data_spec)
    audit = check_leakage(data, pipeline.audit) if pipeline.audit is not None else None  # before training
    # A model's first pipeline run has nothing to gate against; current_alias rejects unknown models.
    known = {m.name for m in ws.store.list_models()}
    baseline = (
        ws.store.current_alias(pipeline.model.name, pipeline.gate.against)
        if pipeline.model.name in known
        else None
    )
    # Before minutes of training: the production version must take this data, made its own way.
    base_inputs = fit_version(baseline, data) if baseline is not None else None
    version, result = train_version(
        ws,
        pipeline.model.name,
        data,
        data_spec,
        arch=pipeline.model.arch,
        config=pipeline.train,
        spec_overrides=pipeline.model.spec,
        parent=baseline.ref if baseline else None,
        description=pipeline.model.description,
        licence=pipeline.model.licence,
        audit=audit,
        progress=progress,
    )

    def assessed(v: VersionInfo, inputs: Dataset) -> Assessment:
        return assess_version(
            ws, v, inputs, "test", n_boot=policy.n_bootstrap, seed=policy.seed, progress=progress
        )

    candidate = assessed(version, data)
    info = dataset_info(data, "test")
    promotion = None
    if baseline is None:
        evaluated = record_evaluation(ws, candidate, info, version=version, inputs=data.test.x)
        if pipeline.release.promote:
            promotion = ws.store.promote(
                version.ref,
                pipeline.gate.against,
                reason="first release: no version to gate against",
                actor="pipeline",
            )
    else:
        assert base_inputs is not None
        evaluated = record_comparison(
            ws, assessed(baseline, base_inputs.data), candidate, policy, info, baseline_version=baseline,
            candidate_version=version, inputs=data.test.x,
            input_contract=contract_record(
                {baseline.ref: base_inputs, version.ref: fit_version(version, data)}, data, "test"
            ),
        )  # fmt: skip
        assert evaluated.verdict is not None
        if pipeline.release.promote and evaluated.verdict.passed:
            promotion = ws.store.promote(
                version.ref, pipeline.gate.against, reason="gate passed", actor="pipeline"
            )
    return PipelineResult(ws.store.resolve(version.ref), result, evaluated, baseline, promotion, audit)

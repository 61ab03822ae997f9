"""The target catalogue: machines a model could run on, their achievable rates, power and price.

A catalogue is a TOML file (the default ships as ``assay/cost/targets.toml``; its header says where each
figure comes from). Each ``[[target]]`` is a cloud instance priced by the hour or an edge device whose
purchase is amortised over its life; ``[local]`` says what the machine assay runs on costs (its rates are
measured, not read from here).

Example:
    >>> catalogue = load_catalogue()
    >>> target = catalogue.target("raspberry-pi-5")
    >>> round(target.usd_per_hour(catalogue.electricity_usd_per_kwh), 5)
    0.00409
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from assay.config import validation_message
from assay.errors import ConfigError, NotFoundError

PRECISIONS = ("fp32", "bf16", "int8")  # the rates a target states, and this machine's probes measure
HOURS_PER_YEAR = 24 * 365


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rates(_Strict):
    """Achievable arithmetic in GFLOP/s (GOP/s for int8), per precision a variant computes in."""

    fp32: float = Field(gt=0)
    bf16: float = Field(gt=0)
    int8: float = Field(gt=0)


class Target(_Strict):
    """One machine of the catalogue."""

    name: str = Field(min_length=1)
    kind: Literal["cloud", "edge"]
    description: str
    cores: int = Field(ge=1)
    memory_gib: float = Field(gt=0)
    accelerator: str = ""
    clock_ghz: float = Field(gt=0)
    gflops: Rates
    bandwidth_gb_s: float = Field(gt=0)
    rates_basis: str = Field(min_length=1)
    call_overhead_us: float = Field(default=0.0, ge=0)
    watts: float = Field(ge=0)
    hourly_usd: float | None = Field(default=None, ge=0)  # cloud
    purchase_usd: float | None = Field(default=None, ge=0)  # edge
    life_years: float | None = Field(default=None, gt=0)
    price_date: str = Field(min_length=1)
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _priced(self) -> Target:
        if self.kind == "cloud" and self.hourly_usd is None:
            raise ValueError(f"cloud target {self.name!r} needs hourly_usd")
        if self.kind == "edge" and (self.purchase_usd is None or self.life_years is None):
            raise ValueError(f"edge target {self.name!r} needs purchase_usd and life_years")
        return self

    def usd_per_hour(self, electricity_usd_per_kwh: float) -> float:
        """What an hour of use costs: the instance's price, or the purchase spread over the device's life
        plus the electricity it draws."""
        if self.kind == "cloud":
            assert self.hourly_usd is not None  # the validator requires it
            return self.hourly_usd
        assert self.purchase_usd is not None and self.life_years is not None
        return (
            self.purchase_usd / (self.life_years * HOURS_PER_YEAR)
            + self.watts / 1e3 * electricity_usd_per_kwh
        )


class Local(_Strict):
    """The price of the machine assay runs on: a catalogue target's, or an hourly figure of its own."""

    priced_as: str | None = None
    hourly_usd: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> Local:
        if (self.priced_as is None) == (self.hourly_usd is None):
            raise ValueError("give [local] either priced_as (a target's name) or hourly_usd, not both")
        return self


class Defaults(_Strict):
    electricity_usd_per_kwh: float = Field(ge=0)


class Catalogue(_Strict):
    """A whole catalogue file, validated: ``schema = 1``, ``[defaults]``, ``[local]``, ``[[target]]``."""

    schema_: Literal[1] = Field(alias="schema")
    defaults: Defaults
    local: Local
    targets: list[Target] = Field(alias="target", min_length=1)
    path: str = ""

    @model_validator(mode="after")
    def _names(self) -> Catalogue:
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must be unique; got {names}")
        if self.local.priced_as is not None and self.local.priced_as not in names:
            raise ValueError(f"[local] priced_as {self.local.priced_as!r} names no target; have {names}")
        return self

    @property
    def electricity_usd_per_kwh(self) -> float:
        return self.defaults.electricity_usd_per_kwh

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise NotFoundError(
            f"No target {name!r} in {self.path}; have {', '.join(t.name for t in self.targets)}."
        )

    def local_hourly_usd(self) -> float:
        if self.local.hourly_usd is not None:
            return self.local.hourly_usd
        assert self.local.priced_as is not None  # the validator allows one of the two
        return self.target(self.local.priced_as).usd_per_hour(self.electricity_usd_per_kwh)


def default_catalogue_path() -> Path:
    return Path(str(resources.files("assay.cost") / "targets.toml"))


def load_catalogue(path: Path | None = None) -> Catalogue:
    """The catalogue at ``path`` (default: the one assay ships), validated; ConfigError names the problem."""
    path = path or default_catalogue_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"No target catalogue at {path}; copy {default_catalogue_path()} and edit it."
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not a readable TOML file ({e}).") from None
    try:
        catalogue = Catalogue.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(validation_message(str(path), e)) from None
    return catalogue.model_copy(update={"path": str(path)})

"""The target catalogue: the shipped one is complete and sourced; a bad one is refused by name."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from assay.cost.targets import HOURS_PER_YEAR, default_catalogue_path, load_catalogue
from assay.errors import ConfigError, NotFoundError

CLOUD = """
[[target]]
name = "{name}"
kind = "cloud"
description = "a VM"
cores = 2
memory_gib = 8
clock_ghz = 3.0
gflops = {{ fp32 = 100.0, bf16 = 200.0, int8 = 400.0 }}
bandwidth_gb_s = 40.0
rates_basis = "made up for the test"
watts = 10.0
hourly_usd = 0.36
price_date = "2026-12"
source = "a test"
"""
HEAD = 'schema = 1\n[defaults]\nelectricity_usd_per_kwh = 0.2\n[local]\npriced_as = "vm"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(text)
    return path


def test_shipped_catalogue_has_dated_sourced_targets_of_both_kinds() -> None:
    catalogue = load_catalogue()
    assert len(catalogue.targets) >= 3
    assert {t.kind for t in catalogue.targets} == {"cloud", "edge"}
    for t in catalogue.targets:
        assert re.fullmatch(r"\d{4}-\d{2}", t.price_date), t.name
        assert t.source.startswith("https://"), t.name
        assert t.rates_basis and t.gflops.fp32 > 0 and t.bandwidth_gb_s > 0
    # The shipped file is the one the package data carries.
    assert tomllib.loads(default_catalogue_path().read_text())["schema"] == 1


def test_an_edge_device_costs_its_purchase_over_its_life_plus_electricity() -> None:
    catalogue = load_catalogue()
    pi = catalogue.target("raspberry-pi-5")
    assert pi.purchase_usd is not None and pi.life_years is not None
    hand = pi.purchase_usd / (pi.life_years * 24 * 365) + pi.watts / 1000 * catalogue.electricity_usd_per_kwh
    assert pi.usd_per_hour(catalogue.electricity_usd_per_kwh) == pytest.approx(hand)
    assert HOURS_PER_YEAR == 8760


def test_local_price_is_the_named_target_or_its_own(tmp_path: Path) -> None:
    catalogue = load_catalogue(write(tmp_path, HEAD + CLOUD.format(name="vm")))
    assert catalogue.local_hourly_usd() == 0.36
    own = HEAD.replace('priced_as = "vm"', "hourly_usd = 0.05")
    assert load_catalogue(write(tmp_path, own + CLOUD.format(name="vm"))).local_hourly_usd() == 0.05


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace("hourly_usd = 0.36\n", ""), "cloud target 'vm' needs hourly_usd"),
        (lambda s: s.replace('kind = "cloud"', 'kind = "edge"'), "needs purchase_usd and life_years"),
        (lambda s: s.replace("bandwidth_gb_s = 40.0", "bandwidth_gb_s = 0"), "'target.0.bandwidth_gb_s'"),
        (lambda s: s.replace(", int8 = 400.0", ""), "'target.0.gflops.int8': Field required"),
        (
            lambda s: s.replace('priced_as = "vm"', 'priced_as = "nosuch"'),
            "priced_as 'nosuch' names no target",
        ),
        (lambda s: s + CLOUD.format(name="vm"), "target names must be unique"),
        (
            lambda s: s.replace("watts = 10.0", "watts = 10.0\ncolour = 'red'"),
            "Extra inputs are not permitted",
        ),
        (lambda s: s.replace("schema = 1", "schema = 2"), "'schema'"),
        (lambda s: s + "[[[", "not a readable TOML file"),
    ],
)
def test_bad_catalogue_is_refused_with_the_field(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, edit(HEAD + CLOUD.format(name="vm")))
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_catalogue(path)
    assert str(path) in str(info.value)


def test_missing_file_and_unknown_target_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"No target catalogue at .*; copy .*targets\.toml and edit it"):
        load_catalogue(tmp_path / "nosuch.toml")
    with pytest.raises(NotFoundError, match=r"No target 'nosuch' in .*; have aws-m7a\.large"):
        load_catalogue().target("nosuch")

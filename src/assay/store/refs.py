"""References to model versions, and the names they are built from.

    name             the latest version of the model
    name@3, name@v3  version 3
    name@production  the version the alias 'production' points at

Model names cannot contain '@', and alias names cannot look like a version number ('3', 'v3'), so every
reference has exactly one reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from assay.errors import UsageError
from assay.store.tables import NAME_LENGTH

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ALIAS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
_VERSION = re.compile(r"v?([0-9]+)")


@dataclass(frozen=True)
class Ref:
    model: str
    version: int | None = None
    alias: str | None = None


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name) or len(name) > NAME_LENGTH:
        raise UsageError(
            f"Model name {name!r} is not allowed. Use letters, digits, '.', '_' and '-', starting with a "
            f"letter or digit, at most {NAME_LENGTH} characters."
        )
    return name


def check_alias_name(name: str) -> str:
    if (
        not isinstance(name, str)
        or not _ALIAS_NAME.fullmatch(name)
        or _VERSION.fullmatch(name)
        or len(name) > NAME_LENGTH
    ):
        raise UsageError(
            f"Alias name {name!r} is not allowed. Use letters, digits, '.', '_' and '-', starting with a "
            "letter, and not of the form 'v3' (that reads as a version)."
        )
    return name


def parse_ref(ref: str) -> Ref:
    if not isinstance(ref, str) or not ref:
        raise UsageError(
            f"A model reference must be 'name', 'name@3', 'name@v3' or 'name@alias'. Got {ref!r}."
        )
    model, at, suffix = ref.partition("@")
    check_model_name(model)
    if not at:
        return Ref(model)
    version = _VERSION.fullmatch(suffix)
    if version:
        number = int(version.group(1))
        if number < 1:
            raise UsageError(f"Versions are numbered from 1. Got {ref!r}.")
        return Ref(model, version=number)
    return Ref(model, alias=check_alias_name(suffix))

"""Turning pydantic's validation errors into assay's one-line messages."""

from __future__ import annotations

from pydantic import ValidationError


def validation_message(source: str, error: ValidationError) -> str:
    """The first problem as "<source>: 'train.epochs': Input should be ... (got 0)."."""
    errors = error.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{source}: '{where}': {first['msg']} (got {first.get('input')!r}){more}."

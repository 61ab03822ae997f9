"""Datasets, known by content fingerprint, inside the caller's session."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from assay.errors import NotFoundError, UsageError
from assay.store.records import DatasetInfo
from assay.store.tables import DatasetRow, utcnow

log = logging.getLogger(__name__)


def check_splits(splits: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Splits as ``{split: {"fingerprint": str, "n": int}}``; other keys in a split are kept."""
    if not isinstance(splits, dict) or not splits:
        raise UsageError(f"splits must be a non-empty dict of {{split: {{fingerprint, n}}}}. Got {splits!r}.")
    for name, split in splits.items():
        if (
            not isinstance(split, dict)
            or not isinstance(split.get("fingerprint"), str)
            or not isinstance(split.get("n"), int)
            or isinstance(split.get("n"), bool)
        ):
            raise UsageError(
                f"Split {name!r} must be a dict with a str 'fingerprint' and an int 'n'. Got {split!r}."
            )
    return splits


def register(
    session: Session,
    *,
    name: str,
    fingerprint: str,
    source: str,
    licence: str | None,
    n_examples: int,
    splits: dict[str, dict[str, Any]],
) -> DatasetInfo:
    """The dataset with this fingerprint: the row already there, or a new one.

    The fingerprint is the identity: registering the same content again under other metadata returns
    the first registration unchanged (and logs that it did).
    """
    row = session.scalar(select(DatasetRow).where(DatasetRow.fingerprint == fingerprint))
    if row is not None:
        if (row.name, row.source, row.n_examples) != (name, source, n_examples):
            log.info("Dataset %s is registered already as %r; keeping that record.", fingerprint, row.name)
        return dataset_info(row)
    row = DatasetRow(
        name=name,
        fingerprint=fingerprint,
        source=source,
        licence=licence,
        n_examples=n_examples,
        splits=splits,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return dataset_info(row)


def find(session: Session, fingerprint: str) -> DatasetInfo:
    row = session.scalar(select(DatasetRow).where(DatasetRow.fingerprint == fingerprint))
    if row is None:
        raise NotFoundError(
            f"No dataset with fingerprint {fingerprint!r} is registered. Register it with register_dataset."
        )
    return dataset_info(row)


def dataset_info(row: DatasetRow) -> DatasetInfo:
    return DatasetInfo(
        id=row.id,
        name=row.name,
        fingerprint=row.fingerprint,
        source=row.source,
        licence=row.licence,
        n_examples=row.n_examples,
        splits=row.splits,
        created_at=row.created_at,
    )

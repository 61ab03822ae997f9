"""The model registry: datasets, model versions, runs and their measurements, aliases with history.

SQLAlchemy 2 on SQLite by default (``<home>/assay.db``) or any URL (PostgreSQL via
``postgresql+psycopg://``), migrated with alembic on open; model folders in a content-addressed artifact
store. Everything returned is a frozen record, so callers never deal with sessions.
"""

from assay.store.artifacts import ArtifactStore
from assay.store.records import (
    AliasChange,
    AliasEvent,
    DatasetInfo,
    ModelInfo,
    RunInfo,
    VersionInfo,
)
from assay.store.store import Store

__all__ = [
    "AliasChange",
    "AliasEvent",
    "ArtifactStore",
    "DatasetInfo",
    "ModelInfo",
    "RunInfo",
    "Store",
    "VersionInfo",
]

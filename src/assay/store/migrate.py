"""Bring a registry database to the newest schema, with alembic driven from code (no alembic.ini).

Opening a database that is already at head costs one read of ``alembic_version``. Otherwise the upgrade
runs in one transaction that first takes a lock (the SQLite write lock, a PostgreSQL advisory lock) and
reads the revision again, so several processes opening a fresh database at once migrate it exactly once.

To add a migration after changing ``tables.py``::

    with engine.connect() as conn:
        command.revision(alembic_config(conn), message="...", autogenerate=True, rev_id="0002")

then review the generated file in ``migrations/versions``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from assay.errors import ConfigError
from assay.store.database import WRITE

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# Any fixed 64-bit number: the PostgreSQL advisory lock that serialises concurrent migrations.
_PG_MIGRATION_LOCK = 0x61737361795F6462  # "assay_db"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    # ConfigParser treats '%' as interpolation: escape it in case the install path contains one.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    if head is None:
        raise ConfigError(f"No migrations found in {MIGRATIONS}; the assay installation is incomplete.")
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: Engine) -> bool:
    """Migrate the database to head if it is not there yet. Returns whether it migrated."""
    head = head_revision()
    with engine.connect() as conn:
        if current_revision(conn) == head:
            return False
    with engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        current = current_revision(conn)
        if current == head:
            return False  # another process migrated while we waited for the lock
        known = {script.revision for script in _scripts().walk_revisions()}
        if current is not None and current not in known:
            raise ConfigError(
                f"The registry database is at schema revision {current!r}, which this version of assay does "
                "not know (a newer assay wrote it). Upgrade assay, or use another database."
            )
        log.info("Migrating the registry database from revision %s to %s.", current or "(empty)", head)
        command.upgrade(alembic_config(conn), "head")
    return True

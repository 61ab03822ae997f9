"""Alembic environment for the registry.

There is no alembic.ini: ``assay.store.migrate`` builds the configuration in code and passes an open
connection in ``config.attributes["connection"]``; the migration runs inside that connection's
transaction, so the caller decides when it commits.
"""

from __future__ import annotations

from alembic import context

from assay.errors import UsageError
from assay.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise UsageError(
        "assay's migrations run on an open connection: use assay.store.migrate.alembic_config(connection)."
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead, elsewhere it is plain ALTER.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

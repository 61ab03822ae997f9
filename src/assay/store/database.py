"""Where the registry database is, how to connect to it, and what to say when that fails.

SQLite connections get WAL (readers do not block the writer), a 30 s busy timeout (writers queue instead
of failing at once) and foreign keys. SQLAlchemy also takes over BEGIN from Python's sqlite3 module,
whose legacy mode starts no transaction before SELECT or DDL: without that, reads inside a transaction
would not be repeatable and migrations would not be atomic. Write transactions begin IMMEDIATE, taking
the write lock up front: a deferred transaction that reads, then writes, fails with SQLITE_BUSY_SNAPSHOT
in WAL mode when another writer committed in between, and no busy timeout can save it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from assay.errors import AssayError, ConfigError, MissingExtraError

T = TypeVar("T")

WRITE = "assay_write"  # execution option: this transaction will write
BUSY_TIMEOUT_MS = (
    30_000  # writers queue behind a first-open migration, which can take seconds on a loaded machine
)
_PG_CONNECT_TIMEOUT_S = 10


def resolve_home(home: Path | str | None) -> Path:
    return Path(home or os.environ.get("ASSAY_HOME") or ".assay").expanduser().absolute()


def resolve_url(url: str | None, home: Path) -> URL:
    text = url or os.environ.get("ASSAY_DB_URL")
    if not text:
        return URL.create("sqlite", database=str(home / "assay.db"))
    try:
        return make_url(text)
    except ArgumentError:
        raise ConfigError(
            f"The database URL {_mask_text(text)!r} is not a SQLAlchemy URL. "
            "Use e.g. 'sqlite:////path/to/assay.db' or 'postgresql+psycopg://user:password@host/db'."
        ) from None


def masked(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _mask_text(text: str) -> str:
    """Hide a password in a URL that did not parse: everything between '://user:' and '@'."""
    scheme, sep, rest = text.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not (sep and at and ":" in credentials):
        return text
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def open_engine(url: URL) -> Engine:
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True  # a server restart must not surface as an error on the next call
        if "connect_timeout" not in url.query:
            # Fail within seconds when the server is unreachable rather than hanging on TCP timeouts.
            kwargs["connect_args"] = {"connect_timeout": _PG_CONNECT_TIMEOUT_S}
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        folder = Path(url.database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"Cannot create the folder {str(folder)!r} for the registry database {masked(url)!r} ({e}). "
                "Point ASSAY_HOME or ASSAY_DB_URL at a writable place."
            ) from None
    try:
        engine = create_engine(url, **kwargs)
    except NoSuchModuleError:
        raise ConfigError(
            f"The database URL {masked(url)!r} names a dialect or driver SQLAlchemy does not know. "
            "Use 'sqlite:///...' or 'postgresql+psycopg://...'."
        ) from None
    except ImportError as e:
        if url.get_driver_name() == "psycopg":
            raise MissingExtraError("psycopg", "postgres") from None
        hint = "Install it"
        if url.get_backend_name() == "postgresql":
            hint = "assay supports PostgreSQL through psycopg 3: use 'postgresql+psycopg://...'"
        raise ConfigError(f"The driver for {masked(url)!r} is not installed ({e}). {hint}.") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, see _sqlite_begin
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first, so that switching to WAL also waits for a concurrent opener.
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    write = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextmanager
def database_errors(url: URL) -> Iterator[None]:
    """Turn a failure to reach or lock the database into an AssayError naming the (masked) URL."""
    try:
        yield
    except DBAPIError as e:
        if not isinstance(e, OperationalError) and not e.connection_invalidated:
            raise  # integrity and programming errors are not connection problems
        raise connection_error(url, e) from None


def connection_error(url: URL, error: DBAPIError) -> AssayError:
    reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
    if url.password:
        reason = reason.replace(str(url.password), "***")
    if url.get_backend_name() == "sqlite" and "locked" in reason:
        hint = f"Another process held the write lock for over {BUSY_TIMEOUT_MS // 1000} s; try again."
    elif url.get_backend_name() == "sqlite":
        hint = "Check that the folder exists and is writable, or point ASSAY_HOME / ASSAY_DB_URL elsewhere."
    else:
        hint = (
            "Check that the server is running and reachable and that ASSAY_DB_URL has the right credentials."
        )
    return ConfigError(f"Cannot use the registry database {masked(url)!r}: {reason}. {hint}")


def sqlite_busy(error: BaseException) -> bool:
    """SQLITE_BUSY returned at once: SQLite skips the busy handler where waiting could deadlock (a read
    transaction upgrading to write, WAL recovery on a fresh file), and the documented remedy is to roll
    back and run the transaction again."""
    return isinstance(error, OperationalError) and "database is locked" in str(error.orig)


def retry_busy(work: Callable[[], T], attempts: int = 6) -> T:
    """Run ``work`` again, with jittered exponential back-off, while SQLite answers an immediate BUSY."""
    for attempt in range(attempts):
        try:
            return work()
        except OperationalError as e:
            if not sqlite_busy(e) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")

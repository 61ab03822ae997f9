from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from assay.errors import ConfigError, MissingExtraError
from assay.store import Store, VersionInfo
from assay.store.database import BUSY_TIMEOUT_MS, connection_error, retry_busy


def test_home_and_url_come_from_arguments_then_environment_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with Store() as default:
        assert default.home == tmp_path / ".assay"
        assert default.url == f"sqlite:///{tmp_path / '.assay' / 'assay.db'}"
    assert (tmp_path / ".assay" / "assay.db").is_file()

    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "env-home"))
    with Store() as from_env:
        assert from_env.home == tmp_path / "env-home"
        assert from_env.url.endswith("env-home/assay.db")
    with Store(home=tmp_path / "arg-home") as from_arg:
        assert from_arg.home == tmp_path / "arg-home"

    monkeypatch.setenv("ASSAY_DB_URL", f"sqlite:///{tmp_path / 'elsewhere' / 'reg.db'}")
    with Store() as from_url:
        assert from_url.url.endswith("elsewhere/reg.db")
        assert from_url.artifacts.root == tmp_path / "env-home" / "artifacts"
    with Store(url=f"sqlite:///{tmp_path / 'arg.db'}") as url_arg:
        assert url_arg.url.endswith("/arg.db")


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(store: Store) -> None:
    with store._engine.connect() as conn:
        assert conn.scalar(text("PRAGMA journal_mode")) == "wal"
        assert conn.scalar(text("PRAGMA busy_timeout")) == BUSY_TIMEOUT_MS == 30_000
        assert conn.scalar(text("PRAGMA foreign_keys")) == 1


def test_writes_take_the_sqlite_write_lock_up_front_and_reads_do_not(
    store: Store, register: Callable[..., VersionInfo]
) -> None:
    begins: list[str] = []

    @event.listens_for(store._engine, "before_cursor_execute")
    def capture(*args: Any) -> None:
        statement = args[2]
        if statement.startswith("BEGIN"):
            begins.append(statement)

    register("mnist", gated=False)
    store.resolve("mnist")
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]


def test_an_unusable_sqlite_location_names_the_url_and_a_hint(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    with pytest.raises(
        ConfigError, match=r"Cannot use the registry database 'sqlite:///.*a-folder\.db'.*writable"
    ):
        Store(url=f"sqlite:///{folder}", home=tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="Cannot create the folder"):
        Store(url=f"sqlite:///{blocker / 'x.db'}", home=tmp_path)


def test_an_unreachable_server_is_reported_with_the_password_masked(tmp_path: Path) -> None:
    # Port 1 on loopback: refused at once, no network involved.
    with pytest.raises(ConfigError) as caught:
        Store(url="postgresql+psycopg://ana:s3cret-pw@127.0.0.1:1/assay", home=tmp_path)
    message = str(caught.value)
    assert "postgresql+psycopg://ana:***@127.0.0.1:1/assay" in message
    assert "s3cret-pw" not in message
    assert "server is running" in message


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("not a url", "not a SQLAlchemy URL"),
        ("nosuchdb://u:pw@h/x", "dialect or driver"),
    ],
)
def test_malformed_urls_are_config_errors(tmp_path: Path, url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        Store(url=url, home=tmp_path)
    assert "pw" not in str(caught.value)


def test_a_locked_database_gets_its_own_hint() -> None:
    error = OperationalError("INSERT ...", {}, Exception("database is locked"))
    message = str(connection_error(make_url("sqlite:////tmp/x.db"), error))
    assert "database is locked" in message and "held the write lock for over 30 s" in message


def test_a_missing_postgres_driver_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes "import psycopg" fail
    with pytest.raises(MissingExtraError, match=r"pip install 'assay\[postgres\]'"):
        Store(url="postgresql+psycopg://u@127.0.0.1/x", home=tmp_path)


def test_an_immediate_sqlite_busy_is_retried_then_reported() -> None:
    """SQLite can answer BUSY without waiting (deadlock avoidance); the transaction is simply run again."""
    locked = OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise locked
        return "done"

    assert retry_busy(flaky) == "done" and len(calls) == 3

    def always() -> str:
        raise locked

    with pytest.raises(OperationalError):
        retry_busy(always, attempts=2)

    def other() -> str:
        raise OperationalError("SELECT", {}, Exception("no such table: x"))

    calls.clear()
    with pytest.raises(OperationalError, match="no such table"):
        retry_busy(lambda: (calls.append(1), other())[1])
    assert len(calls) == 1  # only BUSY is retried

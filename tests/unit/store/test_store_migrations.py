from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, create_engine, inspect, text

from assay.errors import ConfigError
from assay.store import Store, VersionInfo
from assay.store import migrate as migrate_module
from assay.store.migrate import alembic_config, current_revision, head_revision, upgrade_to_head
from assay.store.tables import Base


def schema_diff(store: Store, metadata: MetaData = Base.metadata) -> list[object]:
    with store._engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def test_migrations_build_exactly_the_orm_schema(store: Store) -> None:
    assert schema_diff(store) == []


def test_the_schema_comparison_does_notice_a_difference(store: Store) -> None:
    # Guards the test above against passing vacuously: one extra column must show up as a diff.
    changed = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["models"].append_column(Column("owner", Integer))
    diff = schema_diff(store, changed)
    assert len(diff) == 1 and "owner" in repr(diff)


def test_a_fresh_database_is_at_head(store: Store) -> None:
    with store._engine.connect() as conn:
        assert current_revision(conn) == head_revision() == "0002"
        assert set(inspect(conn).get_table_names()) == {*Base.metadata.tables, "alembic_version"}


def test_reopening_keeps_data_and_runs_no_migration(
    home: Path, store: Store, register: Callable[..., VersionInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    register("mnist")
    store.promote("mnist@1")
    store.close()

    def no_upgrade(*args: object, **kwargs: object) -> None:
        raise AssertionError("a database at head must not be migrated again")

    monkeypatch.setattr(migrate_module.command, "upgrade", no_upgrade)
    with Store(home=home) as reopened:
        assert reopened.resolve("mnist@production").version == 1
        assert upgrade_to_head(reopened._engine) is False


def test_a_database_from_a_newer_assay_is_refused(home: Path, store: Store) -> None:
    with store._engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    store.close()
    with pytest.raises(ConfigError, match=r"revision '9999'.*Upgrade assay"):
        Store(home=home)


def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
            command.downgrade(alembic_config(conn), "base")
            assert inspect(conn).get_table_names() == ["alembic_version"]
        assert upgrade_to_head(engine) is True
        with engine.connect() as conn:
            assert current_revision(conn) == head_revision()
    finally:
        engine.dispose()

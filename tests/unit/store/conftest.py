from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from assay.store import Store, VersionInfo
from assay.store.tables import Base

Register = Callable[..., VersionInfo]


@pytest.fixture(autouse=True)
def _no_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their database explicitly; a developer's ASSAY_* settings must not leak in."""
    monkeypatch.delenv("ASSAY_HOME", raising=False)
    monkeypatch.delenv("ASSAY_DB_URL", raising=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    with Store(home=home) as s:
        yield s


@pytest.fixture
def rows(home: Path, store: Store) -> Iterator[Callable[[], dict[str, int]]]:
    """Row counts per table, read through a separate engine rather than through the store."""
    engine = create_engine(f"sqlite:///{home / 'assay.db'}")

    def count() -> dict[str, int]:
        with engine.connect() as conn:
            return {
                name: conn.scalar(select(func.count()).select_from(table)) or 0
                for name, table in Base.metadata.tables.items()
            }

    yield count
    engine.dispose()


@pytest.fixture
def register(store: Store) -> Register:
    def register(
        name: str = "mnist", parent: str | None = None, gated: bool = True, **extra: Any
    ) -> VersionInfo:
        """A version as the release loop leaves it: by default with a passed gate, so it may be promoted."""
        fields: dict[str, Any] = {
            "artifact_dir": None,
            "spec": {"arch": "mlp"},
            "config_hash": "cfg",
            "lineage": {"datasets": ["fp"]},
            "environment": {"python": "3.11"},
        }
        version = store.register_version(name, parent=parent, **{**fields, **extra})
        if not gated:
            return version
        store.record_run(
            kind="comparison", document={"kind": "comparison"}, measurements=[], version=version.ref,
            baseline=None, dataset_fingerprint="fp", split="test", passed=True, report_path=None, gate=True,
        )  # fmt: skip
        return store.resolve(version.ref)

    return register


@pytest.fixture
def model_dir(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "model", weights: bytes = b"weights", spec: str = '{"arch": "mlp"}') -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "weights.safetensors").write_bytes(weights)
        (folder / "spec.json").write_text(spec)
        return folder

    return make

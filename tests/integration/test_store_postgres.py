"""The registry's core scenario on a real PostgreSQL server, and the same scenario on SQLite.

PostgreSQL runs when ASSAY_TEST_PG_URL names a server (``scripts/with-postgres.sh`` starts a throwaway
one and sets it); otherwise those cases skip. Each case works in a schema of its own, created and dropped
here, so the database it is pointed at is left as it was found. Running the scenario on SQLite as well
shows the scenario itself is right, whichever server is at hand.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from assay.errors import NotFoundError, RefusedError
from assay.measurement import Comparison, Measurement
from assay.store import Store
from assay.store import runs as runs_module
from assay.store.migrate import upgrade_to_head
from assay.store.tables import Base, MeasurementRow, RunRow

PG_URL = os.environ.get("ASSAY_TEST_PG_URL")


@pytest.fixture(autouse=True)
def _no_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSAY_HOME", raising=False)
    monkeypatch.delenv("ASSAY_DB_URL", raising=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'assay.db'}"
        return
    if not PG_URL:
        pytest.skip("ASSAY_TEST_PG_URL is not set; run under scripts/with-postgres.sh to test PostgreSQL")
    schema = f"assay_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        scoped = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


def model_folder(root: Path, weights: bytes) -> Path:
    root.mkdir(parents=True)
    (root / "weights.safetensors").write_bytes(weights)
    (root / "spec.json").write_text('{"arch": "cnn"}')
    return root


def register(store: Store, parent: str | None = None, artifact_dir: Path | None = None) -> int:
    return store.register_version(
        "mnist",
        artifact_dir=artifact_dir,
        spec={"arch": "cnn"},
        config_hash="cfg",
        parent=parent,
        lineage={"datasets": ["fp-test"]},
        environment={"python": "3.11"},
    ).version


def test_core_scenario(url: str, tmp_path: Path) -> None:
    with Store(url=url, home=tmp_path / "home") as store:
        with store._engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []

        splits = {"test": {"fingerprint": "fp-test", "n": 10000}}
        dataset = store.register_dataset(
            "fashion-mnist", "fp", source="idx", licence="MIT", n_examples=10000, splits=splits
        )
        again = store.register_dataset("again", "fp", source="x", licence=None, n_examples=1, splits=splits)
        assert again == dataset

        first = store.register_version(
            "mnist",
            artifact_dir=model_folder(tmp_path / "m1", b"w1"),
            spec={"arch": "cnn"},
            config_hash="cfg",
            parent=None,
            lineage={"datasets": ["fp-test"], "recipe": "r.toml"},
            environment={"python": "3.11"},
            metrics_summary={"accuracy": 0.9},
            description="digits",
        )
        assert first.created_at.tzinfo == UTC
        assert store.artifacts.exists(first.artifact_digest or "")
        assert [register(store, parent="mnist@1"), register(store, parent="mnist@v2")] == [2, 3]
        assert store.resolve("mnist@3").parent == "mnist@v2"

        run_id = store.record_run(
            kind="comparison",
            document={"summary": {"ece": math.nan}},
            measurements=[Measurement("accuracy", "quality", 0.88, 0.87, 0.89, n=10000)],
            baseline_measurements=[Measurement("accuracy", "quality", 0.90, n=10000)],
            comparisons=[Comparison("accuracy", "quality", 0.90, 0.88, -0.02, -0.03, -0.01, 1e-3, "McNemar")],
            version="mnist@2",
            baseline="mnist@1",
            dataset_fingerprint="fp",
            split="test",
            passed=False,
            report_path=None,
            gate=True,  # the verdict lands in the same transaction as the run
        )
        assert store.resolve("mnist@2").gate_status == "failed"
        run = store.get_run(run_id)
        assert run.document == {"summary": {"ece": None}}
        assert run.comparisons[0].delta == -0.02 and run.baseline_measurements[0].value == 0.90
        assert [r.id for r in store.runs_for("mnist@2")] == [run_id]

        store.promote("mnist@1")
        with pytest.raises(RefusedError, match="--force"):
            store.promote("mnist@2")
        assert store.promote("mnist@2", force=True, reason="accepted").event.forced  # type: ignore[union-attr]
        with pytest.raises(RefusedError, match="never gated"):
            store.promote("mnist@3")  # the alias has a holder: an ungated version may not replace it
        store.set_gate("mnist@3", store.record_run(
            kind="comparison", document={}, measurements=[], version="mnist@3", baseline="mnist@2",
            dataset_fingerprint="fp", split="test", passed=True, report_path=None,
        ), passed=True)  # fmt: skip
        store.promote("mnist@3")
        assert not store.promote("mnist@v3").changed
        assert [store.rollback("mnist").to_version for _ in range(2)] == [2, 1]
        with pytest.raises(RefusedError):
            store.rollback("mnist")
        history = store.alias_history("mnist", "production")
        assert [(e.action, e.from_version, e.to_version, e.forced) for e in history] == [
            ("promote", None, 1, False),
            ("promote", 1, 2, True),
            ("promote", 2, 3, False),
            ("rollback", 3, 2, False),
            ("rollback", 2, 1, False),
        ]

        assert store.resolve("mnist").version == 3
        assert store.resolve("mnist@production").version == 1
        with pytest.raises(NotFoundError, match=r"Versions: 1-3"):
            store.resolve("mnist@9")
        with pytest.raises(NotFoundError, match=r"Aliases: production -> v1"):
            store.resolve("mnist@staging")
        assert store.list_models()[0].aliases == {"production": 1}

    with Store(url=url, home=tmp_path / "home") as reopened:
        assert upgrade_to_head(reopened._engine) is False
        assert reopened.current_alias("mnist", "production").version == 1  # type: ignore[union-attr]


def test_concurrent_openers_and_registrations(url: str, tmp_path: Path) -> None:
    threads, each = 6, 5
    barrier = threading.Barrier(threads)
    got: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait()
            with Store(url=url, home=tmp_path / "home") as store:  # all migrate a fresh database at once
                for _ in range(each):
                    version = register(store)
                    with lock:
                        got.append(version)
        except BaseException as e:  # surfaced below
            errors.append(e)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    assert sorted(got) == list(range(1, threads * each + 1))


def test_a_failure_mid_run_leaves_no_rows(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("boom")

    with Store(url=url, home=tmp_path / "home") as store:
        register(store)
        monkeypatch.setattr(runs_module, "comparison_row", boom)
        with pytest.raises(RuntimeError, match="boom"):
            store.record_run(
                kind="comparison",
                document={},
                measurements=[Measurement("accuracy", "quality", 0.9)],
                comparisons=[Comparison("accuracy", "quality", 0.8, 0.9, 0.1, 0.0, 0.2, 0.01, "McNemar")],
                version="mnist@1",
                baseline=None,
                dataset_fingerprint="fp",
                split="test",
                passed=None,
                report_path=None,
            )
        with store._engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(RunRow)) == 0
            assert conn.scalar(select(func.count()).select_from(MeasurementRow)) == 0


def test_an_incident_rolls_the_alias_back_in_one_transaction(url: str, tmp_path: Path) -> None:
    from datetime import datetime

    with Store(url=url, home=tmp_path / "home") as store:
        for _ in range(2):
            store.promote(f"mnist@v{register(store)}", force=True, reason="test")
        now = datetime.now(UTC)
        incident = store.open_incident(
            "mnist", "production", 2, detector="features", statistic=9.0, threshold=4.0, window=0,
            window_start=now, window_end=now, detection={"window": 0}, rollback_after=2,
        )  # fmt: skip
        incident = store.extend_incident(incident.id, {"window": 1}, rollback_after=2)
        assert incident.action == "rollback_due" and store.list_incidents("mnist", due_only=True)
        done = store.rollback_incident(incident.id)
        assert done.action == "rolled_back" and done.rollback_event is not None
        assert store.current_alias("mnist", "production").version == 1  # type: ignore[union-attr]
        assert store.alias_history("mnist", "production")[-1].id == done.rollback_event.id
        assert store.rollback_incident(incident.id).action == "rolled_back"  # carried out once
        assert len(store.alias_history("mnist", "production")) == 3


def _driver(url: str, home: str, rounds: int, start: Any) -> list[int]:
    """A driver process: register a version, promote it (forced: nothing gates it here), now and then
    roll back; the versions it was given."""
    start.wait()
    got = []
    with Store(url=url, home=home) as store:
        for i in range(rounds):
            version = register(store)
            got.append(version)
            store.promote(f"mnist@{version}", force=True, reason="race")
            if i % 3 == 2:
                with contextlib.suppress(RefusedError):  # the other driver's rollbacks emptied the stack
                    store.rollback("mnist", reason="race")
    return got


def _reader(url: str, home: str, reads: int, start: Any) -> list[tuple[int, int]]:
    """A worker process reading while the drivers write: what production and the latest version were."""
    start.wait()
    seen = []
    with Store(url=url, home=home) as store:
        for _ in range(reads):
            current = store.current_alias("mnist", "production")
            latest = store.list_versions("mnist")[-1].version
            seen.append((current.version if current else 0, latest))
    return seen


def test_two_drivers_racing_and_workers_reading_keep_versions_and_history_consistent(
    url: str, tmp_path: Path
) -> None:
    import multiprocessing

    home = str(tmp_path / "home")
    with Store(url=url, home=home) as store:  # the schema, and a first version to read
        register(store)
        store.promote("mnist@1", reason="first")
    context = multiprocessing.get_context("spawn")  # no inherited engine or lock: separate programs
    start = context.Manager().Event()
    rounds, reads = 9, 40
    with context.Pool(6) as pool:
        drivers = [pool.apply_async(_driver, (url, home, rounds, start)) for _ in range(2)]
        readers = [pool.apply_async(_reader, (url, home, reads, start)) for _ in range(4)]
        start.set()
        given = [v for d in drivers for v in d.get(timeout=300)]
        seen = [s for r in readers for s in r.get(timeout=300)]
    # Versions: consecutive, each given once, whichever driver registered it.
    assert sorted(given) == list(range(2, 2 + 2 * rounds))
    with Store(url=url, home=home) as store:
        assert [v.version for v in store.list_versions("mnist")] == list(range(1, 2 + 2 * rounds))
        history = store.alias_history("mnist", "production")
        current = store.current_alias("mnist", "production")
    # The alias history is one chain: every move starts where the one before it left the alias.
    ordered = sorted(history, key=lambda e: e.id)
    assert ordered[0].from_version is None and ordered[0].to_version == 1
    for before, after in itertools.pairwise(ordered):
        assert after.from_version == before.to_version, (before, after)
    assert current is not None and current.version == ordered[-1].to_version
    # Every reader saw a version that existed, and production never pointed past the latest.
    assert len(seen) == 4 * reads and all(1 <= prod <= latest for prod, latest in seen)

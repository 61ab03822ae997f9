from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from assay.errors import NotFoundError, RefusedError, UsageError
from assay.store import Store, VersionInfo
from assay.store import versions as versions_module


def test_versions_are_numbered_per_model_and_keep_their_lineage(
    store: Store, register: Callable[..., VersionInfo], model_dir: Callable[..., Path]
) -> None:
    first = store.register_version(
        "mnist",
        artifact_dir=model_dir(),
        spec={"arch": "cnn"},
        config_hash="abc",
        parent=None,
        lineage={"datasets": ["fp1"], "recipe": "train.toml"},
        environment={"torch": "2.13.0"},
        metrics_summary={"accuracy": 0.91},
        description="digits",
    )
    second = register("mnist", parent="mnist@v1")
    other = register("fashion", parent="mnist@1")

    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.ref == "mnist@v1"
    assert store.artifacts.path(first.artifact_digest or "").is_dir()
    assert first.lineage == {"datasets": ["fp1"], "recipe": "train.toml"}
    assert first.metrics_summary == {"accuracy": 0.91}
    assert first.gate_status == "none"
    assert first.created_at.tzinfo is not None
    assert second.parent == "mnist@v1" and other.parent == "mnist@v1"
    assert [v.version for v in store.list_versions("mnist")] == [1, 2]


def test_resolve_reads_every_reference_form(store: Store, register: Callable[..., VersionInfo]) -> None:
    for _ in range(3):
        register("mnist")
    store.promote("mnist@2", "production")

    assert store.resolve("mnist").version == 3
    assert store.resolve("mnist@1").version == 1
    assert store.resolve("mnist@v1").version == 1
    assert store.resolve("mnist@production").version == 2
    assert store.resolve("mnist@production").aliases == ("production",)


def test_unknown_references_say_what_exists(store: Store, register: Callable[..., VersionInfo]) -> None:
    with pytest.raises(NotFoundError, match="has no models yet"):
        store.resolve("mnist")
    register("mnist")
    register("mnist")
    register("fashion")
    store.promote("mnist@1", "staging")

    with pytest.raises(NotFoundError, match=r"No model named 'cifar'\. Known models: fashion, mnist\."):
        store.resolve("cifar@1")
    with pytest.raises(NotFoundError, match=r"'mnist' has no version 7\. Versions: 1-2\."):
        store.resolve("mnist@v7")
    with pytest.raises(NotFoundError, match=r"'mnist' has no alias 'production'\. Aliases: staging -> v1\."):
        store.resolve("mnist@production")
    with pytest.raises(NotFoundError, match=r"Aliases: none yet"):
        store.resolve("fashion@production")
    with pytest.raises(NotFoundError, match="cifar"):
        store.list_versions("cifar")


@pytest.mark.parametrize("ref", ["", "mnist@", "@1", "mnist@0", "mnist@3x", "a@b@c", "bad name", "mnist@-x"])
def test_malformed_references_are_usage_errors(store: Store, ref: str) -> None:
    with pytest.raises(UsageError):
        store.resolve(ref)


def test_list_models_gives_latest_version_and_aliases(
    store: Store, register: Callable[..., VersionInfo]
) -> None:
    register("mnist", description="digits")
    register("mnist")
    register("fashion")
    store.promote("mnist@1")

    models = {m.name: m for m in store.list_models()}
    assert list(models) == ["fashion", "mnist"]
    assert models["mnist"].n_versions == 2
    assert models["mnist"].latest.version == 2
    assert models["mnist"].aliases == {"production": 1}
    assert models["mnist"].description == "digits"
    assert models["fashion"].aliases == {}


def _register_in_threads(make_store: Callable[[], Store], threads: int, each: int) -> list[int]:
    barrier = threading.Barrier(threads)
    got: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait()
            store = make_store()
            for _ in range(each):
                info = store.register_version(
                    "mnist",
                    artifact_dir=None,
                    spec={},
                    config_hash="c",
                    parent=None,
                    lineage={},
                    environment={},
                )
                with lock:
                    got.append(info.version)
        except BaseException as e:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(e)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    return got


def test_concurrent_registrations_through_one_store_get_distinct_consecutive_numbers(store: Store) -> None:
    got = _register_in_threads(lambda: store, threads=8, each=4)
    assert sorted(got) == list(range(1, 33))
    assert [v.version for v in store.list_versions("mnist")] == list(range(1, 33))


def test_concurrent_stores_opening_a_fresh_database_migrate_once_and_number_distinctly(home: Path) -> None:
    opened: list[Store] = []

    def open_store() -> Store:
        s = Store(home=home)
        opened.append(s)
        return s

    got = _register_in_threads(open_store, threads=6, each=3)
    assert sorted(got) == list(range(1, 19))
    for s in opened:
        s.close()


def test_a_taken_version_number_is_retried(
    store: Store, register: Callable[..., VersionInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    register("mnist")
    real = versions_module.next_version
    calls: list[int] = []

    def stale_then_real(session: Session, model_id: int) -> int:
        # The first attempt sees the table as another writer would have before our read: version 1 is
        # taken, so the insert fails on the unique constraint and the store must retry.
        calls.append(model_id)
        return 1 if len(calls) == 1 else real(session, model_id)

    monkeypatch.setattr(versions_module, "next_version", stale_then_real)
    assert register("mnist").version == 2
    assert len(calls) == 2


def test_a_conflict_that_never_clears_is_refused_and_writes_nothing(
    store: Store,
    register: Callable[..., VersionInfo],
    rows: Callable[[], dict[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register("mnist")
    before = rows()
    monkeypatch.setattr(versions_module, "next_version", lambda session, model_id: 1)
    with pytest.raises(RefusedError, match="nothing was written"):
        register("mnist")
    assert rows() == before


def test_version_records_are_detached_and_frozen(store: Store, register: Callable[..., VersionInfo]) -> None:
    info: VersionInfo = register("mnist")
    with pytest.raises(AttributeError):
        info.version = 5  # type: ignore[misc]
    assert store.resolve("mnist").version == 1


def test_bad_names_and_values_are_refused_before_writing(
    store: Store, register: Callable[..., VersionInfo], rows: Callable[[], dict[str, int]]
) -> None:
    with pytest.raises(UsageError, match="Model name"):
        register("has@at")
    with pytest.raises(UsageError, match=r"lineage\.when"):
        register("mnist", lineage={"when": object()})
    with pytest.raises(NotFoundError, match="No model named 'ghost'"):
        register("mnist", parent="ghost@1")
    assert sum(rows().values()) == 0

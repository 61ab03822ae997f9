"""Models and their versions inside one session: look-ups, reference resolution, version numbering.

Every function takes the caller's session, so a look-up and the write that depends on it share one
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from assay.errors import NotFoundError
from assay.store.records import GateStatus, ModelInfo, VersionInfo, version_ref
from assay.store.refs import parse_ref
from assay.store.tables import AliasRow, ModelRow, VersionRow


def find_model(session: Session, name: str) -> ModelRow:
    model = session.scalar(select(ModelRow).where(ModelRow.name == name))
    if model is None:
        known = session.scalars(select(ModelRow.name).order_by(ModelRow.name)).all()
        listing = f"Known models: {', '.join(known)}." if known else "The registry has no models yet."
        raise NotFoundError(f"No model named {name!r}. {listing}")
    return model


def resolve(session: Session, ref: str) -> VersionRow:
    """The version a reference names; NotFoundError lists the versions or aliases that do exist."""
    parsed = parse_ref(ref)
    model = find_model(session, parsed.model)
    if parsed.alias is not None:
        row = session.scalar(
            select(VersionRow)
            .join(AliasRow, AliasRow.version_id == VersionRow.id)
            .where(AliasRow.model_id == model.id, AliasRow.name == parsed.alias)
        )
        if row is None:
            aliases = alias_map(session, model.id)
            listing = ", ".join(f"{a} -> v{v}" for a, v in aliases.items()) or "none yet"
            raise NotFoundError(
                f"Model {model.name!r} has no alias {parsed.alias!r}. Aliases: {listing}. "
                "Promote a version to create it."
            )
        return row
    query = select(VersionRow).where(VersionRow.model_id == model.id)
    if parsed.version is None:
        row = session.scalar(query.order_by(VersionRow.version.desc()).limit(1))
    else:
        row = session.scalar(query.where(VersionRow.version == parsed.version))
    if row is None:
        numbers = session.scalars(
            select(VersionRow.version).where(VersionRow.model_id == model.id).order_by(VersionRow.version)
        ).all()
        wanted = f"version {parsed.version}" if parsed.version is not None else "versions"
        raise NotFoundError(f"Model {model.name!r} has no {wanted}. Versions: {_ranges(numbers) or 'none'}.")
    return row


def lock_model(session: Session, model_id: int) -> None:
    """Hold the model's row lock until commit, so that writers of one model's versions and aliases queue
    instead of colliding. Without it, PostgreSQL writers at READ COMMITTED all read the same highest
    version and all but one fail, again and again under load. SQLite has no row locks and needs none:
    write transactions there already hold the database's write lock (BEGIN IMMEDIATE)."""
    # key_share: PostgreSQL's FOR NO KEY UPDATE, which still lets other transactions insert rows that
    # refer to the model; it only queues the writers that take this same lock.
    session.execute(select(ModelRow.id).where(ModelRow.id == model_id).with_for_update(key_share=True))


def next_version(session: Session, model_id: int) -> int:
    """One more than the highest version so far. Should two writers still read the same number, the
    unique constraint on (model_id, version) fails the second, which retries."""
    highest = session.scalar(select(func.max(VersionRow.version)).where(VersionRow.model_id == model_id))
    return (highest or 0) + 1


def alias_map(session: Session, model_id: int) -> dict[str, int]:
    rows = session.execute(
        select(AliasRow.name, VersionRow.version)
        .join(VersionRow, AliasRow.version_id == VersionRow.id)
        .where(AliasRow.model_id == model_id)
        .order_by(AliasRow.name)
    ).all()
    return {name: version for name, version in rows}


def version_number(session: Session, version_id: int | None) -> int | None:
    if version_id is None:
        return None
    return session.get_one(VersionRow, version_id).version


def version_ref_of(session: Session, version_id: int | None) -> str | None:
    if version_id is None:
        return None
    row = session.get_one(VersionRow, version_id)
    return version_ref(session.get_one(ModelRow, row.model_id).name, row.version)


def version_infos(session: Session, rows: Sequence[VersionRow]) -> list[VersionInfo]:
    """Records for version rows, with their model names and current aliases, in a few queries."""
    ids = [row.id for row in rows]
    names = dict(
        session.execute(
            select(ModelRow.id, ModelRow.name).where(ModelRow.id.in_({r.model_id for r in rows}))
        ).all()
    )
    aliases: dict[int, list[str]] = {}
    for alias, version_id in session.execute(
        select(AliasRow.name, AliasRow.version_id).where(AliasRow.version_id.in_(ids)).order_by(AliasRow.name)
    ):
        aliases.setdefault(version_id, []).append(alias)
    return [
        VersionInfo(
            id=row.id,
            model=names[row.model_id],
            version=row.version,
            artifact_digest=row.artifact_digest,
            spec=row.spec,
            config_hash=row.config_hash,
            parent=version_ref_of(session, row.parent_version_id),
            lineage=row.lineage,
            environment=row.environment,
            gate_status=cast(GateStatus, row.gate_status),
            gate_run_id=row.gate_run_id,
            metrics_summary=row.metrics_summary,
            created_at=row.created_at,
            aliases=tuple(aliases.get(row.id, ())),
        )
        for row in rows
    ]


def version_info(session: Session, row: VersionRow) -> VersionInfo:
    return version_infos(session, [row])[0]


def model_infos(session: Session) -> list[ModelInfo]:
    per_model = (
        select(
            VersionRow.model_id,
            func.max(VersionRow.version).label("latest"),
            func.count().label("n_versions"),
        )
        .group_by(VersionRow.model_id)
        .subquery()
    )
    rows = session.execute(
        select(ModelRow, VersionRow, per_model.c.n_versions)
        .join(per_model, per_model.c.model_id == ModelRow.id)
        .join(
            VersionRow,
            (VersionRow.model_id == ModelRow.id) & (VersionRow.version == per_model.c.latest),
        )
        .order_by(ModelRow.name)
    ).all()
    latest = version_infos(session, [version for _, version, _ in rows])
    return [
        ModelInfo(
            name=model.name,
            description=model.description,
            created_at=model.created_at,
            n_versions=n_versions,
            latest=info,
            aliases=alias_map(session, model.id),
        )
        for (model, _, n_versions), info in zip(rows, latest, strict=True)
    ]


def _ranges(numbers: Sequence[int]) -> str:
    """'1-3, 5' for [1, 2, 3, 5]: keeps the message short for models with many versions."""
    parts: list[str] = []
    start = prev = None
    for n in [*numbers, None]:
        if n is not None and prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = n
    return ", ".join(parts)

"""Moving aliases (production, staging, ...) and their append-only history, inside the caller's session.

Each move changes the alias row and appends one history row in the same transaction, under the model's
row lock (``versions.lock_model``), so moves of one model's aliases queue. The alias row is also
changed with a compare-and-set (``UPDATE ... WHERE version_id = <the version we read>``): if another
writer moved it in between, nothing is updated and ``ConcurrentChange`` tells the caller to retry the
whole transaction with fresh reads, so history never records a move from a version the alias had left.
"""

from __future__ import annotations

import getpass
from typing import cast

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from assay.errors import RefusedError
from assay.store.history import Move, rollback_target
from assay.store.records import AliasAction, AliasChange, AliasEvent
from assay.store.refs import check_alias_name
from assay.store.tables import AliasHistoryRow, AliasRow, ModelRow, VersionRow, utcnow
from assay.store.versions import lock_model, version_number


class ConcurrentChange(Exception):
    """Another transaction moved the alias between our read and our write; retry."""


def promote(
    session: Session,
    version: VersionRow,
    alias: str,
    *,
    force: bool,
    reason: str | None,
    actor: str | None,
) -> AliasChange:
    check_alias_name(alias)
    model = session.get_one(ModelRow, version.model_id)
    lock_model(session, model.id)
    current = _alias_row(session, model.id, alias)
    if current is not None and current.version_id == version.id:
        return AliasChange(
            model=model.name,
            alias=alias,
            from_version=version.version,
            to_version=version.version,
            changed=False,
            message=f"{model.name}@{alias} already points at v{version.version}; nothing changed.",
            event=None,
        )
    # A version may take over an alias only with a passed gate; an ungated one only as the alias's first
    # holder (a first release has nothing to be compared with). Anything else needs --force, recorded.
    refusal = None
    if version.gate_status == "failed":
        refusal = f"its gate failed (run {version.gate_run_id}). Fix the model and gate it again"
    elif version.gate_status == "none" and current is not None:
        refusal = (
            f"it was never gated. Gate it against the version the alias holds first "
            f"(assay gate {model.name}@{alias} {model.name}@v{version.version})"
        )
    if refusal is not None and not force:
        raise RefusedError(
            f"Refusing to promote {model.name}@v{version.version} to {alias!r}: {refusal}, or pass --force "
            "with a reason to override; a forced promotion is recorded in the alias history."
        )
    forced = refusal is not None  # the override was needed, and used
    from_id = current.version_id if current is not None else None
    _move(session, model.id, alias, current, version.id)
    event = append_history(
        session,
        model,
        alias,
        from_version_id=from_id,
        to_version_id=version.id,
        action="promote",
        forced=forced,
        reason=reason,
        actor=actor,
    )
    moved = f"from v{event.from_version}" if event.from_version is not None else "(new alias)"
    note = f" (forced past: gate {version.gate_status})" if forced else ""
    return AliasChange(
        model=model.name,
        alias=alias,
        from_version=event.from_version,
        to_version=version.version,
        changed=True,
        message=f"Promoted {model.name}@{alias} to v{version.version} {moved}{note}.",
        event=event,
    )


def rollback(
    session: Session, model: ModelRow, alias: str, *, reason: str | None, actor: str | None
) -> AliasChange:
    """Move the alias back to the version beneath the current one on its promotion stack
    (see ``assay.store.history``)."""
    check_alias_name(alias)
    lock_model(session, model.id)
    current = _alias_row(session, model.id, alias)
    if current is None:
        raise RefusedError(f"Model {model.name!r} has no alias {alias!r}, so there is nothing to roll back.")
    moves = session.execute(
        select(AliasHistoryRow.action, AliasHistoryRow.to_version_id)
        .where(AliasHistoryRow.model_id == model.id, AliasHistoryRow.alias == alias)
        .order_by(AliasHistoryRow.id)
    )
    target_id = rollback_target((Move(action, to) for action, to in moves), current.version_id)
    current_number = version_number(session, current.version_id)
    if target_id is None:
        raise RefusedError(
            f"Cannot roll back {model.name}@{alias} (at v{current_number}): no earlier promotion is still in "
            "effect to return to (earlier ones were rolled back already, or there were none). "
            "Promote the version you want instead."
        )
    from_id = current.version_id
    _move(session, model.id, alias, current, target_id)
    event = append_history(
        session,
        model,
        alias,
        from_version_id=from_id,
        to_version_id=target_id,
        action="rollback",
        forced=False,
        reason=reason,
        actor=actor,
    )
    return AliasChange(
        model=model.name,
        alias=alias,
        from_version=current_number,
        to_version=event.to_version,
        changed=True,
        message=f"Rolled back {model.name}@{alias} from v{current_number} to v{event.to_version}.",
        event=event,
    )


def append_history(
    session: Session,
    model: ModelRow,
    alias: str,
    *,
    from_version_id: int | None,
    to_version_id: int,
    action: AliasAction,
    forced: bool,
    reason: str | None,
    actor: str | None,
) -> AliasEvent:
    row = AliasHistoryRow(
        model_id=model.id,
        alias=alias,
        from_version_id=from_version_id,
        to_version_id=to_version_id,
        action=action,
        forced=forced,
        reason=reason,
        actor=actor if actor is not None else login_name(),
        at=utcnow(),
    )
    session.add(row)
    session.flush()
    return event_info(session, model.name, row)


def history(session: Session, model: ModelRow, alias: str | None) -> list[AliasEvent]:
    query = select(AliasHistoryRow).where(AliasHistoryRow.model_id == model.id)
    if alias is not None:
        query = query.where(AliasHistoryRow.alias == check_alias_name(alias))
    return [
        event_info(session, model.name, row) for row in session.scalars(query.order_by(AliasHistoryRow.id))
    ]


def event_info(session: Session, model_name: str, row: AliasHistoryRow) -> AliasEvent:
    to_version = version_number(session, row.to_version_id)
    assert to_version is not None  # to_version_id is NOT NULL
    return AliasEvent(
        id=row.id,
        model=model_name,
        alias=row.alias,
        from_version=version_number(session, row.from_version_id),
        to_version=to_version,
        action=cast(AliasAction, row.action),
        forced=row.forced,
        reason=row.reason,
        actor=row.actor,
        at=row.at,
    )


def _alias_row(session: Session, model_id: int, alias: str) -> AliasRow | None:
    return session.scalar(select(AliasRow).where(AliasRow.model_id == model_id, AliasRow.name == alias))


def _move(session: Session, model_id: int, alias: str, current: AliasRow | None, to_version_id: int) -> None:
    if current is None:
        # A concurrent creator of the same alias makes this insert fail on UNIQUE(model_id, name) at
        # flush; the caller retries and then finds the alias.
        session.add(AliasRow(model_id=model_id, name=alias, version_id=to_version_id, updated_at=utcnow()))
        session.flush()
        return
    result = session.execute(
        update(AliasRow)
        .where(AliasRow.id == current.id, AliasRow.version_id == current.version_id)
        .values(version_id=to_version_id, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConcurrentChange(f"alias {alias!r} moved while it was being changed")


def login_name() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry, as in some containers
        return None

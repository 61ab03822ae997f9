"""Where a rollback goes, worked out from an alias's history alone.

The history is replayed as a stack of promotions still in effect:

- ``promote`` to version X pushes X (forced or not);
- ``rollback`` pops the top, which uncovers the version the rollback moved to.

The top of the stack is where the alias points now; a rollback goes to the entry beneath it. So a
rollback undoes the newest promotion still in effect, and repeated rollbacks walk further back instead of
bouncing between two versions::

    promote v1, promote v2, promote v3   stack [1, 2, 3]   alias at v3
    rollback                             stack [1, 2]      alias at v2
    rollback                             stack [1]         alias at v1
    rollback                             refused: nothing left to undo
    promote v3, rollback                 stack [1]         alias at v1 again

Promoting an older version again is a new promotion: after ``promote v1, promote v2, promote v1`` a
rollback returns to v2. The first rollback after plain promotions always goes to the ``from_version`` of
the newest entry, the version the alias left when it moved to the current one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Move(NamedTuple):
    action: str  # "promote" | "rollback"
    to_version_id: int


def promotion_stack(moves: Iterable[Move]) -> list[int]:
    """Version ids of the promotions still in effect, oldest first, from moves in the order they were made."""
    stack: list[int] = []
    for move in moves:
        if move.action == "rollback":
            if stack:
                stack.pop()
            # A rollback always lands on the entry beneath; if the stack ran dry the history is truncated
            # or edited, and the landing version is the best record of where the alias went.
            if not stack or stack[-1] != move.to_version_id:
                stack.append(move.to_version_id)
        else:
            stack.append(move.to_version_id)
    return stack


def rollback_target(moves: Iterable[Move], current_version_id: int) -> int | None:
    """The version id a rollback should move to, or None if there is nothing to roll back to."""
    stack = promotion_stack(moves)
    if len(stack) < 2 or stack[-1] != current_version_id:
        return None
    return stack[-2]

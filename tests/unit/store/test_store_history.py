from __future__ import annotations

import pytest

from assay.store.history import Move, promotion_stack, rollback_target


def replay(*steps: tuple[str, int]) -> list[Move]:
    return [Move(action, to) for action, to in steps]


@pytest.mark.parametrize(
    ("steps", "current", "target"),
    [
        ([], 1, None),
        ([("promote", 1)], 1, None),
        ([("promote", 1), ("promote", 2)], 2, 1),
        ([("promote", 1), ("promote", 2), ("promote", 3), ("rollback", 2)], 2, 1),
        ([("promote", 1), ("promote", 2), ("rollback", 1)], 1, None),
        ([("promote", 1), ("promote", 2), ("promote", 1)], 1, 2),
        ([("promote", 1), ("promote", 2), ("rollback", 1), ("promote", 3)], 3, 1),
        ([("promote", 1), ("promote", 2)], 1, None),  # history does not end where the alias is
    ],
)
def test_rollback_target(steps: list[tuple[str, int]], current: int, target: int | None) -> None:
    assert rollback_target(replay(*steps), current) == target


def test_a_rollback_landing_off_the_stack_is_taken_as_the_new_top() -> None:
    # Only a truncated or hand-edited history does this; the landing version is where the alias went.
    assert promotion_stack(replay(("rollback", 5))) == [5]
    assert promotion_stack(replay(("promote", 1), ("promote", 2), ("rollback", 7))) == [1, 7]

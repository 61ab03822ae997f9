"""Files written whole or not at all: a temporary file beside the final name, renamed into place."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; it replaces ``path`` when the block ends,
    and is removed if the block raises, so a crash or Ctrl-C leaves the old file or none, never half a one.

    The name is random rather than from ``mkstemp``, which makes files owner-only (0600): the result has
    the permissions the umask gives any new file, as a file a user asked for should.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

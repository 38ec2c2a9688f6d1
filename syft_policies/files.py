"""A hospital's records are readable by its own account only: every file made 0600.

SQLite copies the database file's mode to its ``-wal`` and ``-shm`` files, so creating
the database file 0600 first covers them too.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_file", "write_private"]


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists with mode 0600 (its directory 0700 if we create it)."""
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    return path


def write_private(path: Path, data: bytes | str) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600 (a crash leaves the old or the new)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

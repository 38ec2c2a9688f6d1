"""Every attempt counts: the site's record of executions, with limits and back-off.

An attempt is recorded *before* the code runs, so a crash leaves it counted (it reads
``interrupted`` after a restart). Released, blocked, failed, refused and timed-out
attempts all count against the request's execution limit; after two failed or blocked
attempts in a row, each further one must wait twice as long as the last (5 s, 10 s, 20 s
... up to an hour), so a researcher cannot probe the release policy or the error path in
a loop. One researcher has at most ``MAX_RUNNING`` executions in flight at a site.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

__all__ = ["ExecutionStore", "AttemptRefused", "EXECUTIONS_FILE", "FAILED"]

EXECUTIONS_FILE = "executions.sqlite"
FAILED = ("blocked", "error", "timeout", "limit", "refused", "crashed", "interrupted")
MAX_RUNNING = 8  # executions one researcher may have in flight at a site (each holds a server thread)
FREE_FAILURES = 2
FIRST_WAIT = 5.0
MAX_WAIT = 3600.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (id INTEGER PRIMARY KEY AUTOINCREMENT, code TEXT NOT NULL,
    request TEXT NOT NULL, researcher TEXT NOT NULL, started REAL NOT NULL, finished REAL,
    outcome TEXT NOT NULL, epsilon REAL NOT NULL DEFAULT 0, error_id TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS attempts_code ON attempts (code);
"""


class AttemptRefused(PermissionError):
    """No attempt is allowed now; the message says why and when."""


class ExecutionStore:
    def __init__(self, path: Path):
        from syft_policies.files import private_file

        self.path = private_file(Path(path))
        with closing(self._connect()) as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def recover(self) -> int:
        """Attempts a crashed datasite left running now read ``interrupted`` (they still count)."""
        with closing(self._connect()) as db:
            return db.execute("UPDATE attempts SET outcome='interrupted', finished=? WHERE outcome='running'",
                              (time.time(),)).rowcount

    def begin(self, *, code: str, request: str, researcher: str, limit: int | None, now: float | None = None) -> int:
        """Record a new attempt, or raise :class:`AttemptRefused` (limit used up, or back off)."""
        now = time.time() if now is None else now
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute("SELECT outcome, COALESCE(finished, started) FROM attempts WHERE code=? "
                                  "ORDER BY id", (code,)).fetchall()
                running = db.execute("SELECT COUNT(*) FROM attempts WHERE researcher=? AND outcome='running'",
                                     (researcher,)).fetchone()[0]
                if running >= MAX_RUNNING:
                    raise AttemptRefused(f"{running} of your executions are still running at this site; "
                                         "wait for them to finish")
                if limit is not None and len(rows) >= limit:
                    raise AttemptRefused(f"this request allows {limit} execution(s) and all are used "
                                         "(blocked, failed and timed-out attempts count too)")
                failures = 0
                for outcome, _ in reversed(rows):
                    if outcome not in FAILED:
                        break
                    failures += 1
                if failures >= FREE_FAILURES:
                    wait = min(MAX_WAIT, FIRST_WAIT * 2.0 ** (failures - FREE_FAILURES))
                    ready = rows[-1][1] + wait
                    if now < ready:
                        raise AttemptRefused(f"{failures} blocked or failed attempts in a row; try again in "
                                             f"{ready - now:.0f} s")
                cursor = db.execute("INSERT INTO attempts (code, request, researcher, started, outcome) "
                                    "VALUES (?, ?, ?, ?, 'running')", (code, request, researcher, now))
                db.execute("COMMIT")
                return int(cursor.lastrowid)
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def finish(self, attempt: int, outcome: str, *, epsilon: float = 0.0, error_id: str = "") -> None:
        with closing(self._connect()) as db:
            db.execute("UPDATE attempts SET outcome=?, finished=?, epsilon=?, error_id=? WHERE id=?",
                       (outcome, time.time(), float(epsilon), error_id, attempt))

    def attempts(self, code: str | None = None) -> list[dict]:
        query = "SELECT id, code, request, researcher, started, finished, outcome, epsilon, error_id FROM attempts"
        with closing(self._connect()) as db:
            rows = db.execute(query + (" WHERE code=?" if code else "") + " ORDER BY id", (code,) if code else ())
            keys = ("id", "code", "request", "researcher", "started", "finished", "outcome", "epsilon", "error_id")
            return [dict(zip(keys, r)) for r in rows]

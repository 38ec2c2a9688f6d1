"""The tamper-evident audit log of one hospital: append-only, hash-chained JSON lines.

Each line carries its sequence number, the previous line's hash and its own hash
(SHA-256 over the canonical JSON of everything else). Editing a line breaks its hash,
removing or swapping lines breaks the sequence and the chain, and a separate head file
(count and last hash, replaced atomically on every append) catches a truncated tail. The
head is also anchored in the site's ledger database beside the log (``ANCHOR_FILE``), so
deleting the log and its head together does not verify as a fresh, intact log.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .files import private_file, write_private

__all__ = ["AuditLog", "Verification", "AUDIT_FILE"]

AUDIT_FILE = "audit.jsonl"
ANCHOR_FILE = "ledger.sqlite"  # the site's privacy ledger, beside the log
GENESIS = "0" * 64
_ANCHOR = "CREATE TABLE IF NOT EXISTS audit_anchor (id INTEGER PRIMARY KEY CHECK (id = 1), entries INTEGER NOT NULL, " \
          "hash TEXT NOT NULL)"


def _hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    line: int | None = None  # 1-based line of the first problem
    problem: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"audit log intact: {self.entries} entries, hash chain verified"
        return f"audit log TAMPERED at line {self.line}: {self.problem}"


class AuditLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.head = self.path.with_suffix(".head")
        self.anchor = self.path.parent / ANCHOR_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _anchored(self) -> tuple[int, str] | None:
        """The (entries, hash) the ledger holds for this log; None without a ledger beside it."""
        if not self.anchor.exists():
            return None
        import sqlite3
        from contextlib import closing

        with closing(sqlite3.connect(self.anchor, timeout=60)) as db:
            db.execute(_ANCHOR)
            row = db.execute("SELECT entries, hash FROM audit_anchor WHERE id = 1").fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def _anchor(self, entries: int, last: str) -> None:
        if not self.anchor.exists():
            return
        import sqlite3
        from contextlib import closing

        with closing(sqlite3.connect(self.anchor, timeout=60)) as db, db:
            db.execute(_ANCHOR)
            db.execute("INSERT OR REPLACE INTO audit_anchor VALUES (1, ?, ?)", (entries, last))

    @contextmanager
    def _locked(self):
        with open(private_file(self.path.with_suffix(".lock")), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _head(self) -> tuple[int, str]:
        if not self.head.exists():
            return 0, GENESIS
        data = json.loads(self.head.read_text())
        return int(data["entries"]), data["hash"]

    def append(self, event: str, **fields) -> dict:
        """Record ``event`` (submitted, reviewed, approved, denied, executed, ...) with its details."""
        with self._locked():
            count, last = self._head()
            anchored = self._anchored()
            if anchored is not None and anchored[0] > count:  # appending would start a new chain over a lost one
                raise OSError(f"the audit log {self.path.name} has {count} entries but the ledger's anchor records "
                              f"{anchored[0]}; restore the log from a backup")
            record = {"seq": count + 1, "at": round(time.time(), 3), "event": event, **fields, "prev": last}
            record["hash"] = _hash(record)
            with open(private_file(self.path), "a") as fh:
                fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            write_private(self.head, json.dumps({"entries": record["seq"], "hash": record["hash"]}))
            self._anchor(record["seq"], record["hash"])
        return record

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def verify(self) -> Verification:
        """Check every line's hash, sequence and link, and the tail against the head file."""
        prev, n = GENESIS, 0
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        for n, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return Verification(False, n - 1, n, "not valid JSON")
            if record.get("seq") != n:
                return Verification(False, n - 1, n, f"sequence {record.get('seq')} where {n} was expected "
                                    "(a line was removed, inserted or moved)")
            if record.get("prev") != prev:
                return Verification(False, n - 1, n, "does not link to the previous line's hash")
            if record.get("hash") != _hash(record):
                return Verification(False, n - 1, n, "content does not match its hash (edited)")
            prev = record["hash"]
        count, last = self._head()
        if count != len(lines) or last != prev:
            return Verification(False, len(lines), len(lines) + 1 if count > len(lines) else count + 1,
                                f"the head records {count} entries ending in {last[:12]}, the log has "
                                f"{len(lines)} ending in {prev[:12]} (lines removed from or added to the end)")
        anchored = self._anchored()  # behind the head after a crash between the two writes, never ahead
        if anchored is not None and anchored[0] > 0:
            entries, digest = anchored
            if entries > len(lines) or json.loads(lines[entries - 1]).get("hash") != digest:
                return Verification(False, len(lines), min(entries, len(lines) + 1),
                                    f"the ledger's anchor records {entries} entries ending in {digest[:12]}; the "
                                    f"log has {len(lines)} (the log, or the log and its head, were replaced)")
        return Verification(True, len(lines))

"""The privacy-budget ledger of one hospital: epsilon per dataset (optionally per
researcher), persistent in SQLite in the site's directory.

Every debit is an atomic check-and-debit (``BEGIN IMMEDIATE`` serialises writers across
threads and processes), so parallel executions can never spend more than the budget.
Nothing is ever updated or deleted: the balance is the budget minus the sum of debits.
"""

from __future__ import annotations

import math
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from .refusals import Refused

__all__ = ["BudgetLedger", "BudgetExceeded", "ANY_RESEARCHER"]

ANY_RESEARCHER = "*"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS budgets (dataset TEXT NOT NULL, researcher TEXT NOT NULL, epsilon REAL NOT NULL,
                                    set_at REAL NOT NULL, PRIMARY KEY (dataset, researcher));
CREATE TABLE IF NOT EXISTS debits (id INTEGER PRIMARY KEY AUTOINCREMENT, dataset TEXT NOT NULL,
                                   researcher TEXT NOT NULL, epsilon REAL NOT NULL, reference TEXT NOT NULL,
                                   at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS once_refs (dataset TEXT NOT NULL, researcher TEXT NOT NULL, reference TEXT NOT NULL,
                                      debit INTEGER NOT NULL, PRIMARY KEY (dataset, researcher, reference));
"""


class BudgetExceeded(Refused):
    """The privacy budget cannot cover this; the message gives the numbers."""


class BudgetLedger:
    def __init__(self, path: Path):
        from .files import private_file

        self.path = private_file(Path(path))
        with closing(self._connect()) as db, db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def set_budget(self, dataset: str, epsilon: float, *, researcher: str = ANY_RESEARCHER) -> None:
        if not math.isfinite(epsilon) or epsilon < 0:
            raise ValueError(f"a budget must be a finite, non-negative number, got {epsilon}")
        with closing(self._connect()) as db:
            db.execute("INSERT OR REPLACE INTO budgets VALUES (?, ?, ?, ?)", (dataset, researcher, epsilon, time.time()))

    def ensure_budget(self, dataset: str, epsilon: float) -> None:
        """Set the dataset's budget only if none is set (provisioning is idempotent)."""
        if self.budget(dataset) is None:
            self.set_budget(dataset, epsilon)

    def budget(self, dataset: str, *, researcher: str = ANY_RESEARCHER) -> float | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT epsilon FROM budgets WHERE dataset=? AND researcher=?",
                             (dataset, researcher)).fetchone()
        return None if row is None else float(row[0])

    def _remaining(self, db, dataset: str, researcher: str) -> float:
        caps = []
        for who in {ANY_RESEARCHER, researcher}:
            row = db.execute("SELECT epsilon FROM budgets WHERE dataset=? AND researcher=?", (dataset, who)).fetchone()
            if row is None:
                continue
            query = "SELECT COALESCE(SUM(epsilon), 0) FROM debits WHERE dataset=?"
            args: tuple = (dataset,)
            if who != ANY_RESEARCHER:
                query, args = query + " AND researcher=?", (dataset, who)
            caps.append(float(row[0]) - float(db.execute(query, args).fetchone()[0]))
        if not caps:
            raise BudgetExceeded(f"no privacy budget is set for dataset {dataset!r} at this site; "
                                 "the data owner sets one (medsyft budget set)")
        return min(caps)

    def remaining(self, dataset: str, *, researcher: str = ANY_RESEARCHER) -> float:
        with closing(self._connect()) as db:
            return self._remaining(db, dataset, researcher)

    def spent(self, dataset: str) -> float:
        with closing(self._connect()) as db:
            return float(db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM debits WHERE dataset=?",
                                    (dataset,)).fetchone()[0])

    def check(self, dataset: str, epsilon: float, *, researcher: str = ANY_RESEARCHER) -> float:
        """Raise :class:`BudgetExceeded` unless ``epsilon`` fits; returns what is left now."""
        left = self.remaining(dataset, researcher=researcher)
        if epsilon > left + 1e-12:
            raise BudgetExceeded(f"needs epsilon {epsilon:.3f} but only {max(left, 0):.3f} of {dataset!r}'s "
                                 "privacy budget is left at this site")
        return left

    def debit(self, dataset: str, epsilon: float, *, reference: str, researcher: str = ANY_RESEARCHER,
              once: bool = False) -> float:
        """Atomically check that ``epsilon`` fits and record it; returns what is left after."""
        return self.debit_all([dataset], epsilon, reference=reference, researcher=researcher, once=once)

    def debit_all(self, datasets, epsilon: float, *, reference: str, researcher: str = ANY_RESEARCHER,
                  once: bool = False) -> float:
        """Debit ``epsilon`` from every dataset in ``datasets`` in one transaction (an execution
        that reads two datasets pays at both, or at neither); returns the least left after.

        ``once``: the reference names one release (a study's round, its k-th evaluation); a
        second debit under it is not applied again (an execution cut short after paying, then
        repeated, pays once). :attr:`repeated` says whether this call was such a repeat."""
        if not math.isfinite(epsilon) or epsilon < 0:
            raise ValueError(f"cannot debit {epsilon}: epsilon must be finite and non-negative")
        lefts, self.repeated, self.debit_ids = [], False, []
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for dataset in dict.fromkeys(datasets):
                    left = self._remaining(db, dataset, researcher)
                    if once and db.execute("SELECT 1 FROM once_refs WHERE dataset=? AND researcher=? AND "
                                           "reference=?", (dataset, researcher, reference)).fetchone():
                        self.repeated = True
                        lefts.append(left)
                        continue
                    if epsilon > left + 1e-12:
                        raise BudgetExceeded(f"needs epsilon {epsilon:.3f} but only {max(left, 0):.3f} of "
                                             f"{dataset!r}'s privacy budget is left at this site")
                    row = db.execute("INSERT INTO debits (dataset, researcher, epsilon, reference, at) "
                                     "VALUES (?, ?, ?, ?, ?)", (dataset, researcher, epsilon, reference, time.time()))
                    self.debit_ids.append(int(row.lastrowid))
                    if once:
                        db.execute("INSERT INTO once_refs VALUES (?, ?, ?, ?)",
                                   (dataset, researcher, reference, row.lastrowid))
                    lefts.append(left - epsilon)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return min(lefts)

    def statement(self, researcher: str = ANY_RESEARCHER) -> list[dict]:
        """Per dataset: the site's budget, what is spent, and what ``researcher`` may still spend."""
        with closing(self._connect()) as db:
            datasets = [r[0] for r in db.execute("SELECT DISTINCT dataset FROM budgets ORDER BY dataset")]
            rows = []
            for dataset in datasets:
                total = db.execute("SELECT epsilon FROM budgets WHERE dataset=? AND researcher=?",
                                   (dataset, ANY_RESEARCHER)).fetchone()
                spent = db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM debits WHERE dataset=?",
                                   (dataset,)).fetchone()[0]
                rows.append({"dataset": dataset, "budget": None if total is None else float(total[0]),
                             "spent": round(float(spent), 6),
                             "remaining": round(max(self._remaining(db, dataset, researcher), 0.0), 6)})
            return rows

    def history(self, dataset: str | None = None) -> list[dict]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT id, dataset, researcher, epsilon, reference, at FROM debits"
                              + (" WHERE dataset=?" if dataset else "") + " ORDER BY id", (dataset,) if dataset else ())
            return [dict(zip(("id", "dataset", "researcher", "epsilon", "reference", "at"), r)) for r in rows]

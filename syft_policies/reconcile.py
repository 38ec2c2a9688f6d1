"""The site's privacy records (ledger and audit log): the check before every execution,
and the start-up repair of the one gap a crash can leave between them.

Nothing runs while the ledger or the audit log is missing, unwritable or does not verify
(:func:`records_problem`): a deleted ledger is never recreated empty by an execution,
and a job never pays into a ledger whose audit log cannot record it.

A job's debit is a ledger transaction, then a ``debited`` audit entry naming the ledger
rows (``debits``). A crash between the two leaves a paid debit with no record; at start-up
every such row gets its ``debited`` entry, marked ``reconciled``, so the audit log again
accounts for every epsilon the ledger holds. Rows written outside executions (tests,
experiments) carry no request and are left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["reconcile_debits", "records_problem", "ledger_may_be_created"]

_EXECUTION = " (request "  # the mediator's suffix on every reference it debits


def reconcile_debits(ledger, audit) -> list[int]:
    """Record every execution debit the audit log lacks; returns the ledger ids repaired."""
    audited = {int(i) for e in audit.entries() if e.get("event") == "debited" for i in e.get("debits") or ()}
    missing = [d for d in ledger.history() if _EXECUTION in d["reference"] and d["id"] not in audited]
    for d in missing:
        audit.append("debited", datasets=[d["dataset"]], researcher=d["researcher"], epsilon=d["epsilon"],
                     reference=d["reference"], debits=[d["id"]], reconciled=True,
                     note="the execution stopped between its debit and its audit entry")
    return [d["id"] for d in missing]



def records_problem(site_dir: Path, *, ledger_file: str = "ledger.sqlite", audit_file: str = "audit.jsonl") -> str:
    """Why this site must not run code now (for the data owner's log), or "" when its records are sound."""
    from .audit import AuditLog

    site_dir = Path(site_dir)
    ledger, audit = site_dir / ledger_file, site_dir / audit_file
    if not ledger.is_file():
        return f"the privacy ledger {ledger} is missing; restore it from a backup (it is never recreated empty)"
    if audit.exists() and not audit.is_file():
        return f"the audit log {audit} is not a file"
    for path in (ledger, audit, site_dir):
        if path.exists() and not os.access(path, os.W_OK):
            return f"{path} is not writable: debits and their audit entries could not be recorded"
    verdict = AuditLog(audit).verify()  # a missing log verifies only if the ledger's anchor is empty too
    return "" if verdict.ok else f"the audit log does not verify ({verdict})"


def ledger_may_be_created(site_dir: Path, *, audit_file: str = "audit.jsonl") -> bool:
    """Only a new site gets a new, empty ledger: one with an audit history lost its ledger."""
    audit = Path(site_dir) / audit_file
    return not (audit.exists() and audit.stat().st_size > 0)

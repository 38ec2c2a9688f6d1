"""Start-up repair of the one gap between the ledger and the audit log.

A job's debit is a ledger transaction, then a ``debited`` audit entry naming the ledger
rows (``debits``). A crash between the two leaves a paid debit with no record; at start-up
every such row gets its ``debited`` entry, marked ``reconciled``, so the audit log again
accounts for every epsilon the ledger holds. Rows written outside executions (tests,
experiments) carry no request and are left alone.
"""

from __future__ import annotations

__all__ = ["reconcile_debits"]

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


"""The hospitals this process serves: datasite id -> spec and site directory.

Filled when a datasite opens; the Syft patches look a context's server up here to find
the site's ledger, audit log, approvals, execution record and isolation limits. A server
that is not registered here runs no code (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SiteContext", "register_site", "site_of", "LEDGER_FILE"]

LEDGER_FILE = "ledger.sqlite"


@dataclass(frozen=True)
class SiteContext:
    uid: str
    spec: object  # datasites.spec.HospitalSpec
    site_dir: Path

    def ledger(self):
        from syft_policies.ledger import BudgetLedger

        return BudgetLedger(self.site_dir / LEDGER_FILE)

    def audit(self):
        from syft_policies.audit import AUDIT_FILE, AuditLog

        return AuditLog(self.site_dir / AUDIT_FILE)

    def governance(self):
        from syft_policies.governance import GOVERNANCE_FILE, GovernanceStore

        return GovernanceStore(self.site_dir / GOVERNANCE_FILE)

    def executions(self):
        from .isolation.attempts import EXECUTIONS_FILE, ExecutionStore

        return ExecutionStore(self.site_dir / EXECUTIONS_FILE)


_SITES: dict[str, SiteContext] = {}


def register_site(uid: str, spec, site_dir: Path) -> SiteContext:
    context = SiteContext(str(uid), spec, Path(site_dir))
    _SITES[context.uid] = context
    if (context.site_dir / LEDGER_FILE).exists():  # a crash between a debit and its audit entry
        from syft_policies.reconcile import reconcile_debits

        repaired = reconcile_debits(context.ledger(), context.audit())
        if repaired:
            import logging

            logging.getLogger("medsyft").warning("%s: %d debit(s) had no audit entry; recorded now", spec.name,
                                                 len(repaired))
    return context


def site_of(uid) -> SiteContext | None:
    """The registered site for a Syft server id (a UID or its hex), else None."""
    key = getattr(uid, "no_dash", None) or str(uid)
    return _SITES.get(key)

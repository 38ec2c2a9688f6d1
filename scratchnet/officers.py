"""The compliance officers' side of a sandbox: follow the automatic review, as the demo does.

In a real deployment each hospital's officer decides in their own notebook or CLI; in a
sandbox one notebook plays every role, so this does what a careful officer would.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["review_queues"]


def review_queues(network, *, irb: str, purpose: str, expires_in_days: int = 90) -> list[dict]:
    """Approve low-risk requests (against the dataset's budget, with IRB, purpose and
    expiry); deny the rest, quoting the review's high findings. Returns the decisions."""
    from syft_policies import approve_request, deny_request, list_requests
    from syft_policies.review import review_request

    expires = (dt.date.today() + dt.timedelta(days=expires_in_days)).isoformat()
    decisions = []
    for name, site in network.sites.items():
        officer, ledger, audit, governance = site.officer(), site.ledger(), site.audit(), site.governance()
        for req in list_requests(officer, status="pending"):
            dataset = (req.plan or {}).get("dataset", site.spec.dataset_name)
            report = review_request(officer, req.id, budget_remaining=ledger.remaining(dataset))
            if report.risk == "low":
                approve_request(officer, req.id, ledger=ledger, audit=audit, governance=governance, irb=irb,
                                purpose=purpose, expires=expires)
                decision = "approved"
            else:
                high = [f"{f.rule} line {f.line}: {f.message}" for f in report.findings if f.severity == "high"]
                deny_request(officer, req.id, audit=audit,
                             reason=f"automatic review: {report.risk} risk; " + "; ".join(high or ["read the code"]))
                decision = "denied"
            decisions.append({"site": name, "function": req.function, "risk": report.risk, "decision": decision})
    return decisions

"""The compliance officers' side of a sandbox: follow the automatic review, as the demo does.

In a real deployment each hospital's officer decides in their own notebook or CLI; in a
sandbox one notebook plays every role, so this does what a careful officer would.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["review_queues", "approve_anyway", "two_officer_review"]


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


def approve_anyway(site, request_id: str, *, purpose: str = "teaching: what if officers err",
                   irb: str = "IRB-LAB-1") -> None:
    """Two people approve a request whatever its risk, as two careless officers would: the
    site's compliance officer, then its admin as the second signature that custom code needs.
    For labs and tests that show what stops a leak *after* a wrong approval."""
    from syft_policies import SitePolicy, approve_request

    for client in (site.officer(), site.admin()):
        info = approve_request(client, request_id, audit=site.audit(), governance=site.governance(),
                               purpose=purpose, irb=irb, accept_high_risk=True,
                               site_policy=SitePolicy.for_site(site.spec))
        if info.status == "approved":  # a template needs one signature, custom code two
            return


def two_officer_review(network, *, irb: str, purpose: str, expires_in_days: int = 90) -> list[dict]:
    """Like :func:`review_queues`, but custom code rated medium (no high finding) is approved
    too, as two officers who read it would: the site's compliance officer, then its admin as
    the second signature the site's ``custom_code = "two-person"`` policy asks for (a sandbox
    has one officer per site). High risk, and custom code where the policy is ``deny``, are
    denied with the reason. Returns the decisions with who signed."""
    from syft_policies import SitePolicy, approve_request, deny_request, list_requests
    from syft_policies.review import review_request

    expires = (dt.date.today() + dt.timedelta(days=expires_in_days)).isoformat()
    decisions = []
    for name, site in network.sites.items():
        officer, ledger, audit, governance = site.officer(), site.ledger(), site.audit(), site.governance()
        policy = SitePolicy.for_site(site.spec)
        for req in list_requests(officer, status="pending"):
            dataset = (req.plan or {}).get("dataset", site.spec.dataset_name)
            report = review_request(officer, req.id, site_policy=policy, budget_remaining=ledger.remaining(dataset))
            custom_refused = report.template is None and policy.custom_code == "deny"
            approvers = []
            if report.risk in ("low", "medium") and not custom_refused:
                for client in (officer, site.admin()):
                    info = approve_request(client, req.id, ledger=ledger, audit=audit, governance=governance,
                                           irb=irb, purpose=purpose, expires=expires, site_policy=policy)
                    approvers.append(str(client.account.email))
                    if info.status == "approved":
                        break
                decision = "approved"
            else:
                high = [f"{f.rule} line {f.line}: {f.message}" for f in report.findings if f.severity == "high"]
                why = ("this site's policy denies custom code" if custom_refused
                       else "; ".join(high or ["read the code"]))
                deny_request(officer, req.id, audit=audit, reason=f"review: {report.risk} risk; {why}")
                decision = "denied"
            decisions.append({"site": name, "function": req.function, "risk": report.risk, "decision": decision,
                              "approvers": approvers})
    return decisions

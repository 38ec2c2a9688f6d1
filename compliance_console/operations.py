"""What a compliance officer can do at one hospital, as plain data in and out.

The web pages, the JSON API and therefore the ``medsyft review`` commands all call these
functions, and these call ``syft_policies`` (the same review, budget and audit rules as
everywhere): one code path whatever the officer clicks or types.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict

__all__ = ["queue", "request_detail", "approve", "approve_study", "deny", "ledger_view", "audit_view",
           "NO_STUDY"]

NO_STUDY = "(single requests)"


def _policy(site):
    from syft_policies import SitePolicy

    return SitePolicy.for_site(site.spec)


def _remaining(site) -> float | None:
    ledger = site.ledger()
    return ledger.remaining(site.spec.dataset_name) if ledger.budget(site.spec.dataset_name) is not None else None


def _row(info, report, governance) -> dict:
    pending = governance.get(info.id)
    return {
        "id": info.id, "short": info.id[:8], "function": info.function, "researcher": info.researcher,
        "institution": info.institution, "submitted": info.submitted, "status": info.status,
        "reason": info.reason, "study": (info.plan or {}).get("study") or NO_STUDY, "risk": report.risk,
        "template": report.template, "epsilon": report.epsilon_cost, "study_epsilon": report.study_epsilon,
        "cosigned_by": list(pending.approvers) if pending is not None and info.status == "pending" else [],
        "cosign_required": pending.required if pending is not None else None,
    }


def queue(client, site, *, status: str | None = "pending") -> list[dict]:
    """Every request (or those with ``status``), oldest first, each with its automatic
    risk and epsilon cost; group them with ``row["study"]``."""
    from syft_policies import list_requests
    from syft_policies.review import report_for

    policy, remaining, governance = _policy(site), _remaining(site), site.governance()
    return [_row(info, report_for(info, site_policy=policy, budget_remaining=remaining), governance)
            for info in list_requests(client, status=status)]


def request_detail(client, site, request_id: str) -> dict:
    """One request with its code, the review's findings (with line numbers), its DP
    parameters and cost, the budget before and after, and its release policy."""
    from syft_policies import get_request
    from syft_policies.review import report_for

    info = get_request(client, request_id)
    report = report_for(info, site_policy=_policy(site), budget_remaining=_remaining(site))
    row = _row(info, report, site.governance())
    return {**row, "code": info.code, "plan": info.plan, "release": info.release, "inputs": info.inputs,
            "extra_changes": list(info.extra_changes), "dp": report.dp, "vetted_calls": report.vetted_calls,
            "findings": [asdict(f) for f in report.findings], "budget_before": report.budget_before,
            "budget_after": report.budget_after, "dataset": site.spec.dataset_name, "report": str(report),
            "custom_code_policy": _policy(site).custom_code}


def approve(client, site, request_id: str, *, purpose: str, irb: str = "", dua: str = "", expires: str = "",
            two_person: bool = False, accept_high_risk: bool = False) -> dict:
    """Approve (or co-sign) one request; returns its row afterwards. Raises ``ReviewError``."""
    from syft_policies import approve_request

    info = approve_request(client, request_id, ledger=site.ledger(), audit=site.audit(),
                           governance=site.governance(), purpose=purpose, irb=irb, dua=dua, expires=expires,
                           two_person=two_person, accept_high_risk=accept_high_risk, site_policy=_policy(site))
    return {"id": info.id, "short": info.id[:8], "function": info.function, "status": info.status}


def approve_study(client, site, study: str, *, purpose: str, irb: str = "", dua: str = "", expires: str = "",
                  two_person: bool = False, accept_high_risk: bool = False, researcher: str | None = None,
                  expected: list[str] | None = None) -> list[dict]:
    """Approve every pending request of one researcher's ``study`` at once.

    Only for a study made of this site's templates: a study's name is the researcher's
    to choose, so custom code filed under a trusted study's name must be read on its own
    page. ``expected``: the request ids the officer saw; if the study changed since (a
    request added or withdrawn), nothing is approved. Checked as a whole first, so a
    study is never left half-approved by a foreseeable refusal."""
    from syft_policies import ReviewError

    rows = [r for r in queue(client, site, status="pending") if r["study"] == study and study != NO_STUDY]
    researchers = sorted({r["researcher"] for r in rows})
    if researcher is not None:
        rows = [r for r in rows if r["researcher"] == researcher]
    elif len(researchers) > 1:
        raise ReviewError(f"study {study!r} has pending requests from {len(researchers)} researchers "
                          f"({', '.join(researchers)}); approve one researcher's requests at a time")
    if not rows:
        raise ReviewError(f"no pending requests of study {study!r} on this site")
    if expected is not None and sorted(expected) != sorted(r["id"] for r in rows):
        raise ReviewError(f"study {study} changed since the page was loaded (requests added or decided); "
                          "reload it and check again")
    custom = [f"{r['function']} ({r['risk'].upper()})" for r in rows if r["template"] is None or r["risk"] != "low"]
    if custom:
        raise ReviewError(f"study {study} can only be approved request by request: {', '.join(custom)} "
                          "is not a LOW-risk site template")
    return [approve(client, site, r["id"], purpose=purpose, irb=irb, dua=dua, expires=expires,
                    two_person=two_person, accept_high_risk=accept_high_risk) for r in rows]


def deny(client, site, request_id: str, *, reason: str) -> dict:
    from syft_policies import deny_request

    info = deny_request(client, request_id, reason=reason, audit=site.audit())
    return {"id": info.id, "short": info.id[:8], "function": info.function, "status": info.status,
            "reason": info.reason}


def _day(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def ledger_view(site) -> dict:
    """Budget, spent and remaining per dataset; spend per researcher; every debit in time."""
    ledger = site.ledger()
    history = ledger.history()
    researchers: dict[tuple[str, str], float] = {}
    for d in history:
        key = (d["dataset"], d["researcher"])
        researchers[key] = researchers.get(key, 0.0) + d["epsilon"]
    return {
        "datasets": ledger.statement(),
        "researchers": [{"dataset": k[0], "researcher": k[1], "spent": round(v, 6)}
                        for k, v in sorted(researchers.items())],
        "debits": [{**d, "when": _day(d["at"])} for d in history],
    }


def audit_view(site, *, last: int = 200) -> dict:
    """The chain's status and the latest entries (details as key/value pairs)."""
    log = site.audit()
    result = log.verify()
    entries = log.entries()
    shown = []
    for e in entries[-last:][::-1]:
        details = {k: v for k, v in e.items() if k not in ("seq", "at", "event", "prev", "hash")}
        shown.append({"seq": e["seq"], "when": _day(e["at"]), "event": e["event"], "details": details,
                      "hash": e.get("hash", "")[:12]})
    return {"ok": result.ok, "status": str(result), "count": len(entries), "entries": shown}

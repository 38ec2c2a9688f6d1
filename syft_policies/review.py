"""The compliance officer's review queue on one datasite: list, read, approve, deny.

Works on any client with the data-owner or admin role. Denial always carries a reason,
which the researcher sees with the request's status.
"""

from __future__ import annotations

from dataclasses import dataclass


__all__ = ["status_name", "RequestInfo", "list_requests", "get_request", "approve_request", "deny_request",
           "review_request", "report_for", "ReviewError"]


class ReviewError(ValueError):
    """The review action cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class RequestInfo:
    id: str
    function: str
    researcher: str
    institution: str
    submitted: str
    status: str  # pending / approved / denied
    reason: str
    code: str
    data_params: tuple[str, ...] = ()
    plan: dict | None = None
    code_id: str = ""
    release: dict | None = None  # the output policy: name, whether it is this site's ReleasePolicy, settings
    inputs: dict | None = None  # how each parameter is bound: asset / constant / researcher
    extra_changes: tuple[str, ...] = ()  # anything the request carries besides running its code

    def summary(self) -> str:
        return f"{self.id[:8]}  {self.status:<8}  {self.function:<28}  {self.researcher:<32}  {self.submitted}"


_STATUS = {"PENDING": "pending", "APPROVED": "approved", "REJECTED": "denied"}


def status_name(request) -> str:
    """A Syft request's status in our words: pending / approved / denied."""
    return _STATUS.get(request.status.name, request.status.name.lower())


def _inputs(code) -> tuple[tuple[str, ...], dict | None]:
    """Which inputs are private assets, and the pinned study plan (a ``sy.Constant`` dict)."""
    data, plan = [], None
    for rules in (getattr(code, "input_policy_init_kwargs", None) or {}).values():
        for kw, rule in rules.items():
            kind = type(rule).__name__
            if kind in ("Matches", "UID"):
                data.append(kw)
            elif kind == "Constant" and isinstance(getattr(rule, "val", None), dict) \
                    and ("epsilon" in rule.val or "queries" in rule.val):
                plan = dict(rule.val)
    return tuple(data), plan


def _release(code) -> dict:
    """The request's output policy, compared with this site's own ``ReleasePolicy``."""
    import inspect

    from .release import ReleasePolicy

    kind = getattr(code, "output_policy_type", None)
    name = getattr(kind, "class_name", None) or getattr(kind, "__name__", None) or type(kind).__name__
    raw = getattr(kind, "raw_code", None)
    genuine = raw is not None and raw.strip() == inspect.getsource(ReleasePolicy).strip()
    settings = {k: v for k, v in (getattr(code, "output_policy_init_kwargs", None) or {}).items() if k != "id"}
    return {"policy": name, "genuine": genuine, "settings": settings}


def _site_assets(client) -> dict[str, str]:
    """``{asset id (with and without dashes): its dataset's name}`` for the whole site, read
    once per decision; empty if it cannot be read (every id binding is then an upload)."""
    from .quiet import quiet

    try:
        with quiet():
            return {v: d.name for d in client.datasets for a in d.asset_list
                    for v in (str(a.action_id), a.action_id.no_dash)}
    except Exception:  # noqa: BLE001
        return {}


def _info(request, assets=None) -> RequestInfo:
    from .templates import input_kinds

    changes = [type(c).__name__ for c in (getattr(request, "changes", None) or [])]
    extra = tuple(c for c in changes if c != "UserCodeStatusChange") + (("more than one code change",)
                                                                         if changes.count("UserCodeStatusChange") > 1
                                                                         else ())
    try:
        code = request.code
    except Exception:  # noqa: BLE001 - a request without readable code is listed, never approved
        code = None
    status = status_name(request)
    if type(code).__name__ != "UserCode":
        return RequestInfo(id=str(request.id.no_dash), function="<no code>",
                           researcher=request.requesting_user_email or "",
                           institution=request.requesting_user_institution or "",
                           submitted=str(request.request_time)[:19] if request.request_time else "",
                           status=status, reason=(request.deny_reason or "") if status == "denied" else "",
                           code="", extra_changes=extra or ("no code",))
    data, plan = _inputs(code)
    return RequestInfo(
        id=str(request.id.no_dash),
        function=code.service_func_name,
        researcher=request.requesting_user_email or "",
        institution=request.requesting_user_institution or "",
        submitted=str(request.request_time)[:19] if request.request_time else "",
        status=status,
        reason=(request.deny_reason or "") if status == "denied" else "",
        code=code.raw_code,
        data_params=data,
        plan=plan,
        code_id=str(code.id.no_dash),
        release=_release(code),
        inputs=input_kinds(code, assets),
        extra_changes=extra,
    )


def _datasets_read(request, assets: dict[str, str]) -> list[str]:
    """Names of the site's datasets whose assets the request's code is bound to."""
    bound = set()
    for rules in (getattr(request.code, "input_policy_init_kwargs", None) or {}).values():
        for rule in (rules.values() if isinstance(rules, dict) else ()):
            for value in (rule, getattr(rule, "val", None), getattr(rule, "id", None)):
                if value is not None and not isinstance(value, (dict, list)):
                    bound |= {str(value), str(getattr(value, "no_dash", value))}
    return list(dict.fromkeys(assets[v] for v in sorted(bound) if v in assets))


def _all(client) -> list:
    requests = client.requests
    if type(requests).__name__ == "SyftError":
        raise ReviewError(f"cannot list requests: {requests}")
    return list(requests)


def list_requests(client, *, status: str | None = "pending") -> list[RequestInfo]:
    """Requests on this site, oldest first; ``status=None`` for all."""
    if status not in (None, "pending", "approved", "denied"):
        raise ReviewError(f"status must be pending, approved, denied or None, got {status!r}")
    assets = _site_assets(client)
    infos = sorted((_info(r, assets) for r in _all(client)), key=lambda i: i.submitted)
    return [i for i in infos if status is None or i.status == status]


def _find(client, request_id: str):
    matches = [r for r in _all(client) if str(r.id.no_dash).startswith(request_id.replace("-", ""))]
    if not matches:
        raise ReviewError(f"no request with id {request_id!r} on this site; `medsyft review list` shows them")
    if len(matches) > 1:
        raise ReviewError(f"id prefix {request_id!r} matches {len(matches)} requests; give more characters")
    return matches[0]


def get_request(client, request_id: str) -> RequestInfo:
    """One request by id (or a unique id prefix), with its code."""
    return _info(_find(client, request_id), _site_assets(client))


def _check_pending(request) -> None:
    info = _info(request)
    if info.status != "pending":
        raise ReviewError(f"request {info.id[:8]} is already {info.status}")


def _record(audit, client, info: RequestInfo, report, decision: str, **details) -> None:
    """Submission (once), the review report's digest, and the decision, in the site's audit log."""
    import hashlib

    if audit is None:
        return
    if not any(e.get("request") == info.id and e["event"] == "submitted" for e in audit.entries()):
        audit.append("submitted", request=info.id, function=info.function, researcher=info.researcher,
                     submitted=info.submitted, code_sha256=hashlib.sha256(info.code.encode()).hexdigest(),
                     plan=info.plan)
    audit.append("reviewed", request=info.id, risk=report.risk, report_sha256=report.digest(),
                 epsilon_cost=report.epsilon_cost)
    audit.append(decision, request=info.id, function=info.function, by=_who(client), **details)


def _intent(audit, client, info: RequestInfo, decision: str) -> None:
    """Write-ahead: the decision is in the audit log before Syft applies it (an audit log that
    cannot be written stops the decision; a crash in between leaves the intent on record)."""
    if audit is not None:
        audit.append("deciding", request=info.id, function=info.function, decision=decision, by=_who(client))


def _who(client) -> str:
    try:
        return str(client.account.email)
    except Exception:  # noqa: BLE001 - an identity is best effort; the decision itself is recorded
        return "unknown"


def approve_request(client, request_id: str, *, ledger=None, audit=None, governance=None, purpose: str = "",
                    irb: str = "", dua: str = "", expires: str = "", two_person: bool = False,
                    accept_high_risk: bool = False, site_policy=None) -> RequestInfo:
    """Approve a pending request; its code may then run on the private data.

    With the site's ``ledger``, a training request whose planned epsilon (computed from its
    pinned DP parameters, not taken from the researcher) does not fit the dataset's
    remaining budget is refused. With the site's ``governance`` store, the approval must
    name an IRB or DUA reference and a purpose, may expire, and with ``two_person`` takes
    two different compliance officers (the first approval leaves the request pending).
    ``site_policy`` (``SitePolicy.for_site(spec)``) decides custom code: ``deny`` refuses
    it, ``two-person`` (the default) makes it need two officers. A high-risk request needs
    ``accept_high_risk``.
    """
    from .code_review import SitePolicy
    from .ledger import BudgetExceeded
    from .quiet import quiet

    request = _find(client, request_id)
    _check_pending(request)
    assets = _site_assets(client)
    info = _info(request, assets)
    if info.extra_changes:
        raise ReviewError(f"request {info.id[:8]} carries more than its code ({', '.join(info.extra_changes)}): "
                          "deny it")
    policy = site_policy or SitePolicy()
    report = report_for(info, site_policy=policy)
    if report.template is None and policy.custom_code == "deny":
        raise ReviewError(f"cannot approve {info.function}: it is not one of the site's request templates and "
                          "this site's policy denies custom code (policy custom_code = deny)")
    if report.risk == "high" and not accept_high_risk:
        high = "; ".join(f"{f.rule} line {f.line}: {f.message}" for f in report.findings if f.severity == "high")
        raise ReviewError(f"{info.function} is HIGH risk ({high}); deny it, or approve with "
                          "--accept-high-risk (accept_high_risk=True) after reading the code")
    if report.template is None and policy.custom_code == "two-person":
        if governance is None:
            raise ReviewError(f"{info.function} is custom code: at this site it needs two compliance officers, "
                              "recorded in the site's approvals (pass governance=)")
        two_person = True  # custom code: a second compliance officer must co-sign
    if ledger is not None and report.dp is not None:  # it spends epsilon: it must fit the budget
        cost = report.epsilon_cost
        if cost is None:
            raise ReviewError("the request's study plan has incomplete DP parameters; deny it with a reason")
        cost = max(cost, report.study_epsilon or 0.0)  # a study's requests share one budget: all of it must fit
        try:  # the datasets the request reads (its assets), never a name the researcher wrote
            for dataset in _datasets_read(request, assets) or [(info.plan or {}).get("dataset", "")]:
                ledger.check(dataset, cost, researcher=info.researcher or "*")
        except BudgetExceeded as exc:
            raise ReviewError(f"cannot approve {info.function}: {exc}") from exc
    approval = None
    if governance is not None:
        approval = _governed(governance, client, info, purpose=purpose, irb=irb, dua=dua, expires=expires,
                             two_person=two_person)
        if not approval.complete:
            governance.put(approval)
            _record(audit, client, info, report, "co-sign-needed", approvers=approval.approvers,
                    irb=approval.irb, dua=approval.dua, purpose=approval.purpose, expires=approval.expires)
            return get_request(client, request_id)
    _intent(audit, client, info, "approve")
    with quiet():
        result = request.approve()
    if type(result).__name__ == "SyftError":
        raise ReviewError(f"approval failed: {result}")
    details = {}
    if approval is not None:
        governance.put(approval)
        details = {"approvers": approval.approvers, "irb": approval.irb, "dua": approval.dua,
                   "purpose": approval.purpose, "expires": approval.expires}
    _record(audit, client, info, report, "approved", **details)
    return get_request(client, request_id)


def _governed(governance, client, info: RequestInfo, *, purpose, irb, dua, expires, two_person):
    from .governance import Approval

    who = _who(client)
    pending = governance.get(info.id)
    if pending is not None and not pending.complete:
        if who in pending.approvers:
            raise ReviewError(f"two-person rule: {who} already approved {info.function}; a second, different "
                              "compliance officer must approve it")
        pending.approvers.append(who)
        return pending
    try:
        return Approval(request=info.id, function=info.function, purpose=purpose, irb=irb, dua=dua,
                        expires=expires, study=(info.plan or {}).get("study", ""), approvers=[who],
                        required=2 if two_person else 1, code=info.code_id)
    except ValueError as exc:
        raise ReviewError(f"cannot approve {info.function}: {exc}") from exc


def deny_request(client, request_id: str, *, reason: str, audit=None) -> RequestInfo:
    """Deny a pending request; ``reason`` is required and shown to the researcher."""
    from .quiet import quiet

    if not reason or not reason.strip():
        raise ReviewError("a denial needs a reason the researcher can act on")
    request = _find(client, request_id)
    _check_pending(request)
    info = _info(request, _site_assets(client))
    _intent(audit, client, info, "deny")
    with quiet():
        result = request.deny(reason=reason.strip())
    if type(result).__name__ == "SyftError":
        raise ReviewError(f"denial failed: {result}")
    _record(audit, client, info, report_for(info), "denied", reason=reason.strip())
    return get_request(client, request_id)


def report_for(info: RequestInfo, *, site_policy=None, budget_remaining: float | None = None):
    """The automatic review report of one listed request (no further call to the site)."""
    from .code_review import Finding, ReviewReport, review_code

    try:
        report = review_code(info.code, site_policy=site_policy, plan=info.plan, release=info.release,
                             data_params=set(info.data_params) or None, budget_remaining=budget_remaining,
                             inputs=info.inputs)
    except Exception as exc:  # noqa: BLE001 - one unreadable request must not hide the others
        return ReviewReport(info.function, "high", [Finding("R000", "high", "the automatic review could not read "
                                                           f"this request ({type(exc).__name__}): deny it", 0)])
    if info.extra_changes:
        report.findings.insert(0, Finding("R014", "high", "the request carries more than its code ("
                                          + ", ".join(info.extra_changes) + "): approving it would apply them",
                                          0))
        report.risk = "high"
    return report


def review_request(client, request_id: str, *, site_policy=None, budget_remaining: float | None = None):
    """The automatic review report (``syft_policies.review_code``) of a request on this site."""
    return report_for(get_request(client, request_id), site_policy=site_policy, budget_remaining=budget_remaining)

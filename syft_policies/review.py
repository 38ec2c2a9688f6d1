"""The compliance officer's review queue on one datasite: list, read, approve, deny.

Works on any client with the data-owner or admin role. Denial always carries a reason,
which the researcher sees with the request's status.
"""

from __future__ import annotations

from dataclasses import dataclass


__all__ = ["status_name", "RequestInfo", "list_requests", "get_request", "approve_request", "deny_request", "ReviewError"]


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

    def summary(self) -> str:
        return f"{self.id[:8]}  {self.status:<8}  {self.function:<28}  {self.researcher:<32}  {self.submitted}"


_STATUS = {"PENDING": "pending", "APPROVED": "approved", "REJECTED": "denied"}


def status_name(request) -> str:
    """A Syft request's status in our words: pending / approved / denied."""
    return _STATUS.get(request.status.name, request.status.name.lower())


def _info(request) -> RequestInfo:
    code = request.code
    status = status_name(request)
    return RequestInfo(
        id=str(request.id.no_dash),
        function=code.service_func_name,
        researcher=request.requesting_user_email or "",
        institution=request.requesting_user_institution or "",
        submitted=str(request.request_time)[:19] if request.request_time else "",
        status=status,
        reason=(request.deny_reason or "") if status == "denied" else "",
        code=code.raw_code,
    )


def _all(client) -> list:
    requests = client.requests
    if type(requests).__name__ == "SyftError":
        raise ReviewError(f"cannot list requests: {requests}")
    return list(requests)


def list_requests(client, *, status: str | None = "pending") -> list[RequestInfo]:
    """Requests on this site, oldest first; ``status=None`` for all."""
    if status not in (None, "pending", "approved", "denied"):
        raise ReviewError(f"status must be pending, approved, denied or None, got {status!r}")
    infos = sorted((_info(r) for r in _all(client)), key=lambda i: i.submitted)
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
    return _info(_find(client, request_id))


def _check_pending(request) -> None:
    info = _info(request)
    if info.status != "pending":
        raise ReviewError(f"request {info.id[:8]} is already {info.status}")


def approve_request(client, request_id: str) -> RequestInfo:
    """Approve a pending request; its code may then run on the private data."""
    from datasites.quiet import quiet

    request = _find(client, request_id)
    _check_pending(request)
    with quiet():
        result = request.approve()
    if type(result).__name__ == "SyftError":
        raise ReviewError(f"approval failed: {result}")
    return get_request(client, request_id)


def deny_request(client, request_id: str, *, reason: str) -> RequestInfo:
    """Deny a pending request; ``reason`` is required and shown to the researcher."""
    from datasites.quiet import quiet

    if not reason or not reason.strip():
        raise ReviewError("a denial needs a reason the researcher can act on")
    request = _find(client, request_id)
    _check_pending(request)
    with quiet():
        result = request.deny(reason=reason.strip())
    if type(result).__name__ == "SyftError":
        raise ReviewError(f"denial failed: {result}")
    return get_request(client, request_id)



"""The researcher's side of the approval loop on one or many hospital datasites."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syft_policies.quiet import quiet
from syft_policies.review import status_name

__all__ = ["RequestStatus", "submit_request", "request_status", "fetch_result", "NotApproved", "remaining_budget"]


class NotApproved(RuntimeError):
    """The request has no result for you: it is pending or was denied (``status``, ``reason``)."""

    def __init__(self, site: str, function: str, status: str, reason: str = ""):
        self.site, self.function, self.status, self.reason = site, function, status, reason
        why = f": {reason}" if reason else ""
        super().__init__(f"{function} at {site} is {status}{why}")


@dataclass(frozen=True)
class RequestStatus:
    site: str
    function: str
    status: str  # pending / approved / denied
    reason: str = ""


def submit_request(client, syft_function) -> str:
    """Ask a site to run ``syft_function`` (made with ``sy.syft_function...``); returns the request id."""
    with quiet():
        request = client.code.request_code_execution(syft_function)
    if type(request).__name__ == "SyftError":
        raise RuntimeError(f"submitting {syft_function.service_func_name} failed: {request}")
    return str(request.id.no_dash)


def request_status(client, function: str) -> RequestStatus:
    """The latest request for ``function`` on this site, as the researcher sees it."""
    site = client.name
    with quiet():
        mine = [r for r in client.requests if r.code.service_func_name == function]
    if not mine:
        raise LookupError(f"no request for {function!r} at {site}; submit it first")
    latest = max(mine, key=lambda r: str(r.request_time))
    status = status_name(latest)
    return RequestStatus(site, function, status, (latest.deny_reason or "") if status == "denied" else "")


def fetch_result(client, function: str, **inputs: Any) -> Any:
    """Run an approved request on the site's private data and return its output.

    Raises :class:`NotApproved` (with the officer's reason) before approval or after denial.
    """
    status = request_status(client, function)
    if status.status != "approved":
        raise NotApproved(status.site, function, status.status, status.reason)
    try:
        with quiet():
            result = getattr(client.code, function)(**inputs)
    except Exception as exc:  # Syft raises for errors in the code and for its policies' refusals
        raise RuntimeError(f"{function} at {status.site} failed: {exc}") from exc
    if type(result).__name__ == "SyftError" or isinstance(result, Exception):
        raise RuntimeError(f"{function} at {status.site} failed: {result}")
    return result.get() if hasattr(result, "get") else result


def remaining_budget(client) -> list[dict]:
    """The privacy budget this site's datasets have left for you: ``[{dataset, budget, spent, remaining}]``.

    Served by the site's ``medsyft.budget`` endpoint, so it needs no approval and shows no data.
    """
    try:
        with quiet():
            result = client.api.services.api.call("medsyft.budget")
    except Exception as exc:  # an old datasite without the endpoint, or no permission
        raise RuntimeError(f"{client.name} did not report its privacy budget: {exc}") from exc
    value = result.get() if hasattr(result, "get") else result
    if type(value).__name__ == "SyftError":
        raise RuntimeError(f"{client.name} did not report its privacy budget: {value}")
    return list(value)

"""Governance on the datasite side: the compliance officer's review of code requests."""

from .review import RequestInfo, ReviewError, approve_request, deny_request, get_request, list_requests

__all__ = ["RequestInfo", "ReviewError", "list_requests", "get_request", "approve_request", "deny_request"]

"""Governance on the datasite side: the review queue and the automatic review of code requests."""

from .code_review import Finding, ReviewReport, SitePolicy, review_code
from .review import RequestInfo, ReviewError, approve_request, deny_request, get_request, list_requests

__all__ = ["review_code", "ReviewReport", "Finding", "SitePolicy", "RequestInfo", "ReviewError",
           "list_requests", "get_request", "approve_request", "deny_request"]

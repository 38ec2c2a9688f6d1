"""The researcher's side: submitting requests to hospitals, collecting results, the CLI."""

from .metrics import auroc
from .requests import NotApproved, RequestStatus, fetch_result, request_status, submit_request

__all__ = ["submit_request", "request_status", "fetch_result", "NotApproved", "RequestStatus", "auroc"]

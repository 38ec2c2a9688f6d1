"""The researcher's side: study plans, federated rounds and strategies, requests, the CLI."""

from .plan import PlanError, StudyPlan
from .query import DPQuery, QueryResult, combine_queries, query_plan, solve_regression
from .requests import NotApproved, RequestStatus, fetch_result, remaining_budget, request_status, submit_request
from .strategy import FedAvg, FedBN, FedProx, Strategy
from .study import RoundRefused, Study, StudyResult, StudyStopped

__all__ = [
    "StudyPlan", "PlanError", "Study", "StudyResult", "StudyStopped", "RoundRefused",
    "Strategy", "FedAvg", "FedProx", "FedBN",
    "submit_request", "request_status", "fetch_result", "NotApproved", "RequestStatus", "remaining_budget",
    "DPQuery", "QueryResult", "query_plan", "combine_queries", "solve_regression",
]

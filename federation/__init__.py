"""The researcher's side: study plans, federated rounds and strategies, requests, the CLI.

Names load lazily, so ``medsyft`` commands that only talk to a site's console start fast.
"""

from importlib import import_module

__all__ = [
    "StudyPlan", "PlanError", "Study", "StudyResult", "StudyStopped", "RoundRefused",
    "Strategy", "FedAvg", "FedProx", "FedBN",
    "submit_request", "request_status", "fetch_result", "NotApproved", "RequestStatus", "remaining_budget",
    "DPQuery", "QueryResult", "query_plan", "combine_queries", "solve_regression",
]

_WHERE = {
    "StudyPlan": "plan", "PlanError": "plan",
    "DPQuery": "query", "QueryResult": "query", "combine_queries": "query", "query_plan": "query",
    "solve_regression": "query",
    "NotApproved": "requests", "RequestStatus": "requests", "fetch_result": "requests",
    "remaining_budget": "requests", "request_status": "requests", "submit_request": "requests",
    "FedAvg": "strategy", "FedBN": "strategy", "FedProx": "strategy", "Strategy": "strategy",
    "RoundRefused": "study", "Study": "study", "StudyResult": "study", "StudyStopped": "study",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'federation' has no attribute {name!r}")

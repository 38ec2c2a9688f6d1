"""Vetted DP analytics: the number of patients and of sepsis cases, paid from the site's budget.

A fixed query plan run by the DP query job (``datasites.jobs.query``): one count per
outcome level, OpenDP's discrete Laplace of scale 1/epsilon on each (one patient is in one
level: L1 sensitivity 1). The epsilon is pinned in the approved request (``plan``), so the
researcher cannot raise it per call, and the datasite's check-and-debit happens before
the data is read, atomically, so parallel calls never spend more than the budget.
"""

from __future__ import annotations

from .cohort import check_frame
from .compliance import require_compliant
from .query import run_queries
from .receipt import receipt
from .site import hospital

__all__ = ["dp_prevalence", "MIN_CELL"]

MIN_CELL = 10  # noised counts below this are shown as None (post-processing of the noised value)


def dp_prevalence(cohort, plan: dict) -> dict:
    """Noised number of patients and of sepsis cases at this hospital (epsilon-DP)."""
    epsilon = plan.get("epsilon", 0)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon <= 10:
        raise ValueError("plan epsilon must be a number in (0, 10]")
    for key in ("study", "dataset"):
        if not plan.get(key):
            raise ValueError(f"the plan needs {key!r}")
    cohort = check_frame(cohort)
    require_compliant(cohort, name="sepsis_cohort")
    left = hospital().debit(float(epsilon), reference=f"{plan['study']}/dp_prevalence")  # paid before reading
    queries = {"study": plan["study"], "queries": [
        {"name": "by_outcome", "kind": "count", "by": {"column": "label", "levels": [0, 1]}, "epsilon": float(epsilon)}]}
    other, cases = run_queries(cohort, queries)["by_outcome"]["count"]
    return {
        "patients": other + cases if other + cases >= MIN_CELL else None,
        "cases": cases if cases >= MIN_CELL else None,
        "epsilon": float(epsilon),
        "budget_remaining": left,
        "receipt": receipt("OpenDP discrete Laplace on counts by outcome, L1 sensitivity 1",
                           epsilon=float(epsilon), budget_remaining=left, scale=1 / float(epsilon)),
    }

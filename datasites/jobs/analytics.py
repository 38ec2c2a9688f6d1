"""Vetted DP analytics: the number of patients and of sepsis cases, paid from the site's budget.

A thin wrapper over the DP query job (``datasites.jobs.query``): a fixed plan of one count
by outcome (label 0 and 1; one patient is in one level, so L1 sensitivity 1 and one
epsilon for both counts), OpenDP's discrete Laplace of scale 1/epsilon on each. The
epsilon is pinned in the approved request (``plan``), so the researcher cannot raise it
per call, and the datasite's check-and-debit happens before the data is read,
atomically, so parallel calls never spend more than the budget. ``patients`` is the sum
of the two noised counts (post-processing).
"""

from __future__ import annotations

from .cohort import COHORT_ASSET, check_frame
from .query import answer_plan
from .receipt import receipt

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
    frame = check_frame(cohort)
    epsilon = float(epsilon)
    fixed = {"study": "dp-prevalence", "queries": [
        {"name": "by_outcome", "kind": "count", "by": {"column": "label", "levels": [0, 1]}, "epsilon": epsilon}]}
    reply = answer_plan(frame, fixed, reference=f"{plan['study']}/dp_prevalence", asset=COHORT_ASSET)
    other, cases = reply["answers"]["by_outcome"]["count"]
    left = reply["receipt"]["budget_remaining"]
    return {
        "patients": other + cases if other + cases >= MIN_CELL else None,
        "cases": cases if cases >= MIN_CELL else None,
        "epsilon": epsilon,
        "budget_remaining": left,
        "receipt": receipt("OpenDP discrete Laplace on counts by outcome, L1 sensitivity 1",
                           epsilon=epsilon, budget_remaining=left, scale=1 / epsilon),
    }

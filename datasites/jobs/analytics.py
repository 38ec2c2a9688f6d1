"""Vetted DP analytics: aggregate counts with Laplace noise, paid from the site's budget.

The query's epsilon is pinned in the approved request (``plan``), so the researcher cannot
raise it per call. Each execution asks the datasite to debit that epsilon *before* it looks
at the data; the datasite's check-and-debit is atomic, so parallel calls can never spend
more than the budget.
"""

from __future__ import annotations

import secrets

import numpy as np

from .cohort import check_frame
from .compliance import require_compliant
from .site import hospital

__all__ = ["dp_prevalence", "laplace_count"]

MIN_CELL = 10


def laplace_count(true: int, *, epsilon: float, sensitivity: float, rng: np.random.Generator) -> int | None:
    """A count with Laplace(sensitivity/epsilon) noise, rounded; None below the minimum cell size."""
    noisy = int(round(true + rng.laplace(0.0, sensitivity / epsilon)))
    return noisy if noisy >= MIN_CELL else None


def dp_prevalence(cohort, plan: dict) -> dict:
    """Noisy number of patients and of sepsis cases at this hospital (epsilon-DP).

    Adding or removing one patient changes the two counts by at most 1 each, so the L1
    sensitivity is 2 and each count gets Laplace(2 / epsilon) noise.
    """
    epsilon = float(plan.get("epsilon", 0))
    if not 0 < epsilon <= 10:
        raise ValueError(f"plan epsilon must be in (0, 10], got {plan.get('epsilon')!r}")
    for key in ("study", "dataset"):
        if not plan.get(key):
            raise ValueError(f"the plan needs {key!r}")
    cohort = check_frame(cohort)
    require_compliant(cohort, name="sepsis_cohort")
    left = hospital().debit(epsilon, reference=f"{plan['study']}/dp_prevalence")  # paid before the data is read
    rng = np.random.default_rng(secrets.randbits(128))
    return {
        "patients": laplace_count(len(cohort), epsilon=epsilon, sensitivity=2.0, rng=rng),
        "cases": laplace_count(int(cohort["label"].sum()), epsilon=epsilon, sensitivity=2.0, rng=rng),
        "epsilon": epsilon,
        "budget_remaining": left,
    }

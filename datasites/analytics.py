"""Vetted DP analytics: aggregate counts with Laplace noise, paid from the site's budget.

The query's epsilon is pinned in the approved request (``plan``), so the researcher cannot
raise it per call. Each execution debits that epsilon from the ledger *before* it looks
at the data, in one atomic step, so parallel calls can never spend more than the budget.
"""

from __future__ import annotations

import secrets

import numpy as np

from .cohort_asset import check_frame
from .compliance import require_compliant
from .jobstate import check_approval, output_digest, site_audit, site_ledger

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
    site_uid = str(cohort["site_uid"].iloc[0])
    check_approval(site_uid, plan["study"])
    ledger = site_ledger(site_uid)
    left = None
    if ledger is not None:  # paid before the data is read
        left = ledger.debit(plan["dataset"], epsilon, reference=f"{plan['study']}/dp_prevalence")
    rng = np.random.default_rng(secrets.randbits(128))
    reply = {
        "patients": laplace_count(len(cohort), epsilon=epsilon, sensitivity=2.0, rng=rng),
        "cases": laplace_count(int(cohort["label"].sum()), epsilon=epsilon, sensitivity=2.0, rng=rng),
        "epsilon": epsilon,
        "budget_remaining": left,
    }
    audit = site_audit(site_uid)
    if audit is not None:
        audit.append("executed", job="datasites.analytics.dp_prevalence", study=plan["study"],
                     dataset=plan["dataset"], epsilon_debited=epsilon, output_sha256=output_digest(reply))
    return reply

"""The privacy receipt every reply that touched private data carries.

A receipt says what protected the numbers (the mechanism), what they cost (``epsilon``,
``delta``, for this call and, where the job keeps one, for the study so far) and what is
left of the site's budget after the debit. The researcher adds receipts up per site; the
datasite's ledger and audit log hold the same numbers, written by the datasite itself.
"""

from __future__ import annotations

__all__ = ["receipt"]


def receipt(mechanism: str, *, epsilon: float, delta: float = 0.0, budget_remaining: float | None,
            study_epsilon: float | None = None, **public) -> dict:
    """``{"mechanism", "epsilon", "delta", "budget_remaining", ...}``: only public numbers."""
    out = {"mechanism": str(mechanism), "epsilon": float(epsilon), "delta": float(delta),
           "budget_remaining": None if budget_remaining is None else float(budget_remaining)}
    if study_epsilon is not None:
        out["study_epsilon"] = float(study_epsilon)
    out.update(public)
    return out

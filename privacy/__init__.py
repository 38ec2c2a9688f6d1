"""Differential-privacy accounting shared by the hospital's jobs, its reviewer and the researcher.

One Poisson schedule and one cached RDP epsilon, so the epsilon a reviewer quotes, the
epsilon a plan promises and the epsilon a hospital debits are the same number.
"""

from .accounting import epsilon_spent, history_key, merged_history, planned_epsilon, schedule
from .bounds import PlanBounds, evaluation_schedule, plan_problems

__all__ = ["schedule", "epsilon_spent", "history_key", "merged_history", "planned_epsilon", "PlanBounds",
           "plan_problems", "evaluation_schedule"]

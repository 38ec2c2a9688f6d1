"""The bounds a hospital puts on every privacy and training parameter of a study plan.

A plan is written by the researcher, so nothing in it is trusted: the reviewer checks it
against the site's bounds at approval, the datasite again before every execution, and
the vetted job itself against these defaults (so a job can never run on a plan no site
could have approved). Pure Python, imported by the worker, the reviewer and the datasite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

__all__ = ["PlanBounds", "plan_problems", "evaluation_schedule"]


@dataclass(frozen=True)
class PlanBounds:
    """Inclusive ranges; a site narrows them in its TOML (``[policy]``, same names)."""

    max_epsilon: float = 10.0  # the whole study at this site: DP-SGD plus evaluation
    max_delta: float = 1e-5
    min_noise_multiplier: float = 0.5
    max_noise_multiplier: float = 50.0
    min_grad_norm: float = 0.01
    max_grad_norm: float = 5.0
    max_lr: float = 1.0
    min_sample_rate: float = 0.001
    max_sample_rate: float = 0.5
    max_local_epochs: int = 5
    max_rounds: int = 100
    max_evaluations: int = 100
    max_eval_epsilon: float = 4.0  # one evaluation
    models: tuple[str, ...] = ("lstm", "mlp", "rwe_logreg")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _number(plan: dict, key: str) -> float | None:
    value = plan.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def evaluation_schedule(plan: dict) -> list[float]:
    """The epsilon of each evaluation call the plan allows, in order (``eval_epsilons``)."""
    schedule = plan.get("eval_epsilons")
    if not isinstance(schedule, (list, tuple)):
        raise ValueError("the plan lacks eval_epsilons (the epsilon of each evaluation); build it with "
                         "federation.StudyPlan")
    out = []
    for value in schedule:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError("every entry of eval_epsilons must be a finite, positive number")
        out.append(float(value))
    return out


def plan_problems(plan: dict, bounds: PlanBounds | None = None, *, training_epsilon: float | None = None) -> list[str]:
    """What in ``plan`` is outside ``bounds`` (empty: within). ``training_epsilon`` is the
    DP-SGD epsilon the plan spends (computed by the caller's accountant), added to the
    evaluation schedule for the study's total."""
    b = bounds or PlanBounds()
    problems = []

    def within(key, low, high, *, integer=False):
        value = _number(plan, key)
        if value is None:
            problems.append(f"{key} must be a finite number, got {type(plan.get(key)).__name__}")
        elif integer and value != int(value):
            problems.append(f"{key} must be a whole number")
        elif not low <= value <= high:
            problems.append(f"{key} {plan.get(key)} outside the site's range [{low}, {high}]")

    within("noise_multiplier", b.min_noise_multiplier, b.max_noise_multiplier)
    within("max_grad_norm", b.min_grad_norm, b.max_grad_norm)
    within("lr", 1e-6, b.max_lr)
    within("sample_rate", b.min_sample_rate, b.max_sample_rate)
    within("local_epochs", 1, b.max_local_epochs, integer=True)
    within("rounds", 1, b.max_rounds, integer=True)
    within("delta", 1e-12, b.max_delta)
    within("epsilon", 1e-6, b.max_epsilon)
    if "prox_mu" in plan:
        within("prox_mu", 0.0, 10.0)
    if plan.get("update_norm") is not None:
        within("update_norm", 1e-6, 1e6)
    within("seed", 0, 2**31 - 1, integer=True)  # public (model initialisation), but a number
    if plan.get("model") not in b.models:
        problems.append(f"model {plan.get('model')!r} is not one the site allows ({', '.join(b.models)})")
    try:
        schedule = evaluation_schedule(plan)
    except ValueError as exc:
        problems.append(str(exc))
        schedule = []
    if len(schedule) > b.max_evaluations:
        problems.append(f"{len(schedule)} evaluations planned; the site allows at most {b.max_evaluations}")
    if any(e > b.max_eval_epsilon for e in schedule):
        problems.append(f"an evaluation's epsilon is above the site's {b.max_eval_epsilon}")
    if training_epsilon is not None and not problems:
        total = training_epsilon + sum(schedule)
        if total > b.max_epsilon * (1 + 1e-6):
            problems.append(f"the study spends epsilon {total:.2f} here (training {training_epsilon:.2f}, "
                            f"evaluation {sum(schedule):.2f}); the site's maximum is {b.max_epsilon}")
    return problems

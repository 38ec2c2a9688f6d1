"""RDP accounting of DP-SGD (Opacus' accountant), as pure functions.

Imported by code inside the isolated worker (``datasites.jobs``) and by the datasite's
reviewer (``syft_policies``), so it imports neither.
"""

from __future__ import annotations

import functools

__all__ = ["schedule", "epsilon_spent", "history_key", "merged_history", "planned_epsilon"]


def schedule(sample_rate: float) -> tuple[int, float]:
    """Steps per epoch and the sampling rate the accountant sees: every epoch is k Poisson
    steps at rate exactly 1/k (Opacus' DPDataLoader takes int(1/rate) steps)."""
    steps = max(1, round(1 / sample_rate))
    return steps, 1 / steps


@functools.lru_cache(maxsize=256)
def epsilon_spent(history: tuple, delta: float) -> float:
    """Epsilon of an RDP accountant history (pure, so cached: sites of one study share it)."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta))


def merged_history(history) -> dict:
    """``{(noise_multiplier, sample_rate): steps}``: RDP composes additively over steps."""
    total: dict = {}
    for noise, rate, steps in history:
        key = (float(noise), float(rate))
        total[key] = total.get(key, 0) + int(steps)
    return total


def history_key(history) -> tuple:
    """A canonical, hashable history (equal (noise, rate) entries merged exactly)."""
    return tuple((noise, rate, steps) for (noise, rate), steps in merged_history(history).items())


def planned_epsilon(plan: dict) -> float | None:
    """Epsilon a study plan spends at a site over all its rounds, or None if incomplete."""
    try:
        per_epoch, rate = schedule(plan["sample_rate"])
        steps = plan["rounds"] * plan["local_epochs"] * per_epoch
        return epsilon_spent(((float(plan["noise_multiplier"]), rate, steps),), plan["delta"])
    except (KeyError, TypeError, ZeroDivisionError, ValueError):
        return None

"""How a round's site updates become the next global model.

A ``Strategy`` is small: which layers stay at the sites, how strongly local training is
pulled back to the global model, and ``aggregate``. The maths are pure numpy functions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from datasites.jobs.models import NORM_PREFIX

__all__ = ["Strategy", "FedAvg", "FedProx", "FedBN", "STRATEGIES", "make_strategy", "weighted_average"]


def weighted_average(updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """Sum of ``weights[i] * updates[i]`` over sites, divided by the sum of weights, per layer."""
    if not updates:
        raise ValueError("no updates to average: every site dropped out of this round")
    if len(updates) != len(weights):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(w)}")
    keys = set(updates[0])
    for u in updates[1:]:
        if set(u) != keys:
            raise ValueError(f"sites returned different layers: {sorted(keys ^ set(u))}")
    return {k: (sum(wi * np.asarray(u[k], np.float64) for wi, u in zip(w, updates)) / w.sum()).astype(np.float32)
            for k in updates[0]}


class Strategy(ABC):
    """What the researcher's side does with the sites' results each round."""

    name: str = "strategy"
    prox_mu: float = 0.0  # > 0: the vetted job pulls local weights towards the global ones (FedProx)

    def local_layers(self) -> tuple[str, ...]:
        """Name prefixes of layers that never leave the sites."""
        return ()

    @abstractmethod
    def aggregate(self, global_weights: dict, results: Mapping[str, dict]) -> dict:
        """Next global weights from ``results[site] = {"weights", "num_samples", ...}``."""


class FedAvg(Strategy):
    """McMahan et al. 2017: the sample-weighted mean of the sites' weights."""

    name = "fedavg"

    def aggregate(self, global_weights: dict, results: Mapping[str, dict]) -> dict:
        shared = weighted_average([r["weights"] for r in results.values()],
                                  [r["num_samples"] for r in results.values()])
        return {**global_weights, **shared}


class FedProx(FedAvg):
    """Li et al. 2020: FedAvg plus a proximal term ``mu/2 ||w - w_global||^2`` in local
    training, which limits client drift on non-IID sites."""

    name = "fedprox"

    def __init__(self, mu: float = 0.1):
        if mu <= 0:
            raise ValueError(f"FedProx needs mu > 0 (mu = 0 is FedAvg), got {mu}")
        self.prox_mu = float(mu)


class FedBN(FedAvg):
    """Li et al. 2021: normalisation layers stay local, so each site keeps the feature
    scaling that fits its own measurement habits; everything else is FedAvg."""

    name = "fedbn"

    def local_layers(self) -> tuple[str, ...]:
        return (NORM_PREFIX,)


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (FedAvg, FedProx, FedBN)}


def make_strategy(name: str, **options) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[name](**options)

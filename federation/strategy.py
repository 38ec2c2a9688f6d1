"""How a round's site updates become the next global model.

A ``Strategy`` is small: which layers stay at the sites, how strongly local training is
pulled back to the global model, and ``combine``. ``aggregate`` first quarantines every
reply that cannot be averaged (wrong layers or shapes, NaN or inf, a bad sample count) and
records why in ``strategy.quarantined``; the robust strategies also record the sites they
left out or shrank. The maths are pure numpy functions (here and in ``federation.robust``).
"""

from __future__ import annotations

import inspect
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from datasites.jobs.models import NORM_PREFIX, is_local

from . import robust

__all__ = ["Strategy", "FedAvg", "FedProx", "FedBN", "RobustStrategy", "Median", "TrimmedMean", "Krum", "MultiKrum",
           "NormBound", "STRATEGIES", "make_strategy", "weighted_average"]


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


def _signature(layers) -> tuple | None:
    """(layer, shape) pairs of a reply's weights, or None if they are not even layers."""
    try:
        return tuple(sorted((str(k), tuple(np.shape(v))) for k, v in layers.items()))
    except Exception:  # noqa: BLE001 - anything a site sends
        return None


def _whole(strategy: str, option: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{strategy}: {option} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _positive(strategy: str, option: str, value, *, below: float = math.inf) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or not 0 < value < below):
        limit = "" if below == math.inf else f" and below {below}"
        raise ValueError(f"{strategy}: {option} must be a finite number above 0{limit}, got {value!r}")
    return float(value)


class Strategy(ABC):
    """What the researcher's side does with the sites' results each round."""

    name: str = "strategy"
    prox_mu: float = 0.0  # > 0: the vetted job pulls local weights towards the global ones (FedProx)
    inspects_updates: bool = False  # True: reads each site's update; secure aggregation opens only the sum

    def __init__(self):
        self.quarantined: dict[str, str] = {}  # site -> why its update was left out or changed (last round)

    def local_layers(self) -> tuple[str, ...]:
        """Name prefixes of layers that never leave the sites."""
        return ()

    def min_updates(self) -> int:
        """Clean updates a round needs (after quarantine) for the rule to mean what it says."""
        return 1

    def _needs(self) -> str:
        """Why ``min_updates``, for the error message."""
        return ""

    def aggregate(self, global_weights: dict, results: Mapping[str, dict]) -> dict:
        """Next global weights from ``results[site] = {"weights", "num_samples", ...}``: replies
        that cannot be aggregated are quarantined first, then the clean ones are combined."""
        self.quarantined = {}
        clean = self.screen(global_weights, results)
        if len(clean) < self.min_updates():
            left = "; ".join(f"{s}: {why}" for s, why in self.quarantined.items()) or "none"
            need = self.min_updates()
            raise ValueError(f"{self.name} needs at least {need} clean update{'s' * (need > 1)}{self._needs()}, "
                             f"{len(clean)} of {len(results)} remain (quarantined: {left})")
        return self.combine(global_weights, clean)

    def screen(self, global_weights: Mapping, results: Mapping[str, dict]) -> dict[str, dict]:
        """The replies that can be aggregated; each other site goes to ``quarantined`` with why.

        The expected layers are the global model's shared ones (all but ``local_layers``);
        without global weights, the layer set most sites agree on."""
        local = self.local_layers()
        expected = {k: tuple(np.shape(v)) for k, v in global_weights.items()
                    if not is_local(k, local)}
        if not expected:
            votes: dict[tuple, int] = {}
            for r in results.values():
                sig = _signature(r.get("weights")) if isinstance(r, Mapping) else None
                if sig:
                    votes[sig] = votes.get(sig, 0) + 1
            expected = dict(max(votes, key=votes.get)) if votes else {}
        clean = {}
        for site, reply in results.items():
            if not isinstance(reply, Mapping) or "weights" not in reply:
                self.quarantined[site] = "reply has no weights"
                continue
            problem = robust.update_problem(reply["weights"], expected)
            n = reply.get("num_samples")
            if problem is None and (isinstance(n, bool) or not isinstance(n, numbers.Real)
                                    or not math.isfinite(n) or n <= 0):
                problem = f"num_samples must be a positive number, got {n!r}"
            if problem:
                self.quarantined[site] = problem
            else:
                clean[site] = reply
        return clean

    @abstractmethod
    def combine(self, global_weights: dict, results: Mapping[str, dict]) -> dict:
        """Next global weights from clean replies only."""


class FedAvg(Strategy):
    """McMahan et al. 2017: the sample-weighted mean of the sites' weights."""

    name = "fedavg"

    def combine(self, global_weights: dict, results: Mapping[str, dict]) -> dict:
        shared = weighted_average([r["weights"] for r in results.values()],
                                  [r["num_samples"] for r in results.values()])
        return {**global_weights, **shared}


class FedProx(FedAvg):
    """Li et al. 2020: FedAvg plus a proximal term ``mu/2 ||w - w_global||^2`` in local
    training, which limits client drift on non-IID sites."""

    name = "fedprox"

    def __init__(self, mu: float = 0.1):
        super().__init__()
        if isinstance(mu, bool) or not isinstance(mu, numbers.Real) or not math.isfinite(mu) or mu <= 0:
            raise ValueError(f"FedProx needs mu > 0 (mu = 0 is FedAvg), got {mu}")
        self.prox_mu = float(mu)


class FedBN(FedAvg):
    """Li et al. 2021: normalisation layers stay local, so each site keeps the feature
    scaling that fits its own measurement habits; everything else is FedAvg."""

    name = "fedbn"

    def local_layers(self) -> tuple[str, ...]:
        return (NORM_PREFIX,)


class RobustStrategy(Strategy):
    """A rule that limits what a few lying sites can do (``federation.robust``).

    It works on updates (a site's weights minus the global ones) and counts every site once:
    ``num_samples`` is the site's own claim, and a liar could claim a million patients."""

    inspects_updates = True

    def combine(self, global_weights: dict, results: Mapping[str, dict]) -> dict:
        sites = list(results)
        first = results[sites[0]]["weights"]
        keys = sorted(first)
        like = {k: global_weights[k] if k in global_weights else np.zeros(np.shape(first[k]), np.float32)
                for k in keys}
        self._check_reference(global_weights, keys)
        g = robust.flatten(like, keys)
        updates = np.stack([robust.flatten(results[s]["weights"], keys) - g for s in sites])
        step = self.rule(updates, sites)
        return {**global_weights, **robust.unflatten(g + step, like, keys)}

    def _check_reference(self, global_weights: Mapping, keys: Sequence[str]) -> None:
        """Median, trimmed mean and Krum do not depend on the reference point; norm bounding does."""

    @abstractmethod
    def rule(self, updates: np.ndarray, sites: Sequence[str]) -> np.ndarray:
        """The global step from the ``(n_sites, n_params)`` updates; records outliers it left out."""


class Median(RobustStrategy):
    """Coordinate-wise median (Yin et al. 2018): each parameter stays within the honest sites'
    range as long as fewer than half of the sites lie."""

    name = "median"

    def rule(self, updates: np.ndarray, sites: Sequence[str]) -> np.ndarray:
        return robust.coordinate_median(updates)


class TrimmedMean(RobustStrategy):
    """Coordinate-wise trimmed mean (Yin et al. 2018): per parameter, drop the ``count``
    largest and smallest values (or ``floor(fraction * n)``, at least 1) and average the rest.
    Closer to the mean than the median when every site is honest."""

    name = "trimmed-mean"

    def __init__(self, fraction: float | None = None, count: int | None = None):
        super().__init__()
        if fraction is not None and count is not None:
            raise ValueError("trimmed-mean: give fraction or count, not both")
        self.count = None if count is None else _whole(self.name, "count", count, 1)
        self.fraction = None if count is not None else _positive(
            self.name, "fraction", 0.2 if fraction is None else fraction, below=0.5)

    def trim(self, n: int) -> int:
        """Values dropped per side with ``n`` updates."""
        return self.count if self.count is not None else max(1, int(self.fraction * n))

    def min_updates(self) -> int:
        return 2 * (self.count or 1) + 1

    def _needs(self) -> str:
        return f" (trims {self.count or 'at least 1'} per side)"

    def rule(self, updates: np.ndarray, sites: Sequence[str]) -> np.ndarray:
        return robust.trimmed_mean(updates, self.trim(len(updates)))


class Krum(RobustStrategy):
    """Krum (Blanchard et al. 2017): the update with the smallest summed squared distance to
    its ``n - f - 2`` nearest neighbours, for at most ``f`` Byzantine sites; ``m > 1`` averages
    the ``m`` best (multi-Krum). Sites not selected are recorded in ``quarantined``."""

    name = "krum"
    default_m: int | None = 1

    def __init__(self, f: int = 1, m: int | None = None):
        super().__init__()
        self.f = _whole(self.name, "f", f, 0)
        m = self.default_m if m is None else m
        self.m = None if m is None else _whole(self.name, "m", m, 1)

    def selected(self, n: int) -> int:
        return self.m if self.m is not None else n - self.f

    def min_updates(self) -> int:
        return max(2 * self.f + 3, (self.m or 1) + self.f)

    def _needs(self) -> str:
        return f" (n > 2f + 2 and m <= n - f, with f={self.f}, m={self.m or 'n - f'})"

    def rule(self, updates: np.ndarray, sites: Sequence[str]) -> np.ndarray:
        scores = robust.krum_scores(updates, self.f)
        m = self.selected(len(updates))
        chosen = robust.krum_select(updates, self.f, m)
        rank = {int(i): r + 1 for r, i in enumerate(np.argsort(scores, kind="stable"))}
        for i, site in enumerate(sites):
            if i not in chosen:
                self.quarantined[site] = (f"not selected by {self.name} (f={self.f}, m={m}): score {scores[i]:.3g}, "
                                          f"rank {rank[i]} of {len(sites)}")
        return updates[chosen].mean(axis=0)


class MultiKrum(Krum):
    """Multi-Krum: the mean of the ``m`` updates Krum ranks best (default ``n - f``), which
    keeps most honest sites' information while still leaving out ``f`` outliers."""

    name = "multi-krum"
    default_m = None


class NormBound(RobustStrategy):
    """Norm bounding (Sun et al. 2019): each update is shrunk to L2 norm at most ``bound``
    (or ``median_multiple`` times the round's median update norm), then averaged. A scaled
    update then moves the model no more than an honest one; its direction is not judged.
    Shrunk sites are recorded in ``quarantined`` with their factor."""

    name = "norm-bound"

    def __init__(self, bound: float | None = None, median_multiple: float | None = None):
        super().__init__()
        if bound is not None and median_multiple is not None:
            raise ValueError("norm-bound: give bound or median_multiple, not both")
        self.bound = None if bound is None else _positive(self.name, "bound", bound)
        self.median_multiple = None if bound is not None else _positive(
            self.name, "median_multiple", 1.0 if median_multiple is None else median_multiple)

    def _check_reference(self, global_weights: Mapping, keys: Sequence[str]) -> None:
        missing = [k for k in keys if k not in global_weights]
        if missing:
            raise ValueError(f"norm-bound measures updates from the global weights; missing layers {missing}")

    def rule(self, updates: np.ndarray, sites: Sequence[str]) -> np.ndarray:
        norms = np.linalg.norm(updates, axis=1)
        bound = self.bound if self.bound is not None else self.median_multiple * float(np.median(norms))
        clipped, factors = robust.norm_bound(updates, bound)
        for site, norm, factor in zip(sites, norms, factors):
            if factor < 1:
                self.quarantined[site] = (f"norm-bounded: update norm {norm:.3g} > bound {bound:.3g}, "
                                          f"scaled by {factor:.3g}")
        return clipped.mean(axis=0)


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (FedAvg, FedProx, FedBN, Median, TrimmedMean, Krum,
                                                              MultiKrum, NormBound)}


def make_strategy(name: str, **options) -> Strategy:
    """The strategy registered as ``name``; unknown names and options are refused in one line."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; it takes {allowed or 'no options'}")
    return cls(**options)

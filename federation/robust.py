"""Byzantine-robust aggregation maths, in pure numpy.

A hospital's reply is trusted no more than the researcher's code: a compromised or buggy
site can send any vector. These rules bound what one such vector can do to the global
model. Each works on an ``(n_sites, n_params)`` matrix of *updates* (a site's weights
minus the global weights, flattened in one fixed layer order); the strategies in
``federation.strategy`` build that matrix and put the result back into layers.

* coordinate-wise median and trimmed mean (Yin et al. 2018): per parameter, the extreme
  values are ignored, so one site cannot move any coordinate beyond the honest range;
* Krum / multi-Krum (Blanchard et al. 2017): keep the updates closest to their
  ``n - f - 2`` nearest neighbours; an outlier is never selected while ``n > 2f + 2``;
* norm bounding (Sun et al. 2019): shrink each update to an L2 bound, so a scaled update
  counts no more than an honest one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["flatten", "unflatten", "update_problem", "coordinate_median", "trimmed_mean", "krum_scores",
           "krum_select", "clip_factors", "norm_bound"]


def flatten(layers: Mapping[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    """The layers ``keys`` (in that order) as one float64 vector."""
    if not keys:
        return np.zeros(0)
    return np.concatenate([np.ravel(np.asarray(layers[k], dtype=np.float64)) for k in keys])


def unflatten(vector: np.ndarray, like: Mapping[str, np.ndarray], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Inverse of :func:`flatten`: layers shaped (and typed) like ``like``."""
    out, start = {}, 0
    for k in keys:
        ref = np.asarray(like[k])
        out[k] = np.asarray(vector[start:start + ref.size]).reshape(ref.shape).astype(ref.dtype)
        start += ref.size
    if start != len(vector):
        raise ValueError(f"vector has {len(vector)} values, the layers {start}")
    return out


def update_problem(layers, expected: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why a site's ``layers`` cannot be aggregated (wrong layer set, a wrong shape, a
    non-numeric or non-finite value), or None. One line, naming the first problem."""
    if not isinstance(layers, Mapping):
        return f"weights must be a mapping of layers, got {type(layers).__name__}"
    missing, extra = sorted(set(expected) - set(layers)), sorted(set(layers) - set(expected))
    if missing or extra:
        return ("wrong layer set:" + (f" missing {missing}" if missing else "")
                + (f" unexpected {extra}" if extra else ""))
    for k, shape in expected.items():
        try:
            value = np.asarray(layers[k])
        except Exception as exc:  # noqa: BLE001 - anything a site sends
            return f"layer {k} is not an array ({type(exc).__name__})"
        if value.dtype.kind not in "fiu":
            return f"layer {k} is not numeric (dtype {value.dtype})"
        if value.shape != tuple(shape):
            return f"layer {k} has shape {value.shape}, expected {tuple(shape)}"
        bad = ~np.isfinite(value.astype(np.float64))
        if bad.any():
            nan = int(np.isnan(value.astype(np.float64)).sum())
            return f"non-finite values in layer {k} ({nan} NaN, {int(bad.sum()) - nan} inf)"
    return None


def _matrix(updates) -> np.ndarray:
    u = np.asarray(updates, dtype=np.float64)
    if u.ndim != 2 or len(u) == 0:
        raise ValueError(f"expected an (n_sites, n_params) matrix with at least one site, got shape {u.shape}")
    return u


def coordinate_median(updates) -> np.ndarray:
    """Per parameter, the median over sites (for an even count, the mean of the middle two)."""
    return np.median(_matrix(updates), axis=0)


def trimmed_mean(updates, trim: int) -> np.ndarray:
    """Per parameter, the mean after dropping the ``trim`` largest and ``trim`` smallest values."""
    u = _matrix(updates)
    if isinstance(trim, bool) or not isinstance(trim, (int, np.integer)) or trim < 0:
        raise ValueError(f"trim must be a whole number >= 0, got {trim!r}")
    if len(u) <= 2 * trim:
        raise ValueError(f"trimming {trim} per side needs more than {2 * trim} updates, got {len(u)}")
    return np.sort(u, axis=0)[trim:len(u) - trim].mean(axis=0)


def krum_scores(updates, f: int) -> np.ndarray:
    """Each update's Krum score: the sum of squared distances to its ``n - f - 2`` nearest
    other updates. Needs ``n > 2f + 2`` so that honest neighbours outnumber the rest."""
    u = _matrix(updates)
    n = len(u)
    if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 0:
        raise ValueError(f"f must be a whole number >= 0, got {f!r}")
    if n <= 2 * f + 2:
        raise ValueError(f"Krum with f={f} needs more than {2 * f + 2} updates (n > 2f + 2), got {n}")
    d = np.stack([np.sum((u - row) ** 2, axis=1) for row in u])  # exact, O(n d) memory
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :n - f - 2].sum(axis=1)


def krum_select(updates, f: int, m: int = 1) -> np.ndarray:
    """Indices of the ``m`` updates with the lowest Krum scores, best first (ties: lower index)."""
    scores = krum_scores(updates, f)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= len(scores) - f:
        raise ValueError(f"m must be a whole number from 1 to n - f = {len(scores) - f}, got {m!r}")
    return np.argsort(scores, kind="stable")[:m]


def clip_factors(updates, bound: float) -> np.ndarray:
    """Per update, ``min(1, bound / ||update||)``: what norm bounding multiplies it by (1 for
    an update already within the bound, a zero update included)."""
    u = _matrix(updates)
    if isinstance(bound, bool) or not (np.isfinite(bound) and bound >= 0):
        raise ValueError(f"the norm bound must be a finite number >= 0, got {bound!r}")
    norms = np.linalg.norm(u, axis=1)
    factors = np.ones(len(u))
    over = norms > bound
    factors[over] = bound / norms[over]
    return factors


def norm_bound(updates, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """The updates shrunk to L2 norm at most ``bound`` (direction kept), and the factors used."""
    factors = clip_factors(updates, bound)
    return _matrix(updates) * factors[:, None], factors

"""The vetted DP query job: counts, sums, means, histograms, quantiles, contingency tables
and regression statistics over declared columns, each answer noised by OpenDP at the hospital.

The plan (``privacy.queries``: columns, bounds, edges, levels, candidates, each query's
epsilon) is pinned at approval. The job checks it against the asset's schema, has the
datasite debit the plan's total epsilon (sequential composition over the queries; the
disjoint groups of one query compose in parallel) before it reads a value, then answers
every query with an OpenDP measurement whose noise scale is set from OpenDP's own privacy
map at one patient added or removed, so the stated epsilon is the proven one:

- counts, histograms, contingency tables: OpenDP's count by categories over the declared
  cells (L1 sensitivity 1), discrete Laplace;
- sums (and each mean's sum): clamp to the declared bounds, OpenDP's bounded sum (its
  float-rounding allowance included), Laplace, which OpenDP samples exactly on a
  discretised grid (no floating-point attack);
- quantiles: OpenDP's private quantile (quantile score and exponential mechanism) over the
  declared candidates; the answer is the candidate's index;
- regression: OpenDP bounded sums of each product z_i z_j (z = 1, x, y clamped), the same
  Laplace scale on each, their epsilons summed (basic composition).

OpenDP draws its noise from the operating system's CSPRNG; nothing here is seeded. Nothing
exact leaves: no suppression decision looks at a true count, the reply repeats none of the
plan's values (they are the researcher's already, and the release policy must not compare
them with the data), and an error after the debit never carries a value.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from privacy.queries import (QueryPlanError, check_query_plan, product_bounds, query_epsilon, query_sensitivity,
                             regression_bounds)

from .receipt import receipt
from .site import Refused, hospital

__all__ = ["dp_query", "answer_plan", "pay", "run_queries", "laplace"]

MECHANISM = {
    "count": "OpenDP count by categories, discrete Laplace",
    "sum": "OpenDP clamp, bounded sum, Laplace",
    "mean": "OpenDP count (discrete Laplace) and bounded sum (Laplace), epsilon / 2 each",
    "histogram": "OpenDP count by categories over declared bins, discrete Laplace",
    "contingency": "OpenDP count by categories over declared cells, discrete Laplace",
    "quantile": "OpenDP private quantile (exponential mechanism over declared candidates)",
    "linear_regression": "OpenDP bounded sums of z z' (z = 1, x, y clamped), Laplace",
}


def _dp():
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def _calibrated(build, epsilon: float) -> list:
    """The measurements ``build(scale)`` at the scale where OpenDP's privacy map, summed over
    them (sequential composition) for one patient added or removed, is at most ``epsilon``."""
    scale = sum(float(m.map(1)) for m in build(1.0)) / epsilon  # each map is inverse in the scale
    for _ in range(32):
        measurements = build(scale)
        if sum(float(m.map(1)) for m in measurements) <= epsilon:
            return measurements
        scale *= 1 + 1e-9
    raise RuntimeError("OpenDP could not calibrate the noise to the stated epsilon")


@lru_cache(maxsize=256)
def _count_measurement(n: int, epsilon: float):
    dp = _dp()
    counter = (dp.vector_domain(dp.atom_domain(T=int)), dp.symmetric_distance()) \
        >> dp.t.then_count_by_categories(categories=list(range(n)), null_category=False)
    measurement, = _calibrated(lambda s: [counter >> dp.m.then_laplace(s)], epsilon)
    return measurement


def _counts(cells: np.ndarray, n: int, epsilon: float) -> list[int]:
    """Noised number of rows in each of ``n`` declared cells (``cells``: each row's cell, -1 for
    none). A patient is in at most one cell, so L1 sensitivity 1 whatever ``n``."""
    measurement = _count_measurement(int(n), float(epsilon))
    return [int(v) for v in measurement(cells[cells >= 0].astype(int).tolist())]


def _summer(bounds):
    dp = _dp()
    return (dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance()) \
        >> dp.t.then_clamp((float(bounds[0]), float(bounds[1]))) >> dp.t.then_sum()


@lru_cache(maxsize=256)
def _sum_measurement(bounds: tuple, epsilon: float):
    dp, summer = _dp(), _summer(bounds)
    measurement, = _calibrated(lambda s: [summer >> dp.m.then_laplace(s)], epsilon)
    return measurement


def _sums(groups: list[np.ndarray], bounds, epsilon: float) -> list[float]:
    """Noised sum of each group's values clamped to ``bounds`` (disjoint groups: one measurement each)."""
    measurement = _sum_measurement(tuple(map(float, bounds)), float(epsilon))
    return [float(measurement(v.tolist())) for v in groups]


@lru_cache(maxsize=256)
def _quantile_measurement(candidates: tuple, q: float, epsilon: float):
    dp = _dp()
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    measurement, = _calibrated(lambda s: [dp.m.make_private_quantile(
        domain, dp.symmetric_distance(), dp.max_divergence(), candidates=list(candidates), alpha=q, scale=s)],
        epsilon)
    return measurement


def _quantiles(groups: list[np.ndarray], candidates, q: float, epsilon: float) -> list[int]:
    """Index of the candidate OpenDP's exponential mechanism picks as the ``q`` quantile, per group."""
    candidates = tuple(float(c) for c in candidates)
    measurement = _quantile_measurement(candidates, float(q), float(epsilon))
    return [int(np.searchsorted(candidates, float(measurement(v.tolist())))) for v in groups]


@lru_cache(maxsize=64)
def _gram_measurements(bounds: tuple, epsilon: float) -> tuple:
    dp = _dp()
    pairs = [(i, j) for i in range(len(bounds)) for j in range(i, len(bounds))]
    summers = [_summer(product_bounds(bounds, i, j)) for i, j in pairs]
    return tuple(zip(pairs, _calibrated(lambda s: [m >> dp.m.then_laplace(s) for m in summers], epsilon)))


def _gram(groups: list[np.ndarray], bounds: list, epsilon: float) -> list[list[float]]:
    """Noised upper triangle of z'z per group (``bounds``: of each column of z). One Laplace
    scale for every entry; OpenDP's maps of the entries add up to ``epsilon``."""
    measurements = _gram_measurements(tuple(tuple(map(float, b)) for b in bounds), float(epsilon))
    return [[float(m((z[:, i] * z[:, j]).tolist())) for (i, j), m in measurements] for z in groups]


def _levels(frame, column: str, levels) -> np.ndarray:
    """Each row's index among the declared ``levels`` of ``column``, -1 for none."""
    series = frame[column]
    if isinstance(levels[0], str):
        values = series.astype(str).to_numpy()
        wanted = list(levels)
    else:
        values = series.to_numpy(dtype=float)
        wanted = [float(v) for v in levels]
    index = np.full(len(frame), -1)
    for k, level in enumerate(wanted):
        index[values == level] = k
    return index


def _values(frame, column: str) -> np.ndarray:
    return frame[column].to_numpy(dtype=float)


def _answer(frame, q: dict) -> dict:
    kind, epsilon = q["kind"], q["epsilon"]
    by = q.get("by")
    group = np.zeros(len(frame), int) if by is None else _levels(frame, by["column"], by["levels"])
    n_groups = 1 if by is None else len(by["levels"])
    if kind == "count":
        return {"count": _counts(group, n_groups, epsilon)}
    if kind in ("sum", "mean"):
        values = _values(frame, q["column"])
        present = group.copy()
        present[~np.isfinite(values)] = -1  # rows missing the value fall out (each row by itself)
        share = epsilon / 2 if kind == "mean" else epsilon
        sums = _sums([values[present == g] for g in range(n_groups)], q["bounds"], share)
        if kind == "sum":
            return {"sum": sums}
        counts = _counts(present, n_groups, share)
        return {"sum": sums, "count": counts, "mean": [s / c if c > 0 else None for s, c in zip(sums, counts)]}
    if kind == "histogram":
        values = _values(frame, q["column"])
        bins = len(q["edges"]) + 1
        cell = np.where((group >= 0) & np.isfinite(values),
                        group * bins + np.searchsorted(q["edges"], np.nan_to_num(values), side="right"), -1)
        counts = _counts(cell, n_groups * bins, epsilon)
        return {"counts": [counts[g * bins:(g + 1) * bins] for g in range(n_groups)]}
    if kind == "contingency":
        (a, b), (la, lb) = q["columns"], q["levels"]
        ia, ib = _levels(frame, a, la), _levels(frame, b, lb)
        size = len(la) * len(lb)
        cell = np.where((group >= 0) & (ia >= 0) & (ib >= 0), group * size + ia * len(lb) + ib, -1)
        counts = _counts(cell, n_groups * size, epsilon)
        return {"tables": [[counts[g * size + i * len(lb):g * size + (i + 1) * len(lb)] for i in range(len(la))]
                           for g in range(n_groups)]}
    if kind == "quantile":
        values = _values(frame, q["column"])
        groups = [values[(group == g) & np.isfinite(values)] for g in range(n_groups)]
        return {"index": _quantiles(groups, q["candidates"], q["q"], epsilon)}
    # linear_regression: noised sufficient statistics over complete rows (terms 1, *x, y: the
    # plan's own order, not repeated here); the researcher solves
    names = [*q["x"], q["y"]]
    raw = np.column_stack([_values(frame, c) for c in names])
    complete = np.isfinite(raw).all(axis=1)
    z = np.column_stack([np.ones(len(frame))] + [np.clip(np.nan_to_num(raw[:, k]), *q["bounds"][c])
                                                 for k, c in enumerate(names)])
    return {"upper_triangle": _gram([z[complete & (group == g)] for g in range(n_groups)], regression_bounds(q),
                                    epsilon)}


def _schema(frame) -> dict:
    """Column name -> numeric (the asset's public schema, not its values)."""
    return {str(c): frame[c].dtype.kind in "fiub" for c in frame.columns}


def run_queries(frame, plan: dict) -> dict:
    """Every query's noised answer and receipt. No debit: callers pay first (:func:`answer_plan`);
    experiments and tests call it directly on frames they own."""
    out = {}
    for q in check_query_plan(plan, columns=_schema(frame)):
        try:
            answer = _answer(frame, q)
        except Exception:  # noqa: BLE001 - whatever failed, its message may quote a value
            raise RuntimeError(f"query {q['name']!r} failed at the hospital") from None
        groups = 1 if q["by"] is None else len(q["by"]["levels"])
        answer["receipt"] = receipt(MECHANISM[q["kind"]], epsilon=q["epsilon"], budget_remaining=None,
                                    sensitivity=query_sensitivity(q), groups=groups)
        out[q["name"]] = answer
    return out


def pay(plan: dict, *, columns: dict, reference: str) -> float | None:
    """Check ``plan`` against the asset's schema ``columns`` and debit its total epsilon (a bad
    plan costs nothing); returns the budget left. Call before reading a value."""
    try:
        check_query_plan(plan, columns=columns)
    except QueryPlanError as exc:
        raise Refused(str(exc)) from None
    return hospital().debit(query_epsilon(plan), reference=reference)


def _reply(answers: dict, plan: dict, left: float | None) -> dict:
    return {"answers": answers,
            "receipt": receipt("OpenDP; sequential composition over queries, parallel over each query's groups",
                               epsilon=query_epsilon(plan), budget_remaining=left, queries=len(answers))}


def answer_plan(frame, plan: dict, *, reference: str, asset: str | None = None) -> dict:
    """Pay for ``plan`` (:func:`pay`), then answer it on ``frame``. ``asset``: the site's Safe
    Harbor check runs on the frame first (after the debit: its verdict depends on the values)."""
    from .compliance import require_compliant

    left = pay(plan, columns=_schema(frame), reference=reference)
    if asset is not None:
        require_compliant(frame, name=asset)
    return _reply(run_queries(frame, plan), plan, left)


def dp_query(cohort, plan: dict) -> dict:
    """Answer the approved query plan on this hospital's ``sepsis_cohort`` (one row per patient)."""
    from .cohort import COHORT_ASSET, check_frame

    try:  # the asset's columns (one row per patient) and the plan: public, refused in one line, unpaid
        frame = check_frame(cohort)
        check_query_plan(plan, columns=_schema(frame))
    except (TypeError, ValueError) as exc:
        raise Refused(f"dp_query: {exc}") from None
    return answer_plan(frame, plan, reference=f"{plan['study']}/dp_query", asset=COHORT_ASSET)


def laplace(values, *, sensitivity: float, epsilon: float) -> list[float]:
    """OpenDP's Laplace on a vector whose L1 sensitivity is ``sensitivity``, at ``epsilon``
    (for jobs that compute their own cells, e.g. the RWE statistics before encryption)."""
    dp = _dp()
    space = (dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float))
    unit = float(sensitivity)
    scale = unit / epsilon
    for _ in range(32):
        measurement = dp.m.make_laplace(*space, scale=scale)
        if measurement.map(unit) <= epsilon:
            return [float(v) for v in measurement([float(x) for x in values])]
        scale *= 1 + 1e-9
    raise RuntimeError("OpenDP could not calibrate the noise to the stated epsilon")

"""The vetted DP query job: counts, sums, means, histograms, quantiles, contingency tables
and regression statistics, each answer noised by OpenDP at the hospital.

The plan (``privacy.queries``: columns, bounds, edges, categories, epsilon of each query)
is pinned at approval. The job checks it, asks the datasite to debit the plan's total
epsilon before it reads a row, then answers every query with OpenDP's mechanisms
(discrete Laplace on counts, Laplace on clamped sums; OpenDP draws from the operating
system's CSPRNG and its floating-point Laplace is safe against the known attacks). Small
noised counts are shown as None (post-processing of the noised value, never of the true
one). The reply carries a privacy receipt per query and for the call.
"""

from __future__ import annotations

import numpy as np

from privacy.queries import check_query_plan, query_epsilon, query_sensitivity

from .receipt import receipt
from .site import hospital

__all__ = ["dp_query", "run_queries", "noisy_counts", "noisy_sums"]


def _schema(frame) -> dict:
    """Column name -> numeric (public: the asset's schema, not its values)."""
    return {str(c): frame[c].dtype.kind in "fiub" for c in frame.columns}


def _mechanism(sensitivity: float, epsilon: float, *, integer: bool):
    import opendp.prelude as dp

    dp.enable_features("contrib")
    if integer:
        domain, metric = dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)
        measurement = dp.m.make_laplace(domain, metric, scale=float(sensitivity) / epsilon)
        assert measurement.map(int(sensitivity)) <= epsilon * (1 + 1e-9)
    else:
        domain, metric = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float)
        measurement = dp.m.make_laplace(domain, metric, scale=float(sensitivity) / epsilon)
        assert measurement.map(float(sensitivity)) <= epsilon * (1 + 1e-9)
    return measurement


def noisy_counts(counts, epsilon: float) -> list[int]:
    return [int(v) for v in _mechanism(1, epsilon, integer=True)([int(c) for c in counts])]


def noisy_sums(sums, sensitivity: float, epsilon: float) -> list[float]:
    return [float(v) for v in _mechanism(sensitivity, epsilon, integer=False)([float(s) for s in sums])]


def _groups(frame, query) -> list:
    """Disjoint row masks, one per declared level of ``by`` (rows at other values fall out)."""
    by = query.get("by")
    if by is None:
        return [np.ones(len(frame), bool)]
    values = frame[by["column"]].to_numpy(dtype=float)
    return [values == float(level) for level in by["levels"]]


def _column(frame, name, bounds=None) -> np.ndarray:
    values = frame[name].to_numpy(dtype=float)
    if bounds is not None:
        values = np.clip(np.nan_to_num(values, nan=bounds[0]), *bounds)
    return values


def _answer(frame, q: dict) -> dict:
    kind, epsilon, groups = q["kind"], float(q["epsilon"]), _groups(frame, q)
    if kind == "count":
        return {"count": noisy_counts([m.sum() for m in groups], epsilon)}
    if kind in ("sum", "mean"):
        values = _column(frame, q["column"], q["bounds"])
        share = epsilon / 2 if kind == "mean" else epsilon
        out = {"sum": noisy_sums([values[m].sum() for m in groups], query_sensitivity(q), share)}
        if kind == "mean":
            out["count"] = noisy_counts([m.sum() for m in groups], share)
            out["mean"] = [s / c if c > 0 else None for s, c in zip(out["sum"], out["count"])]
        return out
    if kind in ("histogram", "quantile"):
        edges = np.asarray(q["edges"] if kind == "histogram" else q["candidates"], float)
        values = frame[q["column"]].to_numpy(dtype=float)
        cells = []
        for m in groups:
            which = np.searchsorted(edges, values[m & np.isfinite(values)], side="right")
            cells.append(noisy_counts(np.bincount(which, minlength=len(edges) + 1), epsilon))
        if kind == "histogram":
            return {"edges": [float(e) for e in edges], "counts": cells}
        return {"candidates": [float(e) for e in edges], "q": float(q["q"]), "counts": cells,
                "quantile": [_read_quantile(c, edges, float(q["q"])) for c in cells]}
    if kind == "contingency":
        (a, b), (la, lb) = q["columns"], q["levels"]
        va, vb = frame[a].to_numpy(dtype=float), frame[b].to_numpy(dtype=float)
        tables = []
        for m in groups:
            counts = [int((m & (va == float(x)) & (vb == float(y))).sum()) for x in la for y in lb]
            noisy = noisy_counts(counts, epsilon)
            tables.append([noisy[i * len(lb):(i + 1) * len(lb)] for i in range(len(la))])
        return {"rows": [float(x) for x in la], "columns": [float(y) for y in lb], "tables": tables}
    # linear_regression: noised sufficient statistics, the researcher solves
    names = [*q["x"], q["y"]]
    z = np.column_stack([np.ones(len(frame))] + [_column(frame, c, q["bounds"][c]) for c in names])
    upper = np.triu_indices(z.shape[1])
    stats = []
    for m in groups:
        gram = z[m].T @ z[m]
        stats.append(noisy_sums(gram[upper], query_sensitivity(q), epsilon))
    return {"terms": ["1", *names], "upper_triangle": stats}


def _read_quantile(counts, candidates, q: float):
    """The candidate at or below which the q-th noised patient lies (the lower edge of the
    candidate interval where the noised cumulative count reaches q of the noised total)."""
    counts = np.clip(np.asarray(counts, float), 0, None)
    total = counts.sum()
    if total <= 0:
        return None
    at = int(np.searchsorted(np.cumsum(counts), q * total))
    return float(candidates[min(max(at - 1, 0), len(candidates) - 1)])


def run_queries(frame, plan: dict) -> dict:
    """Every query's noised answer and receipt (no debit: :func:`dp_query` pays first)."""
    out = {}
    for q in check_query_plan(plan, columns=_schema(frame)):
        answer = _answer(frame, q)
        answer["receipt"] = receipt(
            "OpenDP discrete Laplace (counts) / Laplace (clamped sums)", epsilon=float(q["epsilon"]),
            budget_remaining=None, sensitivity=query_sensitivity(q),
            groups=None if q.get("by") is None else [float(v) for v in q["by"]["levels"]])
        out[q["name"]] = answer
    return out


def dp_query(cohort, plan: dict) -> dict:
    """Answer the approved query plan on this hospital's asset, paid before it is read."""
    frame = getattr(cohort, "syft_action_data", cohort)
    check_query_plan(plan, columns=_schema(frame))  # a bad plan costs nothing
    total = query_epsilon(plan)
    left = hospital().debit(total, reference=f"{plan.get('study', 'query')}/dp_query")
    answers = run_queries(frame, plan)
    return {"answers": answers, "receipt": receipt("OpenDP, sequential composition over the plan's queries",
                                                  epsilon=total, budget_remaining=left)}

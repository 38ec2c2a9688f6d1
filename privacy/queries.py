"""A DP query plan: what a researcher may ask a hospital's data, declared before it is read.

Every column, bound, bin edge, category and candidate is declared in the plan, which is
pinned at approval like a study plan; nothing about the answer's shape depends on the
private data. Pure Python: the reviewer prices a plan with :func:`query_epsilon`, and the
vetted job (``datasites.jobs.query``) refuses what :func:`check_query_plan` refuses.

Kinds and their sensitivity under adding or removing one patient (each query's patients
are split by its declared ``by`` levels into disjoint groups, so a query costs its epsilon
once, whatever the number of groups: parallel composition):

- ``count``: rows per group; each count moves by 1 (L1 1);
- ``sum`` of a column clamped to ``bounds`` [lo, hi]: moves by max(|lo|, |hi|);
- ``mean``: a ``count`` and a ``sum`` at half the epsilon each, divided by the researcher;
- ``histogram`` over declared ``edges`` (plus a bin below and above): L1 1;
- ``contingency`` over two declared categorical columns and their ``levels``: L1 1;
- ``quantile`` at ``q`` among declared ``candidates``: a noised histogram over the
  candidates (L1 1), read off by the researcher;
- ``linear_regression`` of ``y`` on ``x``: the upper triangle of sum z z' with
  z = (1, x clamped, y clamped); one patient moves each entry (i, j) by at most
  B_i B_j (B the larger absolute bound), so L1 is the sum of those products.
"""

from __future__ import annotations

import math

__all__ = ["KINDS", "check_query_plan", "query_epsilon", "query_sensitivity", "columns_used", "QueryPlanError",
           "MAX_QUERIES", "MAX_CELLS"]

KINDS = ("count", "sum", "mean", "histogram", "contingency", "quantile", "linear_regression")
MAX_QUERIES = 20
MAX_CELLS = 256  # numbers one query may release (the release policy's list limit)
MAX_EPSILON = 10.0


class QueryPlanError(ValueError):
    """The query plan cannot run as written; the message says what to change."""


def _finite(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise QueryPlanError(f"{what} must be a finite number")
    return float(value)


def _bounds(pair, what: str) -> tuple[float, float]:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise QueryPlanError(f"{what} must be [low, high]")
    lo, hi = _finite(pair[0], f"{what} low"), _finite(pair[1], f"{what} high")
    if not lo < hi:
        raise QueryPlanError(f"{what}: low must be below high")
    return lo, hi


def _levels(values, what: str) -> list:
    if not isinstance(values, (list, tuple)) or not 1 <= len(values) <= 64 or len(set(values)) != len(values):
        raise QueryPlanError(f"{what} must list 1 to 64 distinct declared values")
    return [_finite(v, what) for v in values]


def _groups(query: dict, name: str) -> int:
    by = query.get("by")
    if by is None:
        return 1
    if not isinstance(by, dict) or not isinstance(by.get("column"), str):
        raise QueryPlanError(f"query {name!r}: by must be {{'column': ..., 'levels': [...]}}")
    return len(_levels(by.get("levels"), f"query {name!r} by.levels"))


def columns_used(query: dict) -> list:
    kind = query.get("kind")
    used = [query.get("column")] if kind in ("sum", "mean", "histogram", "quantile") else \
        list(query.get("columns") or []) if kind == "contingency" else \
        [*(query.get("x") or []), query.get("y")] if kind == "linear_regression" else []
    if query.get("by") is not None:
        used.append((query.get("by") or {}).get("column"))
    return used


def query_sensitivity(query: dict) -> float:
    """The L1 sensitivity of a (checked) query's released vector before its mechanism."""
    kind = query["kind"]
    if kind in ("sum", "mean"):  # a mean's count half has sensitivity 1
        lo, hi = query["bounds"]
        return max(abs(lo), abs(hi))
    if kind == "linear_regression":
        b = [1.0] + [max(abs(lo), abs(hi)) for lo, hi in (query["bounds"][c] for c in [*query["x"], query["y"]])]
        return sum(b[i] * b[j] for i in range(len(b)) for j in range(i, len(b)))
    return 1.0  # counts, histograms, contingency tables, candidate histograms; a mean's halves


def check_query_plan(plan: dict, columns=None) -> list[dict]:
    """The plan's queries, checked; raises :class:`QueryPlanError` (one line) otherwise.
    ``columns``: the asset's column names, when known (a dict: name -> is numeric)."""
    if not isinstance(plan, dict) or not isinstance(plan.get("queries"), list) or not plan["queries"]:
        raise QueryPlanError("a query plan is {'study': ..., 'queries': [...]} with at least one query")
    queries = plan["queries"]
    if len(queries) > MAX_QUERIES:
        raise QueryPlanError(f"at most {MAX_QUERIES} queries per plan")
    names = set()
    for q in queries:
        if not isinstance(q, dict):
            raise QueryPlanError("each query is a dict")
        name = str(q.get("name", ""))
        if not name or name in names:
            raise QueryPlanError("each query needs a distinct name")
        names.add(name)
        kind = q.get("kind")
        if kind not in KINDS:
            raise QueryPlanError(f"query {name!r}: kind must be one of {', '.join(KINDS)}")
        epsilon = _finite(q.get("epsilon"), f"query {name!r} epsilon")
        if not 0 < epsilon <= MAX_EPSILON:
            raise QueryPlanError(f"query {name!r}: epsilon must be in (0, {MAX_EPSILON}]")
        used = columns_used(q)
        if any(not isinstance(c, str) for c in used):
            raise QueryPlanError(f"query {name!r}: name its columns")
        if columns is not None:
            unknown = sorted(set(used) - set(columns))
            if unknown:
                raise QueryPlanError(f"query {name!r}: unknown columns {unknown}")
            text = sorted(c for c in used if not columns[c]) if isinstance(columns, dict) else []
            if text:
                raise QueryPlanError(f"query {name!r}: columns {text} are not numeric")
        cells = _groups(q, name)
        if kind in ("sum", "mean"):
            _bounds(q.get("bounds"), f"query {name!r} bounds")
            cells *= 2
        elif kind == "histogram":
            edges = q.get("edges")
            if not isinstance(edges, list) or not 1 <= len(edges) <= 128:
                raise QueryPlanError(f"query {name!r}: edges must list 1 to 128 declared values")
            values = [_finite(e, f"query {name!r} edges") for e in edges]
            if values != sorted(set(values)):
                raise QueryPlanError(f"query {name!r}: edges must increase")
            cells *= len(values) + 1
        elif kind == "quantile":
            candidates = q.get("candidates")
            if not isinstance(candidates, list) or not 2 <= len(candidates) <= 200:
                raise QueryPlanError(f"query {name!r}: candidates must list 2 to 200 declared values")
            values = [_finite(c, f"query {name!r} candidates") for c in candidates]
            if values != sorted(set(values)):
                raise QueryPlanError(f"query {name!r}: candidates must increase")
            if not 0 < _finite(q.get("q"), f"query {name!r} q") < 1:
                raise QueryPlanError(f"query {name!r}: q must be in (0, 1)")
            cells *= len(values) + 1
        elif kind == "contingency":
            cols, levels = q.get("columns"), q.get("levels")
            if not isinstance(cols, list) or len(cols) != 2 or not isinstance(levels, list) or len(levels) != 2:
                raise QueryPlanError(f"query {name!r}: contingency takes two columns and their levels")
            cells *= len(_levels(levels[0], name)) * len(_levels(levels[1], name))
        elif kind == "linear_regression":
            x, bounds = q.get("x"), q.get("bounds")
            if not isinstance(x, list) or not 1 <= len(x) <= 10 or not isinstance(bounds, dict):
                raise QueryPlanError(f"query {name!r}: x lists 1 to 10 columns, bounds gives [low, high] for each "
                                     "column and y")
            for c in [*x, q.get("y")]:
                _bounds(bounds.get(c), f"query {name!r} bounds of {c}")
            k = len(x) + 2
            cells *= k * (k + 1) // 2
        if cells > MAX_CELLS:
            raise QueryPlanError(f"query {name!r} would release {cells} numbers; at most {MAX_CELLS}")
    return queries


def query_epsilon(plan: dict) -> float:
    """What one execution of the plan costs: its queries' epsilons (sequential composition)."""
    return float(sum(_finite(q.get("epsilon"), "epsilon") for q in check_query_plan(plan)))

"""A DP query plan: what a researcher may ask a hospital's data, declared before it is read.

Every column, bound, bin edge, category and candidate is declared in the plan, which is
pinned at approval like a study plan; nothing about the answer's shape depends on the
private data. Pure Python: the reviewer prices a plan with :func:`query_epsilon`, and the
vetted job (``datasites.jobs.query``) refuses what :func:`check_query_plan` refuses, before
anything is paid.

A plan is ``{"study": id, "queries": [query, ...]}``; a query is a dict with a ``name``
(letters, digits, ``_``), a ``kind``, its own ``epsilon`` and optionally ``by``: a declared
categorical column and its public levels, ``{"column": "male", "levels": [0, 1]}`` or
``{"male": [0, 1]}``. Rows at other values fall out of the query. Neighbouring datasets
differ by adding or removing one patient (one row of the ``sepsis_cohort`` asset).
Composition: a plan costs the sum of its queries' epsilons (sequential composition); the
groups of one query are disjoint (a row has one value of the ``by`` column), so one
patient changes one group only and the query costs its epsilon once, however many groups
(parallel composition).

Kinds and their sensitivity (the job asks OpenDP for the map of each measurement and sets
the noise scale from it, so the epsilon stated is the epsilon OpenDP proves):

- ``count``: patients per group (OpenDP's count by categories): L1 1, discrete Laplace;
- ``sum`` of ``column`` clamped to ``bounds`` [lo, hi] (rows missing it fall out):
  max(|lo|, |hi|) for one-signed bounds, hi - lo for bounds that straddle zero (OpenDP's
  bounded float sum; plus its float-rounding allowance, about 1e-8 relative), Laplace;
- ``mean``: a ``count`` and a ``sum`` of the rows that have the column, epsilon / 2 each;
  the mean is their ratio (post-processing);
- ``histogram`` over declared ``edges`` (k edges, k + 1 bins, open at both ends): L1 1;
- ``contingency`` of two declared categorical ``columns`` and their ``levels``: L1 1;
- ``quantile`` ``q`` among declared ``candidates``: OpenDP's private quantile (the
  quantile score, sensitivity max(q, 1 - q) in its units, and the exponential mechanism);
  the answer is the index of the chosen candidate;
- ``linear_regression`` of ``y`` on ``x``: the upper triangle of sum z z' with
  z = (1, x clamped, y clamped) over complete rows; entry (i, j) is a bounded sum of
  z_i z_j, whose range follows from the declared bounds, so its sensitivity is as for
  ``sum`` (B_i B_j for nonnegative bounds, B the larger absolute bound, 1 for the
  constant) and L1 is their total; every entry gets Laplace noise of the same scale
  L1 / epsilon. The researcher solves the normal equations (post-processing).
"""

from __future__ import annotations

import math
import re

__all__ = ["KINDS", "check_query_plan", "query_epsilon", "query_sensitivity", "sum_sensitivity", "product_bounds",
           "regression_bounds", "columns_used", "QueryPlanError", "MAX_QUERIES", "MAX_CELLS", "MAX_LEVELS",
           "MIN_EPSILON", "MAX_EPSILON"]

KINDS = ("count", "sum", "mean", "histogram", "contingency", "quantile", "linear_regression")
MAX_QUERIES = 20
MAX_CELLS = 256  # numbers one query may release (the release policy's longest list); 20 x 256 << 65,536
MAX_LEVELS = 64  # declared levels of one categorical column
MAX_EPSILON = 10.0  # one query; the review caps the plan by the site's maximum
MIN_EPSILON = 1e-6  # below it the noise overflows OpenDP's samplers (and answers nothing)
MAX_BOUND = 1e9  # a declared bound (larger ones only drown the answer in noise)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,30}$")  # short, never identifier-shaped (release rules)
_STUDY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


class QueryPlanError(ValueError):
    """The query plan cannot run as written; the message (one line) says what to change."""


def _finite(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise QueryPlanError(f"{what} must be a finite number")
    return float(value)


def _bounds(pair, what: str) -> tuple[float, float]:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise QueryPlanError(f"{what} must be [low, high]")
    lo, hi = _finite(pair[0], f"{what} low"), _finite(pair[1], f"{what} high")
    if max(abs(lo), abs(hi)) > MAX_BOUND:
        raise QueryPlanError(f"{what} must lie within +-{MAX_BOUND:g}")
    if not lo < hi:
        raise QueryPlanError(f"{what}: low must be below high")
    return lo, hi


def _levels(values, what: str) -> list:
    """Declared public levels: 1 to 64 distinct finite numbers, or 1 to 64 distinct short strings."""
    if not isinstance(values, (list, tuple)) or not 1 <= len(values) <= MAX_LEVELS:
        raise QueryPlanError(f"{what} must list 1 to {MAX_LEVELS} declared values")
    if all(isinstance(v, str) for v in values):
        if any(not 1 <= len(v) <= 32 for v in values):
            raise QueryPlanError(f"{what}: text levels are 1 to 32 characters")
        out = list(values)
    else:
        out = [_finite(v, what) for v in values]
    if len(set(out)) != len(out):
        raise QueryPlanError(f"{what} must be distinct")
    return out


def _increasing(values, what: str, low: int, high: int) -> list[float]:
    if not isinstance(values, (list, tuple)) or not low <= len(values) <= high:
        raise QueryPlanError(f"{what} must list {low} to {high} declared values")
    out = [_finite(v, what) for v in values]
    if any(b <= a for a, b in zip(out, out[1:])):
        raise QueryPlanError(f"{what} must increase")
    return out


def _by(query: dict, name: str) -> dict | None:
    by = query.get("by")
    if by is None:
        return None
    if isinstance(by, dict) and "column" in by:
        column, levels = by.get("column"), by.get("levels")
    elif isinstance(by, dict) and len(by) == 1:
        (column, levels), = by.items()
    else:
        raise QueryPlanError(f"query {name!r}: by is {{'column': ..., 'levels': [...]}} or {{column: [levels]}}")
    if not isinstance(column, str):
        raise QueryPlanError(f"query {name!r}: by names one column")
    return {"column": column, "levels": _levels(levels, f"query {name!r} by levels")}


def columns_used(query: dict) -> list:
    """The columns a (checked) query reads, ``by`` included."""
    kind = query.get("kind")
    used = [query.get("column")] if kind in ("sum", "mean", "histogram", "quantile") else \
        list(query.get("columns") or []) if kind == "contingency" else \
        [*(query.get("x") or []), query.get("y")] if kind == "linear_regression" else []
    if query.get("by") is not None:
        used.append(query["by"]["column"])
    return used


def sum_sensitivity(lo: float, hi: float) -> float:
    """L1 sensitivity of a sum clamped to [lo, hi] as OpenDP's bounded float sum proves it (one
    row added or removed): max(|lo|, |hi|) when the bounds share a sign, hi - lo when they
    straddle zero (OpenDP's conservative bound; declare one-signed bounds for less noise)."""
    return max(abs(lo), abs(hi)) if lo >= 0 or hi <= 0 else hi - lo


def product_bounds(bounds, i: int, j: int) -> tuple[float, float]:
    """Range of z_i z_j when each z_k lies in ``bounds[k]`` (a square is never negative)."""
    (a, b), (c, d) = bounds[i], bounds[j]
    corners = [a * c, a * d, b * c, b * d]
    return (0.0 if i == j and a <= 0 <= b else min(corners)), max(corners)


def regression_bounds(query: dict) -> list[tuple[float, float]]:
    """Bounds of each column of z = (1, x..., y) of a (checked) ``linear_regression``."""
    return [(0.0, 1.0)] + [tuple(query["bounds"][c]) for c in [*query["x"], query["y"]]]


def query_sensitivity(query: dict) -> float:
    """The L1 sensitivity of a (checked) query's released vector, before OpenDP's float-rounding
    allowance (a mean: of its sum, its count's is 1; a quantile: of its score, in its units)."""
    kind = query["kind"]
    if kind in ("sum", "mean"):
        return sum_sensitivity(*query["bounds"])
    if kind == "linear_regression":
        b = regression_bounds(query)
        return sum(sum_sensitivity(*product_bounds(b, i, j)) for i in range(len(b)) for j in range(i, len(b)))
    if kind == "quantile":
        return max(query["q"], 1 - query["q"])
    return 1.0  # counts, histograms, contingency tables


def _query(q, name: str, columns) -> tuple[dict, int]:
    """One query, checked and normalised; and how many numbers its answer holds."""
    kind = q.get("kind")
    if kind not in KINDS:
        raise QueryPlanError(f"query {name!r}: kind must be one of {', '.join(KINDS)}")
    epsilon = _finite(q.get("epsilon"), f"query {name!r} epsilon")
    if not MIN_EPSILON <= epsilon <= MAX_EPSILON:
        raise QueryPlanError(f"query {name!r}: epsilon must be in [{MIN_EPSILON:g}, {MAX_EPSILON:g}]")
    out = {"name": name, "kind": kind, "epsilon": epsilon, "by": _by(q, name)}
    groups = 1 if out["by"] is None else len(out["by"]["levels"])
    if kind in ("sum", "mean", "histogram", "quantile"):
        out["column"] = q.get("column")
    if kind in ("sum", "mean"):
        out["bounds"] = _bounds(q.get("bounds"), f"query {name!r} bounds")
        cells = 2 if kind == "mean" else 1
    elif kind == "histogram":
        out["edges"] = _increasing(q.get("edges"), f"query {name!r} edges", 1, 127)
        cells = len(out["edges"]) + 1
    elif kind == "quantile":
        out["candidates"] = _increasing(q.get("candidates"), f"query {name!r} candidates", 2, 200)
        out["q"] = _finite(q.get("q"), f"query {name!r} q")
        if not 0 < out["q"] < 1:
            raise QueryPlanError(f"query {name!r}: q must be in (0, 1)")
        cells = 1
    elif kind == "contingency":
        cols, levels = q.get("columns"), q.get("levels")
        if not isinstance(cols, (list, tuple)) or len(cols) != 2 or not isinstance(levels, (list, tuple)) \
                or len(levels) != 2:
            raise QueryPlanError(f"query {name!r}: contingency takes two columns and the levels of each")
        out["columns"] = list(cols)
        out["levels"] = [_levels(levels[0], f"query {name!r} levels"), _levels(levels[1], f"query {name!r} levels")]
        cells = len(out["levels"][0]) * len(out["levels"][1])
    elif kind == "linear_regression":
        x, y, bounds = q.get("x"), q.get("y"), q.get("bounds")
        if not isinstance(x, (list, tuple)) or not 1 <= len(x) <= 10 or not isinstance(bounds, dict):
            raise QueryPlanError(f"query {name!r}: x lists 1 to 10 columns and bounds gives [low, high] for each "
                                 "of them and for y")
        if len(set(map(str, [*x, y]))) != len(x) + 1:
            raise QueryPlanError(f"query {name!r}: x and y are distinct columns")
        out.update(x=list(x), y=y)
        out["bounds"] = {c: _bounds(bounds.get(c), f"query {name!r} bounds of {c}") for c in [*x, y]}
        cells = (len(x) + 2) * (len(x) + 3) // 2
    else:  # count
        cells = 1
    used = columns_used(out)
    if any(not isinstance(c, str) for c in used):
        raise QueryPlanError(f"query {name!r}: name its columns")
    if columns is not None:
        unknown = sorted(set(used) - set(columns))
        if unknown:
            raise QueryPlanError(f"query {name!r}: unknown columns {unknown}")
        _check_types(out, name, columns)
    return out, groups * cells


def _check_types(q: dict, name: str, columns: dict) -> None:
    """Numbers are read from numeric columns; text levels only name text columns."""
    values = [q["column"]] if "column" in q else [*q["x"], q["y"]] if "x" in q else []
    text = sorted({c for c in values if not columns[c]})
    if text:
        raise QueryPlanError(f"query {name!r}: columns {text} are not numeric")
    for column, levels in _categorical(q).items():
        if columns[column] != all(not isinstance(v, str) for v in levels):
            kind = "numbers" if columns[column] else "text"
            raise QueryPlanError(f"query {name!r}: the levels of {column!r} must be {kind}")


def _categorical(q: dict) -> dict:
    out = {}
    if q["kind"] == "contingency":
        out.update(zip(q["columns"], q["levels"]))
    if q.get("by") is not None:
        out[q["by"]["column"]] = q["by"]["levels"]
    return out


def check_query_plan(plan: dict, columns: dict | None = None) -> list[dict]:
    """The plan's queries, checked and normalised; raises :class:`QueryPlanError` otherwise.
    ``columns``: the asset's schema when known, ``{name: is numeric}`` (public, not data)."""
    if not isinstance(plan, dict) or not isinstance(plan.get("queries"), (list, tuple)) or not plan["queries"]:
        raise QueryPlanError("a query plan is {'study': ..., 'queries': [...]} with at least one query")
    if not isinstance(plan.get("study"), str) or not _STUDY.match(plan["study"]) or ".." in plan["study"]:
        raise QueryPlanError("the plan's study is 1-80 letters, digits, '.', '_' or '-'")
    if len(plan["queries"]) > MAX_QUERIES:
        raise QueryPlanError(f"at most {MAX_QUERIES} queries per plan")
    out, names = [], set()
    for q in plan["queries"]:
        if not isinstance(q, dict):
            raise QueryPlanError("each query is a dict")
        name = q.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name in names:
            raise QueryPlanError("each query needs a distinct name: a letter, then up to 30 letters, digits or '_'")
        names.add(name)
        query, cells = _query(q, name, columns)
        if cells > MAX_CELLS:
            raise QueryPlanError(f"query {name!r} would release {cells} numbers; at most {MAX_CELLS}")
        out.append(query)
    return out


def query_epsilon(plan: dict) -> float:
    """What one execution of the plan costs: the sum of its queries' epsilons (sequential
    composition; each query's groups compose in parallel)."""
    return float(sum(q["epsilon"] for q in check_query_plan(plan)))

"""The site's canonical request templates: the only code the automatic review rates low risk.

Each template is a tiny function that calls one vetted job (``datasites.jobs``), with a
fixed way its inputs are bound: the private ``asset``, the ``constant`` plan pinned at
approval, or a value the ``researcher`` passes on each call. A request is a template
only when its function body is byte-identical, after normalisation (no decorator, no
docstring, the function's name ignored), to one of these, and its inputs are bound the
same way. The datasite checks this itself before every execution, so a template gets
the site's trust (study state, signatures) and anything else is custom code.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass

__all__ = ["Template", "TEMPLATES", "match_template", "normalised", "input_kinds"]

# ruff: noqa: E731


def medsyft_train(cohort, plan, weights):
    from datasites.jobs.training import dp_train
    return dp_train(cohort, weights, plan)


def medsyft_secure_train(cohort, plan, message):
    from datasites.jobs.secure_round import secure_train
    return secure_train(cohort, message, plan)


def medsyft_evaluate(cohort, plan, weights):
    from datasites.jobs.evaluation import evaluate
    return evaluate(cohort, weights, plan)


def medsyft_segment_train(cohort, plan, weights):
    from datasites.jobs.segmentation import dp_segmentation_train
    return dp_segmentation_train(cohort, weights, plan)


def medsyft_segment_evaluate(cohort, plan, weights):
    from datasites.jobs.segmentation import dp_segmentation_evaluate
    return dp_segmentation_evaluate(cohort, weights, plan)


def medsyft_dp_prevalence(cohort, plan):
    from datasites.jobs.analytics import dp_prevalence
    return dp_prevalence(cohort, plan)


def medsyft_rwe_statistics(cohort, plan, message):
    from datasites.jobs.rwe import rwe_statistics
    return rwe_statistics(cohort, plan, message)


def medsyft_dp_query(cohort, plan):
    from datasites.jobs.query import dp_query
    return dp_query(cohort, plan)


def medsyft_cohort_summary(patients, encounters, conditions):
    from datasites.jobs.summary import cohort_summary
    return cohort_summary(patients, encounters, conditions, epsilon=1.0)


@dataclass(frozen=True)
class Template:
    name: str
    function: object
    job: str  # module.function of the vetted job it calls
    inputs: tuple[tuple[str, str], ...]  # (parameter, "asset" | "constant" | "researcher")
    spends: str = ""  # how it spends epsilon: "dp-sgd" (a study plan), "evaluation" (the plan's
    # eval_epsilons), "query" (a DP query plan's total), "per-call" (plan epsilon) or "fixed"
    epsilon: float | None = None  # "fixed": what each call costs, written in the template itself

    @property
    def source(self) -> str:
        return inspect.getsource(self.function)


TEMPLATES = {t.name: t for t in (
    Template("train", medsyft_train, "datasites.jobs.training.dp_train",
             (("cohort", "asset"), ("plan", "constant"), ("weights", "researcher")), "dp-sgd"),
    Template("secure_train", medsyft_secure_train, "datasites.jobs.secure_round.secure_train",
             (("cohort", "asset"), ("plan", "constant"), ("message", "researcher")), "dp-sgd"),
    Template("evaluate", medsyft_evaluate, "datasites.jobs.evaluation.evaluate",
             (("cohort", "asset"), ("plan", "constant"), ("weights", "researcher")), "evaluation"),
    Template("segment_train", medsyft_segment_train, "datasites.jobs.segmentation.dp_segmentation_train",
             (("cohort", "asset"), ("plan", "constant"), ("weights", "researcher")), "dp-sgd"),
    Template("segment_evaluate", medsyft_segment_evaluate, "datasites.jobs.segmentation.dp_segmentation_evaluate",
             (("cohort", "asset"), ("plan", "constant"), ("weights", "researcher")), "evaluation"),
    Template("dp_prevalence", medsyft_dp_prevalence, "datasites.jobs.analytics.dp_prevalence",
             (("cohort", "asset"), ("plan", "constant")), "per-call"),
    Template("rwe_statistics", medsyft_rwe_statistics, "datasites.jobs.rwe.rwe_statistics",
             (("cohort", "asset"), ("plan", "constant"), ("message", "researcher")), "per-call"),
    Template("dp_query", medsyft_dp_query, "datasites.jobs.query.dp_query",
             (("cohort", "asset"), ("plan", "constant")), "query"),
    Template("cohort_summary", medsyft_cohort_summary, "datasites.jobs.summary.cohort_summary",
             (("patients", "asset"), ("encounters", "asset"), ("conditions", "asset")), "fixed", 1.0),
)}


def normalised(source: str) -> str | None:
    """The function in ``source`` as an AST dump without decorators, docstring or name; None
    unless ``source`` is exactly one function definition."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        return None
    func = tree.body[0]
    func.decorator_list, func.name, func.returns = [], "_", None
    body = func.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        func.body = body[1:] or [ast.Pass()]
    return ast.dump(func, annotate_fields=True, include_attributes=False)


_CANONICAL = {normalised(t.source): t for t in TEMPLATES.values()}


def match_template(source: str, inputs: dict[str, str] | None = None) -> Template | None:
    """The template ``source`` is (and whose input binding ``inputs`` matches), else None."""
    template = _CANONICAL.get(normalised(source))
    if template is None:
        return None
    if inputs is not None and dict(template.inputs) != dict(inputs):
        return None
    return template


def _bound_id(rule) -> set[str]:
    """The object id a binding names, with and without dashes."""
    value = getattr(rule, "val", None) if type(rule).__name__ == "Matches" else \
        getattr(rule, "object_uid", None) if type(rule).__name__ == "LinkedObject" else rule
    return {str(value), str(getattr(value, "no_dash", value))}


def input_kinds(code, assets: set[str] | None = None) -> dict[str, str]:
    """How a Syft user code's parameters are bound: asset / constant / researcher (or other).

    With the site's asset ids (``assets``), an object bound by id that is not one of them is
    an ``upload``: the researcher's own data, never what a template is approved to read (a
    template run on an upload would advance a study's accountant without paying)."""
    kinds: dict[str, str] = {}
    for rules in (getattr(code, "input_policy_init_kwargs", None) or {}).values():
        if not isinstance(rules, dict):
            continue
        for name, rule in rules.items():
            kind = type(rule).__name__
            if kind in ("Matches", "UID", "LinkedObject"):
                kinds[name] = "asset" if assets is None or _bound_id(rule) & set(assets) else "upload"
            elif kind == "Constant":
                kinds[name] = "constant"
            elif isinstance(rule, type) or kind in ("UserOwned", "type"):
                kinds[name] = "researcher"
            else:
                kinds[name] = kind.lower()
    return kinds

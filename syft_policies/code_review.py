"""Automatic review of a code request: templates first, then static analysis (AST) as advice.

A request is **low** risk only when it is one of the site's request templates
(``syft_policies.templates``: byte-identical after normalisation, inputs bound the same
way), with in-policy DP parameters, its epsilon within the budget and the site's own
release policy. Anything else is custom code: at least **medium**, whatever the analysis
below finds, because a clever request can hide what it does from any static check. The
rules tell the officer where to look; they are not the boundary (isolation, the release
policy and the ledger are):

    R001 import outside the allow-list        R006 identifier columns / per-patient lookups
    R002 eval / exec / dynamic attribute use  R007 group-bys on quasi-identifiers (tiny cells)
    R003 files, network, subprocesses         R008 pickling / serialising objects
    R004 row-level accessors and exports      R009 arrays sized by the number of records
    R005 returning or printing a data input   R010 not one of the site's templates (custom code)
    R011 DP parameters out of site policy     R012 planned epsilon over the remaining budget
    R013 the request's output policy is not this site's ReleasePolicy, or is weakened
    R014 the request carries changes besides its code (permissions, roles, objects)
"""

from __future__ import annotations

import ast
import html
from dataclasses import dataclass, field, replace

from privacy import PlanBounds, evaluation_schedule, plan_problems, planned_epsilon
from privacy.queries import query_epsilon

from .release_rules import release_settings
from .templates import TEMPLATES, match_template

__all__ = ["review_code", "ReviewReport", "Finding", "SitePolicy"]

VETTED_JOBS: dict[str, set[str]] = {}
for _t in TEMPLATES.values():
    VETTED_JOBS.setdefault(_t.job.rsplit(".", 1)[0], set()).add(_t.job.rsplit(".", 1)[1])
SAFE_MODULES = {"numpy", "pandas", "math", "statistics", "collections", "itertools", "functools"}
DANGEROUS_MODULES = {"os", "sys", "subprocess", "socket", "urllib", "http", "requests", "httpx", "ftplib",
                     "smtplib", "shutil", "pathlib", "io", "tempfile", "ctypes", "importlib", "builtins",
                     "pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "multiprocessing",
                     "threading", "asyncio", "inspect", "gc", "syft", "sqlite3", "base64", "codecs", "zlib"}
PICKLERS = {"pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
DANGEROUS_BUILTINS = {"eval", "exec", "compile", "__import__", "open", "globals", "locals", "vars", "input",
                      "breakpoint", "setattr", "delattr", "memoryview", "exit", "quit"}
ROW_ACCESSORS = {"head", "tail", "sample", "iloc", "loc", "at", "iat", "values", "to_numpy", "to_dict",
                 "to_records", "to_csv", "to_json", "to_pickle", "to_parquet", "to_excel", "to_sql",
                 "to_string", "to_markdown", "to_html", "to_clipboard", "to_xml", "to_feather", "tolist",
                 "itertuples", "iterrows", "items", "nlargest", "nsmallest", "query", "array", "T",
                 "transpose", "copy", "unique", "drop_duplicates", "first", "last", "nth"}
SIZE_MAKERS = {"zeros", "ones", "empty", "full", "arange", "range", "tile", "repeat"}
CONVERTERS = {"list", "dict", "tuple", "set", "str", "repr", "bytes", "array", "asarray", "tensor",
              "from_numpy", "DataFrame", "Series", "json.dumps", "dumps"}
IDENTIFIERS = {"Id", "PATIENT", "SSN", "DRIVERS", "PASSPORT", "FIRST", "MIDDLE", "LAST", "MAIDEN", "ADDRESS",
               "LAT", "LON", "ENCOUNTER", "patient", "patient_id", "mrn"}
QUASI_IDENTIFIERS = {"BIRTHDATE", "ZIP", "COUNTY", "CITY", "STATE", "RACE", "ETHNICITY", "GENDER", "DEATHDATE",
                     "START", "STOP", "DATE", "age", "AGE", "BIRTHPLACE"}


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # high / medium / info
    message: str
    line: int


class SitePolicy:
    """What this hospital accepts from a vetted DP job without escalation."""

    def __init__(self, *, bounds: PlanBounds | None = None, max_epsilon: float | None = None,
                 min_cell: int = 10, max_release_rows: int = 256, custom_code: str = "two-person"):
        bounds = bounds or PlanBounds()
        if max_epsilon is not None:
            bounds = replace(bounds, max_epsilon=float(max_epsilon))
        self.bounds = bounds  # every plan parameter, and the study's epsilon at this site
        self.min_cell, self.max_release_rows = min_cell, max_release_rows
        self.custom_code = custom_code  # the spec's [policy] custom_code: deny / two-person / allow

    @property
    def max_epsilon(self) -> float:
        return self.bounds.max_epsilon

    @classmethod
    def for_site(cls, spec) -> "SitePolicy":
        """The site's TOML ``[policy]``: ``custom_code`` and any :class:`privacy.PlanBounds` name."""
        return cls(bounds=getattr(spec, "plan_bounds", None) or PlanBounds(),
                   custom_code=getattr(spec, "custom_code", "two-person"))


@dataclass
class ReviewReport:
    function: str
    risk: str  # low / medium / high
    findings: list[Finding] = field(default_factory=list)
    vetted_calls: list[str] = field(default_factory=list)
    template: str | None = None  # the site template this request is, if any
    dp: dict | None = None
    epsilon_cost: float | None = None
    budget_before: float | None = None
    budget_after: float | None = None
    study_epsilon: float | None = None  # a study request: its training plus all its evaluations

    def digest(self) -> str:
        import hashlib
        import json

        payload = {"function": self.function, "risk": self.risk, "epsilon": self.epsilon_cost,
                   "findings": [(f.rule, f.severity, f.line, f.message) for f in self.findings]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def __str__(self) -> str:
        lines = [f"Review of {self.function}: {self.risk.upper()} risk"]
        lines.append(f"  site template: {self.template}" if self.template else
                     "  custom code: not one of the site's templates (its outputs are exact releases)")
        if self.vetted_calls:
            lines.append(f"  vetted jobs called: {', '.join(self.vetted_calls)}")
        if self.dp:
            lines.append("  DP parameters: " + ", ".join(f"{k}={v}" for k, v in self.dp.items()))
        if self.epsilon_cost is not None:
            lines.append(f"  epsilon cost: {self.epsilon_cost:.3f}")
        if self.budget_before is not None:
            after = "n/a" if self.budget_after is None else f"{self.budget_after:.3f}"
            lines.append(f"  budget: {self.budget_before:.3f} before, {after} after")
        for f in self.findings:
            lines.append(f"  [{f.severity:<6}] {f.rule} line {f.line}: {f.message}")
        if not self.findings:
            lines.append("  no findings")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = {"low": "#2e7d32", "medium": "#ef6c00", "high": "#c62828"}[self.risk]
        rows = "".join(f"<tr><td>{html.escape(f.rule)}</td><td>{f.severity}</td><td>{f.line}</td>"
                       f"<td>{html.escape(f.message)}</td></tr>" for f in self.findings)
        extra = ""
        if self.epsilon_cost is not None:
            extra += f"<p>epsilon cost: <b>{self.epsilon_cost:.3f}</b>"
            if self.budget_before is not None:
                after = "n/a" if self.budget_after is None else f"{self.budget_after:.3f}"
                extra += f"; budget {self.budget_before:.3f} &rarr; {after}"
            extra += "</p>"
        return (f"<div><h4>Review of <code>{html.escape(self.function)}</code>: "
                f"<span style='color:{colour}'>{self.risk.upper()} risk</span></h4>{extra}"
                f"<table><tr><th>rule</th><th>severity</th><th>line</th><th>finding</th></tr>{rows}</table></div>")


def _name(node) -> str:
    """Dotted name of a Name/Attribute chain ('' if not a plain chain)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


class _Reviewer(ast.NodeVisitor):
    def __init__(self, data_params: set[str]):
        self.data = set(data_params)  # names bound to private data (and values derived from them)
        self.findings: list[Finding] = []
        self.vetted: dict[str, str] = {}  # local name -> module.function
        self.vetted_calls: list[tuple[str, ast.Call]] = []
        self.aliases: dict[str, str] = {}

    def add(self, rule, severity, message, node):
        self.findings.append(Finding(rule, severity, message, getattr(node, "lineno", 0)))

    # --- imports ------------------------------------------------------------------------
    def _check_module(self, module: str, node) -> None:
        root = module.split(".")[0]
        if root in PICKLERS:
            self.add("R008", "high", f"imports {module}: serialising objects can smuggle data out", node)
        elif root in DANGEROUS_MODULES:
            self.add("R003" if root != "importlib" else "R002", "high",
                     f"imports {module}: file, network, process or interpreter access", node)
        elif module not in VETTED_JOBS and root not in SAFE_MODULES:
            self.add("R001", "medium", f"imports {module}, which is not on the site's allow-list", node)

    def visit_Import(self, node):
        for alias in node.names:
            self._check_module(alias.name, node)
            self.aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        self.generic_visit(node)

    def visit_ImportFrom(self, node):
        module = node.module or ""
        self._check_module(module, node)
        for alias in node.names:
            if module in VETTED_JOBS and alias.name in VETTED_JOBS[module]:
                self.vetted[alias.asname or alias.name] = f"{module}.{alias.name}"
            elif module in VETTED_JOBS:
                self.add("R001", "medium", f"imports {module}.{alias.name}, which is not a vetted job", node)
            self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
        self.generic_visit(node)

    # --- data flow (coarse): anything computed from a data name is data ------------------
    def _touches_data(self, node) -> bool:
        return any(isinstance(n, ast.Name) and n.id in self.data for n in ast.walk(node))

    def _is_vetted_call(self, node) -> bool:
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in self.vetted

    def visit_Assign(self, node):
        if self._touches_data(node.value) and not self._is_vetted_call(node.value):
            for target in node.targets:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        self.data.add(n.id)
                if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
                    self.add("R005", "high", f"stores private data inside {target.value.id!r}, "
                             "which may then leave the site", node)
        self.generic_visit(node)

    def visit_For(self, node):
        if self._touches_data(node.iter):
            for n in ast.walk(node.target):
                if isinstance(n, ast.Name):
                    self.data.add(n.id)
            self.add("R004", "high", "iterates over private records one by one", node)
        self.generic_visit(node)

    def visit_comprehension(self, node):
        if self._touches_data(node.iter):
            self.add("R004", "high", "builds a collection record by record from private data", node.iter)
        self.generic_visit(node)

    # --- calls and attributes -------------------------------------------------------------
    def visit_Attribute(self, node):
        if node.attr in ROW_ACCESSORS and self._touches_data(node.value):
            self.add("R004", "high", f".{node.attr} on private data gives or exports row-level values", node)
        if node.attr.startswith("__") and node.attr.endswith("__"):
            self.add("R002", "high", f"touches the dunder attribute {node.attr}", node)
        self.generic_visit(node)

    def visit_Subscript(self, node):
        if self._touches_data(node.value):
            for n in ast.walk(node.slice):
                if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in IDENTIFIERS:
                    self.add("R006", "medium", f"uses the identifier column {n.value!r}", node)
                if isinstance(n, ast.Compare) and any(isinstance(c, ast.Constant) for c in n.comparators):
                    if any(isinstance(m, ast.Constant) and isinstance(m.value, str) and m.value in IDENTIFIERS
                           for m in ast.walk(n.left)):
                        self.add("R006", "high", "selects a single patient by identifier", node)
            if isinstance(node.slice, (ast.Constant, ast.Slice)) and not (
                    isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
                self.add("R004", "high", "indexes private data by position (row access)", node)
        self.generic_visit(node)

    def visit_Call(self, node):
        name = _name(node.func)
        base = name.split(".")[-1] if name else ""
        if isinstance(node.func, ast.Name) and node.func.id in DANGEROUS_BUILTINS:
            self.add("R002" if node.func.id != "open" else "R003", "high",
                     f"calls {node.func.id}(): dynamic code or file access", node)
        if base in ("getattr", "hasattr") and len(node.args) >= 2 and not isinstance(node.args[1], ast.Constant):
            self.add("R002", "high", "getattr with a computed attribute name (obfuscated access)", node)
        if base == "getattr" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and str(node.args[1].value) in ROW_ACCESSORS:
            self.add("R004", "high", f"getattr(..., {node.args[1].value!r}) reaches a row accessor", node)
        root = self.aliases.get(name.split(".")[0], name.split(".")[0]) if name else ""
        if root.split(".")[0] in {"os", "subprocess", "socket", "shutil", "urllib", "requests", "http"}:
            self.add("R003", "high", f"calls {name}(): system, file or network access", node)
        if root.split(".")[0] in PICKLERS or base in ("dump", "dumps") and "pickle" in root:
            self.add("R008", "high", f"calls {name}(): serialises objects", node)
        if isinstance(node.func, ast.Name) and node.func.id == "print" and any(self._touches_data(a) for a in node.args):
            self.add("R005", "high", "prints values computed from private data", node)
        if base in SIZE_MAKERS and any(self._sized_by_records(a) for a in node.args):
            self.add("R009", "high", f"{base}() sized by the number of records: a per-patient array", node)
        if base in CONVERTERS and any(isinstance(a, ast.Name) and a.id in self.data for a in node.args):
            self.add("R004", "high", f"{base}() copies private data wholesale", node)
        if base == "groupby" and self._touches_data(node.func):
            keys = [n.value for a in node.args for n in ast.walk(a) if isinstance(n, ast.Constant)]
            quasi = [k for k in keys if k in QUASI_IDENTIFIERS or k in IDENTIFIERS]
            if quasi:
                self.add("R007", "high", f"groups by quasi-identifier(s) {quasi}: cells of one or two patients", node)
            else:
                self.add("R007", "medium", "group-by on private data: check the output suppresses small cells", node)
        if self._is_vetted_call(node):
            self.vetted_calls.append((self.vetted[node.func.id], node))
        self.generic_visit(node)

    def _sized_by_records(self, node) -> bool:
        for n in ast.walk(node):
            if isinstance(n, ast.Call) and _name(n.func) == "len" and any(self._touches_data(a) for a in n.args):
                return True
            if isinstance(n, ast.Attribute) and n.attr in ("shape", "size", "index") and self._touches_data(n.value):
                return True
        return False

    # --- what leaves ------------------------------------------------------------------------
    def visit_Return(self, node):
        value = node.value
        if value is not None and not self._is_vetted_call(value):
            direct = [n for n in ast.walk(value) if isinstance(n, ast.Name) and n.id in self.data]
            if isinstance(value, ast.Name) and value.id in self.data:
                self.add("R005", "high", f"returns {value.id!r}, private data itself", node)
            elif isinstance(value, (ast.Dict, ast.List, ast.Tuple)) and any(
                    isinstance(e, ast.Name) and e.id in self.data
                    for e in (value.values if isinstance(value, ast.Dict) else value.elts)):
                self.add("R005", "high", "returns a container holding private data", node)
            elif direct and not self.findings:
                self.add("R010", "medium", "returns values computed from private data outside a vetted job; "
                         "check they are aggregates", node)
        self.generic_visit(node)


def review_code(source: str, *, site_policy: SitePolicy | None = None, plan: dict | None = None,
                data_params: set[str] | None = None, budget_remaining: float | None = None,
                release: dict | None = None, inputs: dict[str, str] | None = None) -> ReviewReport:
    """Review one submitted function. ``plan`` is the request's pinned study plan (if it
    trains); ``data_params`` names the inputs bound to private assets (default: all);
    ``release`` describes a request's output policy (``RequestInfo.release``); ``inputs``
    how each parameter is bound (``templates.input_kinds``), checked against the template."""
    policy = site_policy or SitePolicy()
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return ReviewReport("<unparsable>", "high", [Finding("R002", "high", f"code does not parse: {exc.msg}",
                                                             exc.lineno or 0)])
    funcs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if len(funcs) != 1:
        return ReviewReport("<module>", "high", [Finding("R002", "high", "expected exactly one function", 1)])
    func = funcs[0]
    params = {a.arg for a in func.args.args + func.args.kwonlyargs}
    reviewer = _Reviewer(params if data_params is None else set(data_params) & params)
    for stmt in func.body:
        reviewer.visit(stmt)
    for deco in func.decorator_list:  # Syft's own decorator is how code is submitted; others are odd
        if not _name(deco.func if isinstance(deco, ast.Call) else deco).split(".")[-1].startswith("syft_function"):
            reviewer.add("R002", "medium", "the function carries a decorator other than Syft's", deco)
    findings = reviewer.findings
    vetted = [name for name, _ in reviewer.vetted_calls]
    template = match_template(source, inputs)
    if template is None:
        names = ", ".join(sorted(TEMPLATES))
        findings.append(Finding("R010", "medium", f"not one of the site's request templates ({names}): custom "
                                "code whose outputs are exact releases; read it in full", func.lineno))
        if match_template(source) is not None:
            findings.append(Finding("R010", "medium", "a template's code with its inputs bound differently "
                                    "(the plan must be a sy.Constant, the data the site's asset)", func.lineno))
    dp, cost, problems, study_cost = None, None, [], None
    if plan and "study" in plan and not _study_name_ok(plan["study"]):  # it is shown, grouped and bulk-approved
        problems.append("the plan's study name must be 1-80 letters, digits, '.', '_' or '-'")
    spends = template.spends if template else ("dp-sgd" if any(v.endswith(("dp_train", "secure_train"))
                                                               for v in vetted) else
                                               "per-call" if any(v.endswith(("dp_prevalence", "rwe_statistics"))
                                                                 for v in vetted) else "")
    if plan and spends in ("dp-sgd", "evaluation"):
        dp = {k: plan.get(k) for k in ("model", "rounds", "local_epochs", "lr", "sample_rate", "noise_multiplier",
                                       "max_grad_norm", "epsilon", "delta", "eval_epsilons")}
        training = None
        problems.extend(plan_problems(plan, policy.bounds))
        if not problems:
            training = planned_epsilon(plan)
            if training is None:
                problems.append("the plan's DP parameters are incomplete")
            else:
                problems.extend(plan_problems(plan, policy.bounds, training_epsilon=training))
        if training is not None:
            cost = training if spends == "dp-sgd" else sum(evaluation_schedule(plan))
            study_cost = training + sum(evaluation_schedule(plan))  # both requests draw on one budget
    elif plan and spends == "query":
        executions = _executions(release)
        try:
            per_call = query_epsilon(plan)
        except ValueError as exc:
            problems.append(f"the query plan cannot run: {exc}")
        else:
            dp = {"mechanism": "OpenDP (discrete Laplace, Laplace, exponential mechanism)", "epsilon": per_call,
                  "executions": executions,
                  "queries": ", ".join(f"{q['name']} ({q['kind']}, {q['epsilon']})" for q in plan["queries"])}
            cost = per_call * executions  # basic composition over every allowed call
    elif spends == "query":
        problems.append("the query plan is missing: pin {'study': ..., 'queries': [...]} as a sy.Constant")
    elif spends == "fixed" and template is not None:
        executions = _executions(release)
        dp = {"mechanism": "OpenDP (Laplace, discrete Laplace)", "epsilon": template.epsilon, "executions": executions}
        cost = float(template.epsilon) * executions
    elif plan and spends == "per-call":
        executions = _executions(release)
        dp = {"mechanism": "laplace", "epsilon": plan.get("epsilon"), "executions": executions}
        cost = float(plan.get("epsilon") or 0) * executions  # basic composition over every allowed call
    if cost is not None and cost > policy.max_epsilon and spends in ("per-call", "query"):
        problems.append(f"epsilon {cost:.2f} exceeds the site's maximum {policy.max_epsilon}")
    findings.extend(Finding("R011", "high", f"out of site policy: {p}", func.lineno) for p in problems)
    if budget_remaining is not None and cost is not None and cost > budget_remaining:
        findings.append(Finding("R012", "high", f"needs epsilon {cost:.2f} but only {budget_remaining:.2f} "
                                "of the dataset's budget is left", func.lineno))
    elif budget_remaining is not None and study_cost is not None and study_cost > budget_remaining:
        findings.append(Finding("R012", "high", f"the study needs epsilon {study_cost:.2f} (training and "
                                f"evaluation) but only {budget_remaining:.2f} of the dataset's budget is left",
                                func.lineno))
    if release is not None:
        findings.extend(Finding("R013", "high", p, func.lineno) for p in _release_problems(release, policy))
    findings = list(dict.fromkeys(findings))  # one line per distinct finding
    severities = {f.severity for f in findings}
    risk = "high" if "high" in severities else "medium" if ("medium" in severities or template is None) else "low"
    after = None if budget_remaining is None or cost is None else budget_remaining - cost
    return ReviewReport(func.name, risk, findings, vetted, template.name if template else None, dp, cost,
                        budget_remaining, after, study_cost)


def _study_name_ok(study) -> bool:
    """The rule the vetted jobs apply to a study id, for every plan the review reads."""
    import re

    return isinstance(study, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}", study) is not None \
        and ".." not in study


def _executions(release: dict | None) -> int:
    """How many times the request may run, as the site will count them (an unreadable
    setting is R013, HIGH, and the site refuses to run it: 1 here only for the display)."""
    try:
        return release_settings((release or {}).get("settings"))["limit"]
    except ValueError:
        return 1


def _release_problems(release: dict, policy: SitePolicy) -> list[str]:
    """Without the site's own release policy, nothing checks what the code returns."""
    if release.get("policy") != "ReleasePolicy":
        return [f"output policy {release.get('policy')} is not the site's ReleasePolicy: nothing would stop "
                "row-level outputs at execution"]
    if not release.get("genuine"):
        return ["the request's ReleasePolicy source differs from this site's copy (edited or another version)"]
    try:
        settings = release_settings(release.get("settings"))
    except ValueError as exc:
        return [f"{exc}: the site will not run it"]
    problems = []
    if settings.get("min_cell", policy.min_cell) < policy.min_cell:
        problems.append(f"release min_cell {settings['min_cell']} below the site's {policy.min_cell}")
    if settings.get("max_rows", policy.max_release_rows) > policy.max_release_rows:
        problems.append(f"release max_rows {settings['max_rows']} above the site's {policy.max_release_rows}")
    return problems

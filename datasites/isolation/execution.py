"""Every execution of researcher code at a medsyft datasite: admitted, isolated, audited.

Syft 0.9.5 runs approved code with ``exec`` inside the server process. On a medsyft
datasite ``ActionService._user_code_execute`` and ``execute_byte_code`` are replaced
(``datasites.syft_patches``) by :func:`admit_and_record` and :func:`run_isolated`:

1. admit: the request carries the site's genuine ``ReleasePolicy``; custom (non-template)
   code is allowed by the site's ``[policy] custom_code`` (``deny``, ``two-person`` with two
   officers' approvals, ``allow``); no approval of the code or its study has expired; the
   request has attempts left and is not backing off (``attempts``);
2. run: in a sandboxed worker (``pool``), never in this process; the worker's requests
   go to a :class:`~datasites.isolation.mediator.Mediator`;
3. record: one ``executed`` audit entry per attempt, written here: request, code hash,
   template, inputs digest, outcome (released / blocked / error / timeout / limit /
   refused / crashed), epsilon debited, output digest, error id. Error details go to the
   site's ``logs/executions.log`` under that id; the researcher gets a generic message.

Syft follows a run on private data with a run on the mock twin; here that second run
executes nothing and its result is None (it would only repeat the same code).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from ..jobs import wire
from .attempts import AttemptRefused
from .mediator import Mediator
from .pool import Limits, pool
from .sandbox import IsolationUnavailable

__all__ = ["Execution", "admit_and_record", "run_isolated", "digest", "job_source"]

log = logging.getLogger("medsyft.isolation")
_ACTIVE: ContextVar["Execution | None"] = ContextVar("medsyft_execution", default=None)
ERROR_LOG = "logs/executions.log"


def digest(value) -> str:
    """SHA-256 of a value (arrays by their bytes, tables by their content), for the audit log."""
    h = hashlib.sha256()

    def feed(v):
        if isinstance(v, dict):
            for k in sorted(v, key=repr):
                h.update(repr(k).encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            for item in v:
                feed(item)
        elif isinstance(v, np.ndarray):
            h.update(str(v.dtype).encode() + str(v.shape).encode())
            h.update(np.ascontiguousarray(v).tobytes())
        elif type(v).__name__ == "DataFrame":
            import pandas as pd

            h.update(pd.util.hash_pandas_object(v, index=True).to_numpy().tobytes())
            h.update(repr(list(v.columns)).encode())
        else:
            h.update(repr(v).encode())

    feed(value)
    return h.hexdigest()


def job_source(raw_code: str) -> tuple[str, str]:
    """``(source, function name)`` to run: the submitted function without its decorators."""
    import ast

    tree = ast.parse(raw_code)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if len(funcs) != 1 or len(tree.body) != 1:
        raise ValueError("a request must be exactly one function")
    funcs[0].decorator_list = []
    return ast.unparse(tree), funcs[0].name


def _plain(value):
    """An input as plain data for the worker: unwrap Syft objects, refuse anything exotic."""
    value = getattr(value, "syft_action_data", value)
    if value is None or isinstance(value, (bool, int, float, str, bytes, np.ndarray, np.generic)):
        return value
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if type(value).__module__.startswith("pandas") and type(value).__name__ in ("DataFrame", "Series"):
        return value
    raise TypeError(f"an input of type {type(value).__name__} cannot be passed to an isolated worker")


class Refusal(Exception):
    """The site will not run this execution; the message is for the researcher."""


class Execution:
    """One attempt to run one approved request, from admission to the audit entry."""

    def __init__(self, site, context, code_item, kwargs: dict):
        from syft.service.user.user_roles import ServiceRole

        from syft_policies.templates import input_kinds, match_template

        self.site, self.code, self.context = site, code_item, context
        self.admin = context.role == ServiceRole.ADMIN
        root = context.server.verify_key
        try:
            self.researcher = str(context.server.services.user.get_by_verify_key(context.credentials).unwrap().email)
        except Exception:  # noqa: BLE001 - an unknown key is recorded as such
            self.researcher = "unknown"
        requests = context.server.services.request.stash.get_by_usercode_id(root, code_item.id).unwrap()
        self.request = str(requests[0].id.no_dash) if requests else ""
        self.code_id = str(code_item.id.no_dash)
        self.code_sha256 = hashlib.sha256(code_item.raw_code.encode()).hexdigest()
        assets = {}
        for dataset in context.server.services.dataset.stash.get_all(root).unwrap():
            for asset in dataset.asset_list:
                assets[str(asset.action_id)] = dataset.name
                assets[asset.action_id.no_dash] = dataset.name
        # A template is the site's own code only on the site's own data: bound to an upload
        # (or given one), it is custom code, untrusted, and cannot touch a study's accountant.
        self.template = match_template(code_item.raw_code, input_kinds(code_item, set(assets)))
        if self.template is not None and any(kind == "asset" and str(kwargs.get(name)) not in assets
                                             for name, kind in dict(self.template.inputs).items()):
            self.template = None
        self.datasets = tuple(dict.fromkeys(assets[str(v)] for v in kwargs.values() if str(v) in assets))
        self.attempt: int | None = None
        self.outcome, self.error_id, self.inputs_digest, self.output_digest = None, "", "", ""
        self.message = ""
        self.mediator: Mediator | None = None
        self.ran = False
        self.started = time.time()

    # -- 1. admission ------------------------------------------------------------------------
    def admit(self) -> None:
        from syft_policies.governance import ApprovalExpired
        from syft_policies.reconcile import records_problem

        problem = records_problem(self.site.site_dir)
        if problem:  # the detail is for the data owner; the researcher learns only that nothing runs
            logging.getLogger("medsyft").error("%s refuses to run code: %s", self.site.spec.name, problem)
            raise Refusal(f"{self.site.spec.name} is not running code until its data owner repairs its privacy "
                          "records (ledger and audit log)")
        if not self._genuine_release_policy():
            raise Refusal("this site runs only requests whose output policy is its own ReleasePolicy "
                          "(syft_policies.release.ReleasePolicy); resubmit with it")
        limit = self._limit()
        if self.template is None and not self.admin:
            policy = getattr(self.site.spec, "custom_code", "two-person")
            if policy == "deny":
                raise Refusal("this site runs only its own request templates (policy custom_code = deny); "
                              "use a vetted job through its template")
            if policy == "two-person":
                approval = self.site.governance().get(self.request) if self.request else None
                if approval is None or len(set(approval.approvers)) < 2:
                    raise Refusal("custom code needs the approval of two compliance officers at this site "
                                  "(policy custom_code = two-person)")
        if not self.admin:
            try:
                governance = self.site.governance()
                governance.check_code(self.code_id)
                study = self._plan().get("study")
                if study:
                    governance.check_study(str(study))
            except ApprovalExpired as exc:
                raise Refusal(str(exc)) from None
            self._check_plan()
            try:
                self.attempt = self.site.executions().begin(code=self.code_id, request=self.request,
                                                            researcher=self.researcher, limit=limit)
            except AttemptRefused as exc:
                raise Refusal(str(exc)) from None

    def _check_plan(self) -> None:
        """A study template runs only on a plan inside this site's bounds, whatever was approved
        (a later, stricter policy applies to requests approved before it)."""
        from privacy import plan_problems, planned_epsilon

        if self.template is None or self.template.spends not in ("dp-sgd", "evaluation"):
            return
        bounds = getattr(self.site.spec, "plan_bounds", None)
        plan = self._plan()
        problems = plan_problems(plan, bounds)
        if not problems:
            problems = plan_problems(plan, bounds, training_epsilon=planned_epsilon(plan) or 0.0)
        if problems:
            raise Refusal(f"{self.site.spec.name} refuses this plan: " + "; ".join(problems))

    def _genuine_release_policy(self) -> bool:
        import inspect

        from syft_policies.release import ReleasePolicy

        kind = getattr(self.code, "output_policy_type", None)
        raw = getattr(kind, "raw_code", None)
        return raw is not None and raw.strip() == inspect.getsource(ReleasePolicy).strip()

    def _limit(self) -> int:
        """The executions the request allows, read as the review read them (one function)."""
        from syft_policies.release_rules import release_settings

        settings = {k: v for k, v in (getattr(self.code, "output_policy_init_kwargs", None) or {}).items()
                    if k != "id"}
        try:
            return release_settings(settings)["limit"]
        except ValueError as exc:
            raise Refusal(f"this site does not run this request: {exc}") from None

    def _plan(self) -> dict:
        for rules in (getattr(self.code, "input_policy_init_kwargs", None) or {}).values():
            for rule in (rules.values() if isinstance(rules, dict) else ()):
                if type(rule).__name__ == "Constant" and isinstance(getattr(rule, "val", None), dict):
                    return rule.val
        return {}

    # -- 2. the run ----------------------------------------------------------------------------
    def limits(self) -> Limits:
        return Limits(**{k: v for k, v in (getattr(self.site.spec, "isolation", None) or {}).items()})

    def run(self, kwargs: dict):
        """The worker's result, or raise :class:`Refusal` with what the researcher may read."""
        from syft_policies.release_rules import remember_inputs

        self.ran = True
        inputs = {k: _plain(v) for k, v in kwargs.items()}
        remember_inputs(inputs, custom=self.template is None)
        self.inputs_digest = digest(inputs)
        if self.template is not None:
            source, function = self.template.source, self.template.function.__name__
        else:
            source, function = job_source(self.code.raw_code)
        self.mediator = Mediator(self.site, researcher=self.researcher, datasets=self.datasets,
                                 request=self.request or self.code_id, trusted=self.template is not None)
        job = {"source": source, "function": function, "kwargs": inputs, "site": self.site.spec.name}
        try:
            outcome = pool().run(job, limits=self.limits(), handle=self.mediator)
        except (IsolationUnavailable, TimeoutError) as exc:
            self.outcome = "error"
            raise Refusal(f"{self.site.spec.name} cannot run code now: {exc}") from None
        finally:
            self.mediator.close()
        self.outcome = outcome.kind
        if outcome.kind == "result":
            self.output_digest = digest(outcome.value)
            return outcome.value
        name = self.code.service_func_name
        if outcome.kind == "refused":
            if self.mediator.refusal is not None and self.mediator.refusal in outcome.message:
                raise Refusal(f"refused by {self.site.spec.name}: {self.mediator.refusal}")
            if self.template is not None:  # the site's own job said why
                raise Refusal(f"refused by {self.site.spec.name}: {outcome.message}")
            self.outcome = "error"
        self.error_id = secrets.token_hex(6)
        self._log_detail(outcome)
        if outcome.kind == "timeout":
            raise Refusal(f"{name} was stopped after {self.limits().wall_seconds:.0f} s, the site's time limit "
                          f"(error id {self.error_id})")
        if outcome.kind == "limit":
            raise Refusal(f"{name} was stopped: it went over the site's memory, CPU or process limit "
                          f"(error id {self.error_id})")
        raise Refusal(f"{name} failed at {self.site.spec.name} (error id {self.error_id}); the hospital's "
                      "staff can read the details in the site's log")

    def _log_detail(self, outcome) -> None:
        from syft_policies.files import private_file

        path = private_file(Path(self.site.site_dir) / ERROR_LOG)
        with open(path, "a") as fh:
            fh.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} error {self.error_id} request {self.request} "
                     f"code {self.code_id} by {self.researcher}: {outcome.kind} {outcome.status}\n"
                     f"{outcome.detail}\n")

    # -- 3. the record -------------------------------------------------------------------------
    def record(self, error: str | None) -> None:
        if self.outcome in (None, "result"):
            self.outcome = "released" if error is None else "blocked"
        debited = self.mediator.debited if self.mediator else 0.0
        if self.attempt is not None:
            self.site.executions().finish(self.attempt, self.outcome, epsilon=debited, error_id=self.error_id)
        self.site.audit().append(
            "executed", request=self.request, code=self.code_id, function=self.code.service_func_name,
            researcher=self.researcher, code_sha256=self.code_sha256,
            template=self.template.name if self.template else None,
            release="noised template" if self.template else "exact release (custom code)",
            datasets=list(self.datasets), inputs_sha256=self.inputs_digest, outcome=self.outcome,
            epsilon_debited=debited, output_sha256=self.output_digest, error_id=self.error_id,
            reason=(error or "")[:300], seconds=round(time.time() - self.started, 3))


def admit_and_record(original):
    """Wraps ``ActionService._user_code_execute``: admission before, the audit entry after."""

    def _user_code_execute(self, context, code_item, kwargs, result_id=None):
        from syft.types.errors import SyftException
        from syft.types.result import Err

        from ..registry import site_of

        site = site_of(context.server.id)
        if site is None:
            return Err(SyftException(public_message="this datasite has no medsyft isolation: it runs no code"))
        execution = Execution(site, context, code_item, kwargs)
        try:
            execution.admit()
        except Refusal as exc:
            execution.outcome = "refused"
            try:
                site.audit().append("refused", request=execution.request, code=execution.code_id,
                                    function=code_item.service_func_name, researcher=execution.researcher,
                                    reason=str(exc)[:300])
            except OSError as failure:  # the audit log itself is what is broken: nothing ran either way
                logging.getLogger("medsyft").error("%s: refusal not audited: %s", site.spec.name, failure)
            return Err(SyftException(public_message=str(exc)))
        from syft_policies.release_rules import forget_inputs

        token = _ACTIVE.set(execution)
        try:
            result = original(self, context, code_item, kwargs, result_id)
        except BaseException as exc:
            execution.record(f"{type(exc).__name__}")
            raise
        finally:
            _ACTIVE.reset(token)
            forget_inputs()
        error = None
        if result.is_err():
            err = result.err()
            error = getattr(err, "public_message", None) or str(err)
        execution.record(error)
        return result

    return _user_code_execute


def run_isolated(code_item, kwargs, context):
    """Replaces Syft's ``execute_byte_code``: the code runs in a sandboxed worker."""
    from syft.service.code.user_code import UserCodeExecutionOutput

    execution = _ACTIVE.get()

    def failed(message: str):
        return UserCodeExecutionOutput(user_code_id=code_item.id, stdout="", stderr="", result=None,
                                       errored=True, safe_error_message=message)

    if execution is None:
        return failed("this datasite runs code only through its isolated workers")
    if execution.ran:  # Syft's second run, on the mock twin: it would only repeat the code; nothing runs
        return UserCodeExecutionOutput(user_code_id=code_item.id, stdout="", stderr="", result=None,
                                       errored=False, safe_error_message="")
    try:
        value = execution.run(kwargs)
    except Refusal as exc:
        return failed(str(exc))
    except (TypeError, ValueError, wire.WireError) as exc:
        execution.outcome, execution.error_id = "error", secrets.token_hex(6)
        log.warning("execution %s could not start: %s", execution.error_id, exc)
        return failed(f"{code_item.service_func_name} could not be started (error id {execution.error_id})")
    return UserCodeExecutionOutput(user_code_id=code_item.id, stdout="", stderr="", result=value,
                                   errored=False, safe_error_message="")

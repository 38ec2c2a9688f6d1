"""A federated study: one plan, one pair of code requests per hospital, rounds of DP-SGD.

The researcher's side never touches a row: each round it sends the global weights to
every approved hospital, gets back each site's DP-SGD weights (and epsilon spent), and
aggregates them with the plan's strategy. Evaluation comes back as noised score
histograms (under secure aggregation only their sum over the sites). Each round is checkpointed, so a study resumes where it stopped; the sites keep
their own privacy accountants, so a resume can never reset what has been spent.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from syft_policies.quiet import quiet
from datasites.jobs.secure_round import SECURE_STEPS
from datasites.jobs.models import is_local

from .checkpoint import latest_checkpoint, save_checkpoint
from .metrics import pooled_auroc, pooled_roc
from .plan import PlanError, StudyPlan
from .tasks import task_of
from .requests import RequestStatus, remaining_budget, request_status, submit_request

__all__ = ["Study", "StudyResult", "StudyStopped", "RoundRefused", "SiteUnreachable", "SECURE_SUM"]

SECURE_SUM = "all sites (secure sum)"  # the one evaluation a secure-aggregation study sees
HEARTBEAT_SECONDS = 30.0  # how long a site's server may take to answer that it is alive


class StudyStopped(RuntimeError):
    """The study cannot run as planned (denials, missing approvals); the message says why."""


class RoundRefused(RuntimeError):
    """A site did not run the requested round (its approved round budget is used up)."""


class SiteUnreachable(RuntimeError):
    """A site did not answer (connection refused or reset, or past the plan's deadline)."""


def _unreachable(exc: BaseException) -> bool:
    """A failure of the network or the server, not an answer of the site's (retrying helps)."""
    import requests

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (ConnectionError, TimeoutError, requests.exceptions.ConnectionError,
                            requests.exceptions.Timeout)):
            return True
        text = str(exc)
        if any(w in text for w in ("Connection refused", "Connection reset", "Failed to establish a new connection",
                                   "Max retries exceeded", "Remote end closed connection", "Read timed out",
                                   # Syft's input policy swallows a reset while it looks the asset up, and
                                   # says this of an asset the study has just listed at that site
                                   "does not belong to any Datasite")):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


# The code each hospital reviews is one of its own templates (syft_policies.templates).


@dataclass
class StudyResult:
    plan: StudyPlan
    weights: dict
    history: list[dict]
    evaluations: dict[str, dict]
    sites: list[str]
    denied: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def epsilon(self) -> dict[str, float]:
        """DP-SGD epsilon spent per site (at the plan's delta)."""
        return dict(self.history[-1]["epsilon"]) if self.history else {}

    @property
    def evaluation_epsilon(self) -> dict[str, float]:
        """Epsilon the noised evaluations cost per site, from their receipts."""
        out: dict[str, float] = {}
        for h in self.history:
            for site, eps in (h.get("evaluation_epsilon") or {}).items():
                out[site] = out.get(site, 0.0) + float(eps)
        return out

    @property
    def total_epsilon(self) -> dict[str, float]:
        """What the study cost each site: DP-SGD plus evaluation (basic composition)."""
        evaluation = self.evaluation_epsilon
        return {s: e + evaluation.get(s, 0.0) for s, e in self.epsilon.items()}

    @property
    def auroc(self) -> float:
        return pooled_auroc(list(self.evaluations.values()))

    @property
    def score(self) -> float:
        """The pooled headline number of the last evaluation (AUROC, or whole-tumour Dice)."""
        return task_of(self.plan.model).score(list(self.evaluations.values()))

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        return pooled_roc(list(self.evaluations.values()))


class Study:
    """Run ``plan`` on ``clients`` (site name -> the researcher's logged-in Syft client)."""

    def __init__(self, plan: StudyPlan, clients: Mapping[str, object], *, directory: Path,
                 echo=print, progress: bool = True, weights: Mapping | None = None):
        """``weights``: where round 1 starts (e.g. a model trained on the sites' public mocks,
        which costs no epsilon); default the plan's model freshly initialised from its seed."""
        missing = [s for s in plan.sites if s not in clients]
        if missing:
            raise PlanError(f"no client for site(s) {missing}; log in to every site in plan.sites")
        self.plan, self.clients, self.echo, self.progress = plan, dict(clients), echo, progress
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        plan_file = self.directory / "plan.json"
        if plan_file.exists() and json.loads(plan_file.read_text()) != plan.to_dict():
            raise PlanError(f"{self.directory} holds a different study plan; resume it with Study.resume "
                            "or choose another directory")
        plan_file.write_text(json.dumps(plan.to_dict(), indent=1))
        self.strategy = plan.make_strategy()
        self.participants: list[str] = list(plan.sites)
        self.denied: dict[str, str] = {}
        self.history: list[dict] = []
        self.task = task_of(plan.model)
        self.weights = self.task.initial_weights(plan.model, seed=plan.seed)
        if weights is not None:
            if set(weights) != set(self.weights) or any(np.shape(weights[k]) != np.shape(v)
                                                        for k, v in self.weights.items()):
                raise PlanError(f"the starting weights do not fit the plan's model {plan.model!r}")
            self.weights = {k: np.asarray(weights[k], dtype=np.asarray(v).dtype) for k, v in self.weights.items()}
        self.round = 0
        self._assets: dict[str, object] = {}
        self._approvals_checked = False
        self._unmasked: dict[int, tuple] = {}  # secure rounds: the aggregator and its survivors

    @classmethod
    def resume(cls, directory: Path, clients: Mapping[str, object], **options) -> "Study":
        """Continue a study from its last checkpoint (the sites continue their accountants)."""
        directory = Path(directory)
        if not (directory / "plan.json").exists():
            raise FileNotFoundError(f"{directory} has no plan.json: not a study directory")
        study = cls(StudyPlan.from_dict(json.loads((directory / "plan.json").read_text())), clients,
                    directory=directory, **options)
        ckpt = latest_checkpoint(directory)
        if ckpt is not None:
            study.round, study.weights = ckpt.round, ckpt.weights
            study.history = ckpt.meta["history"]
            study.participants = ckpt.meta["sites"]
            study.denied = ckpt.meta.get("denied", {})
        return study

    # -- names of the two requests at each site ------------------------------------------
    @property
    def train_function(self) -> str:
        return f"{self.plan.study.replace('-', '_')}_train"

    @property
    def evaluate_function(self) -> str:
        return f"{self.plan.study.replace('-', '_')}_evaluate"

    def _asset(self, site: str):
        if site not in self._assets:
            client = self.clients[site]
            with quiet():
                datasets = {d.name: d for d in client.datasets}
            if self.plan.dataset not in datasets:
                raise StudyStopped(f"{site} has no dataset {self.plan.dataset!r} (it has {sorted(datasets)})")
            assets = {a.name: a for a in datasets[self.plan.dataset].assets}
            if self.plan.asset not in assets:
                raise StudyStopped(f"{site}'s {self.plan.dataset!r} has no {self.plan.asset} asset")
            self._assets[site] = assets[self.plan.asset]
        return self._assets[site]

    def _syft_function(self, site: str, body, name: str, limit: int):
        import inspect

        import syft as sy

        from syft_policies.release import ReleasePolicy

        client = self.clients[site]
        researcher_input = list(inspect.signature(body).parameters)[-1]  # weights, or a secure-round message
        with quiet():
            return sy.syft_function(
                input_policy=sy.MixedInputPolicy(client=client, cohort=self._asset(site),
                                                 plan=sy.Constant(val=self.plan.job_plan()),
                                                 **{researcher_input: dict}),
                output_policy=ReleasePolicy(limit=limit), name=name)(body)

    # -- approval ------------------------------------------------------------------------
    def budgets(self) -> dict[str, float | None]:
        """Epsilon each site still has for this plan's dataset (None: the site did not say)."""
        out = {}
        for site in self.plan.sites:
            try:
                rows = self._reachable(site, lambda: remaining_budget(self.clients[site]))
            except RuntimeError:
                out[site] = None
                continue
            out[site] = next((r["remaining"] for r in rows if r["dataset"] == self.plan.dataset), None)
        return out

    def submit(self) -> None:
        """Send the train and evaluate requests to every site (once; a resubmit is a no-op).

        A site whose remaining budget is already below the plan's epsilon would refuse the
        approval, so that is said here, before anything is sent.
        """
        todo = []
        train, evaluate = self.task.templates(secure=self.plan.secure_aggregation)
        for site in self.plan.sites:
            for body, name in ((train, self.train_function), (evaluate, self.evaluate_function)):
                try:
                    self._reachable(site, lambda: request_status(self.clients[site], name))
                except LookupError:
                    todo.append((site, body, name))
        need = self.plan.total_epsilon  # DP-SGD plus the noised evaluations
        left = self.budgets() if todo else {}
        short = {site: left[site] for site in {t[0] for t in todo}
                 if left.get(site) is not None and left[site] + 1e-9 < need}
        if short:
            detail = ", ".join(f"{site} has {eps:.2f}" for site, eps in sorted(short.items()))
            raise PlanError(f"the plan needs epsilon {need:.2f} at each site but {detail} left of "
                            f"{self.plan.dataset!r}; lower epsilon or rounds, or drop those sites")
        for site, body, name in todo:
            if name == self.evaluate_function:  # the job pays and counts each planned evaluation once; retries fetch
                limit = len(self.plan.eval_epsilons) * (1 + self.plan.retries)
            elif self.plan.secure_aggregation:  # one call per protocol step and attempt
                limit = len(SECURE_STEPS) * self.plan.rounds * (1 + self.plan.retries)
            else:  # a retry of a round gets the site's same reply (the job pays and trains once a round)
                limit = (1 + self.plan.retries) * self.plan.rounds
            def send(site=site, body=body, name=name, limit=limit):
                try:  # a submission whose reply was lost must not be sent twice
                    return request_status(self.clients[site], name)
                except LookupError:
                    return submit_request(self.clients[site], self._syft_function(site, body, name, limit))
            self._reachable(site, send)

    def _decisions(self) -> dict[str, list[RequestStatus]]:
        """Per site, the status of its train and evaluate requests."""
        return {site: [self._reachable(site, lambda f=f: request_status(self.clients[site], f))
                       for f in (self.train_function, self.evaluate_function)] for site in self.plan.sites}

    def approvals(self) -> dict[str, RequestStatus]:
        """Per site: approved only when both requests are; denied (with the reason) if either is."""
        return {site: _combined(site, self.train_function, states) for site, states in self._decisions().items()}

    def request_ids(self) -> dict[str, dict[str, str]]:
        """Per site, ``{function: request id}`` of this study's latest requests there: what the
        researcher sends to that hospital's compliance officer (``medsyft review show <id>``)."""
        def ids(site):
            with quiet():
                mine = [r for r in self.clients[site].requests
                        if r.code.service_func_name in (self.train_function, self.evaluate_function)]
            latest = {}
            for r in sorted(mine, key=lambda r: str(r.request_time)):
                latest[r.code.service_func_name] = str(r.id.no_dash)
            return {f: latest[f] for f in (self.train_function, self.evaluate_function) if f in latest}
        return {site: self._reachable(site, lambda site=site: ids(site)) for site in self.plan.sites}

    def wait_for_approvals(self, *, timeout: float = 3600, poll: float = 2.0) -> list[str]:
        """Block until every site has decided; returns the sites that will take part.

        While a decision is pending it first prints, per site, the request ids to send to that
        hospital's compliance officer, then one status line (rewritten in place on a terminal;
        in a notebook or a log, a new line only when a decision arrives) until every site has
        decided or ``timeout`` seconds have passed; then each site's decision. A denial stops
        the study unless ``plan.min_sites`` allows running without that site.
        """
        started = time.monotonic()
        deadline = started + timeout
        decisions = self._decisions()
        waiting = any(_combined(site, "", st).status == "pending" for site, st in decisions.items())
        if waiting:  # nothing to send when every site has already decided (e.g. a resumed study)
            self.echo("Requests to send to each hospital's compliance officer (medsyft review show ID --site SITE):")
            for site, ids in self.request_ids().items():
                for function, rid in ids.items():
                    self.echo(f"  {site:<16} {rid[:8]}  {function:<28} {rid}")
        line = _StatusLine(self.echo)
        try:
            while True:
                status = {site: _combined(site, self.train_function, st) for site, st in decisions.items()}
                pending = [s for s, st in status.items() if st.status == "pending"]
                if waiting:
                    line.show(_status_words(decisions), time.monotonic() - started)
                if not pending or time.monotonic() > deadline:
                    break
                time.sleep(poll)
                decisions = self._decisions()
        finally:
            line.close()
        for site, st in status.items():
            word = {"approved": "approved", "denied": "DENIED", "pending": "still pending"}[st.status]
            self.echo(f"  {site:<16} {word}" + (f": {st.reason}" if st.reason else ""))
        if pending:
            raise StudyStopped(f"no decision after {timeout:.0f}s from {pending}; ask their compliance officers "
                               "or wait longer")
        self.denied = {s: st.reason for s, st in status.items() if st.status == "denied"}
        approved = [s for s in self.plan.sites if status[s].status == "approved"]
        required = len(self.plan.sites) if self.plan.min_sites is None else self.plan.min_sites
        if len(approved) < required:
            why = "; ".join(f"{s}: {r}" for s, r in self.denied.items())
            rule = ("the plan requires every site (set min_sites to run without some)" if self.plan.min_sites is None
                    else f"the plan requires at least {required} sites")
            raise StudyStopped(f"study {self.plan.study} stopped: {len(approved)} of {len(self.plan.sites)} sites "
                               f"approved and {rule}. Denied - {why}")
        self.participants = approved
        self._approvals_checked = True
        return approved

    # -- rounds --------------------------------------------------------------------------
    def _within(self, site: str, what: str, seconds: float, work):
        """``work()`` in a daemon thread, given up after ``seconds`` (a site that hangs for
        ever then holds neither the study nor the interpreter). Returns (ok, result or error)."""
        import queue
        import threading

        answer: queue.Queue = queue.Queue(maxsize=1)

        def run():
            try:
                with quiet():
                    answer.put((True, work()))
            except BaseException as exc:  # Syft raises SyftException for errors inside the job
                answer.put((False, exc))

        threading.Thread(target=run, daemon=True, name=f"{site}:{what}").start()
        try:
            return answer.get(timeout=seconds)
        except queue.Empty:
            raise SiteUnreachable(f"{site} did not answer {what} in {seconds:.0f} s") from None

    def heartbeat(self, site: str) -> None:
        """A signed, cheap call answered by the site's server within ``HEARTBEAT_SECONDS``
        (or the deadline, if shorter): a frozen or dead site is found in seconds, before a
        round waits a whole deadline for it. Connection failures are retried like any call."""
        seconds = min(HEARTBEAT_SECONDS, self.plan.deadline)

        def once():
            ok, result = self._within(site, "a heartbeat", seconds,
                                      lambda: self.clients[site].api.services.user.get_current_user())
            if not ok or type(result).__name__ == "SyftError":
                kind = SiteUnreachable if not ok and _unreachable(result) else RuntimeError
                raise kind(f"{site} failed a heartbeat: {str(result).splitlines()[0][:200]}")

        self._retrying(site, "a heartbeat", once)

    def _call(self, site: str, function: str, weights: dict | None = None, **inputs):
        """One call of an approved request at ``site``, within the plan's deadline."""
        client = self.clients[site]
        if weights is not None:
            inputs["weights"] = weights

        def call():
            result = getattr(client.code, function)(cohort=self._asset(site), **inputs)
            if hasattr(result, "get") and not (type(result).__name__ == "SyftError" or isinstance(result, Exception)):
                result = result.get()  # fetching the output is a network call too
            return result

        ok, result = self._within(site, function, self.plan.deadline, call)
        if not ok:
            kind = SiteUnreachable if _unreachable(result) else RuntimeError
            raise kind(f"{function} at {site} failed: {result}") from result
        if type(result).__name__ == "SyftError" or isinstance(result, Exception):
            kind = SiteUnreachable if _unreachable(result) else RuntimeError
            raise kind(f"{function} at {site} failed: {result}")
        return result

    def _reachable(self, site: str, call):
        """``call()`` (a submission or a status query), retried like a round's calls when the
        network, not the site, failed."""
        def once():
            try:
                return call()
            except SiteUnreachable:
                raise
            except Exception as exc:  # noqa: BLE001 - only network failures are retried
                if _unreachable(exc):
                    raise SiteUnreachable(f"{site} could not be reached: {str(exc).splitlines()[0][:200]}") from exc
                raise
        return self._retrying(site, "asking", once)

    def _retrying(self, site: str, what: str, call):
        """``call()``, tried again with backoff while ``site`` cannot be reached (``plan.retries``)."""
        delay = 2.0
        for attempt in range(self.plan.retries + 1):
            try:
                return call()
            except SiteUnreachable as exc:
                if attempt == self.plan.retries:
                    raise
                self.echo(f"  {site}: {exc}; {what} again in {delay:.0f} s "
                          f"(attempt {attempt + 2} of {self.plan.retries + 1})")
                time.sleep(delay)
                delay = min(2 * delay, 60.0)

    def on_sites(self, sites, work, *, what: str) -> tuple[dict, dict[str, str]]:
        """``work(site)`` at every site at once (hospitals are separate machines: a round
        lasts as long as its slowest site, and a hung one costs one deadline, not one per
        site). Returns the answers in ``sites``' order and a one-line reason per failure;
        :class:`RoundRefused` stops everything."""
        from concurrent.futures import ThreadPoolExecutor

        sites = list(sites)
        answers, failures = {}, {}
        if not sites:
            return answers, failures
        with ThreadPoolExecutor(max_workers=len(sites), thread_name_prefix="medsyft-site") as pool:
            futures = {site: pool.submit(work, site) for site in sites}
            for site, future in futures.items():
                try:
                    answers[site] = future.result()
                except RoundRefused:
                    raise
                except RuntimeError as exc:
                    failures[site] = str(exc).splitlines()[0][:300]
                    self.echo(f"  {site} left out of {what}: {failures[site]}")
        return answers, failures

    def alive(self, sites, *, what: str) -> tuple[list[str], dict[str, str]]:
        """The sites among ``sites`` that answer a heartbeat, and why the others are left out."""
        def beat(site):
            self.heartbeat(site)
            return True
        answers, failures = self.on_sites(sites, beat, what=what)
        return list(answers), failures

    def train_round(self, site: str, weights: dict, expected_round: int) -> dict:
        """One site's DP-SGD round; raises :class:`RoundRefused` if the site did not run it.

        The call names its round, so a retry after a lost reply gets the site's reply to that
        round again (nothing trained or paid twice) and a site ahead of the study is refused."""
        from datasites.jobs.training import ROUND_KEY

        shared = {k: v for k, v in weights.items() if not is_local(k, self.strategy.local_layers())}
        shared[ROUND_KEY] = int(expected_round)
        try:
            result = self._retrying(site, f"round {expected_round}",
                                    lambda: self._call(site, self.train_function, shared))
        except SiteUnreachable:
            raise
        except RuntimeError as exc:
            if expected_round > self.plan.rounds:
                raise RoundRefused(f"{site} refused round {expected_round}: the approved plan allows "
                                   f"{self.plan.rounds} rounds") from exc
            raise
        if not isinstance(result, dict) or result.get("round", 0) != expected_round:
            raise RoundRefused(f"{site} did not run round {expected_round}: the approved request allows "
                               f"{self.plan.rounds} rounds and Syft returned the previous output instead")
        return result

    def secure_round(self, weights: dict, round_no: int) -> tuple[dict, dict]:
        """One round through secure aggregation; returns (new global weights, per-site replies).

        The researcher only ever holds masked updates and their sum. A site that fails
        after masking is dropped and the round completes without it (with at least
        ``plan.secagg_threshold`` survivors); nothing of its update is revealed.
        """
        for attempt in range(1, self.plan.retries + 2):
            try:
                total, replies = self.secure_totals(weights, round_no, attempt=attempt)
                break
            except StudyStopped as exc:
                if attempt > self.plan.retries:
                    raise
                self.echo(f"  {exc}; trying round {round_no} again with fresh keys (attempt {attempt + 1})")
        n = float(total.pop("~n")[0])
        average = {k: (v / n).astype(np.asarray(weights[k]).dtype) for k, v in total.items()}
        return {**weights, **average}, replies

    def secure_totals(self, weights: dict, round_no: int, *, attempt: int = 1) -> tuple[dict, dict]:
        """The unmasked sums of ``num_samples * weights`` (and of ``num_samples``, key ``~n``) over
        the sites that completed the round, and their replies: what a regional aggregator forwards.
        A failed round is tried again as a new ``attempt`` (fresh keys; each site masks the
        update it trained for the round; a site that revealed shares before does not join)."""
        from datasites.jobs.secure_round import round_context
        from secagg import AggregationFailed, SecAggServer

        local = tuple(self.strategy.local_layers())
        shared = {k: v for k, v in weights.items() if not is_local(k, local)}
        ids = {site: i + 1 for i, site in enumerate(sorted(self.participants))}
        server = SecAggServer(context=round_context(self.plan.study, round_no, attempt),
                              threshold=self.plan.secagg_threshold)

        def step(site, **message):
            return self._call(site, self.train_function, message={"round": round_no, "attempt": attempt, **message})

        def each(sites, make):
            return self.on_sites(sites, make, what=f"round {round_no}")[0]

        try:
            alive, _ = self.alive(self.participants, what=f"round {round_no}")
            adverts = each(alive, lambda s: step(s, step="advertise", site_id=ids[s]))
            roster = server.collect_adverts(list(adverts.values()))
            shares = each(adverts, lambda s: step(s, step="share", roster=roster)["shares"])
            inboxes = server.route_shares({ids[s]: v for s, v in shares.items()})
            replies = each(shares, lambda s: step(s, step="mask", weights=shared, inbox=inboxes[ids[s]]))
            survivors, dropped = server.collect_masked({ids[s]: r["masked"] for s, r in replies.items()})
        except AggregationFailed as exc:
            raise StudyStopped(f"round {round_no} could not be aggregated: {exc}") from exc
        names = {i: s for s, i in ids.items()}
        # the consistency round: every survivor signs the survivor set (and the sites it masked
        # with); a site reveals shares only once all of them did
        signed = each([names[i] for i in survivors], lambda s: step(s, step="consistency", survivors=survivors))
        try:
            signatures = server.collect_signatures({ids[s]: r["signature"] for s, r in signed.items()})
        except AggregationFailed as exc:
            raise StudyStopped(f"round {round_no} could not be unmasked: {exc}") from exc
        answers = each(list(signed), lambda s: step(s, step="unmask", survivors=survivors, dropped=dropped,
                                                    signatures=signatures))
        try:
            total = server.unmask(list(answers.values()))
        except (AggregationFailed, KeyError) as exc:
            raise StudyStopped(f"round {round_no} could not be unmasked: {exc}") from exc
        self._unmasked = {round_no: (server, {i: names[i] for i in survivors})}
        return total, replies

    def secure_evaluation(self, weights: dict, round_no: int) -> tuple[dict | None, dict[str, float]]:
        """The noised score histograms of ``weights`` summed over round ``round_no``'s survivors
        (each site's leave masked with that round's keys, so no site's own is ever seen), as
        one evaluation; and the epsilon each site's receipt says it cost. ``None`` when a
        survivor did not answer: the others' histograms then stay masked."""
        from secagg import AggregationFailed

        server, names = self._unmasked.pop(round_no, (None, {}))
        if server is None:
            raise StudyStopped(f"round {round_no} was not unmasked in this session; a secure study evaluates "
                               "right after its round")
        by_site, _ = self.on_sites(names.values(), lambda site: self.evaluate(site, weights, round_no),
                                   what=f"the evaluation of round {round_no}")
        replies = {i: by_site[site] for i, site in names.items() if site in by_site}
        spent = {names[i]: float(r["receipt"]["epsilon"]) for i, r in replies.items()}
        try:
            total = server.unmask_extra({i: r["masked"] for i, r in replies.items()}, purpose="evaluation")
        except (AggregationFailed, KeyError, TypeError) as exc:
            self.echo(f"  round {round_no}'s evaluation stays masked: {exc}")
            return None, spent
        return {**self.task.from_secure_sum(total), "sites": sorted(spent),
                "receipts": {names[i]: r["receipt"] for i, r in replies.items()}}, spent

    def evaluate(self, site: str, weights: dict, round_no: int | None = None) -> dict:
        """The site's noised evaluation of ``weights``; naming the round makes a retry fetch
        the same reply instead of paying for another evaluation."""
        if round_no is None:
            return self._call(site, self.evaluate_function, weights)
        from datasites.jobs.training import ROUND_KEY

        tagged = {**weights, ROUND_KEY: int(round_no)}
        return self._retrying(site, f"the evaluation of round {round_no}",
                              lambda: self._call(site, self.evaluate_function, tagged))

    def run(self, rounds: int | None = None) -> StudyResult:
        """Run the remaining rounds (or ``rounds`` more); checkpoint after each.

        A site that fails, cannot be reached after the plan's retries, or misses its deadline
        is left out of that round (and asked again in the next); the round is aggregated
        from the sites that answered if they are at least ``plan.min_sites`` (every site
        when None), and checkpointed before its evaluation, whose failure loses nothing."""
        if not self._approvals_checked:
            self.wait_for_approvals()
        t0 = time.monotonic()
        last = self.plan.rounds if rounds is None else min(self.plan.rounds, self.round + rounds)
        bar = _progress(total=(last - self.round) * len(self.participants), enabled=self.progress,
                        desc=f"{self.plan.study} ({self.strategy.name})")
        evaluations = {}
        try:
            for r in range(self.round + 1, last + 1):
                t_round = time.monotonic()
                results, dropped = {}, {}
                if self.plan.secure_aggregation:
                    bar.set_postfix_str(f"round {r}/{self.plan.rounds} secure aggregation")
                    previous = self.weights
                    self.weights, results = self.secure_round(self.weights, r)
                    dropped = {s: "did not complete the secure round" for s in self.participants if s not in results}
                    bar.update(len(self.participants))
                else:
                    bar.set_postfix_str(f"round {r}/{self.plan.rounds}")
                    sites, dropped = self.alive(self.participants, what=f"round {r}")
                    start = self.weights

                    def train(site, start=start, r=r):
                        try:
                            return self.train_round(site, start, r)
                        finally:
                            bar.update(1)
                    results, failed = self.on_sites(sites, train, what=f"round {r}")
                    dropped.update(failed)
                    bar.update(len(dropped) - len(failed))
                    previous = None
                    self._quorum(r, results, dropped)
                    try:
                        self.weights = self.strategy.aggregate(self.weights, results)
                    except ValueError as exc:  # e.g. too few clean updates for a robust rule
                        raise StudyStopped(f"round {r} could not be aggregated: {exc}") from exc
                self.round = r
                self.history.append({
                    "round": r, "sites": list(results), "dropped": dropped,
                    "epsilon": {s: float(res["epsilon"]) for s, res in results.items()},
                    "num_samples": {s: res.get("num_samples") for s, res in results.items()},  # secure: hidden
                    "update_norm": ({s: _distance(res["weights"], self.weights) for s, res in results.items()
                                     if s not in (getattr(self.strategy, "quarantined", None) or {})}
                                    if previous is None else {"global": _distance(previous, self.weights)}),
                    "quarantined": dict(getattr(self.strategy, "quarantined", {}) or {}),
                    "budget_remaining": {s: res.get("budget_remaining") for s, res in results.items()},
                    "auroc": None, "score": None, "metric": self.task.metric, "site_auroc": {},
                    "evaluation_epsilon": {}, "evaluations": {}, "seconds": None})
                self._checkpoint(r)  # the round is kept before anything else can fail
                auroc, evaluations = None, {}
                if r in self.plan.evaluated_rounds():  # each evaluation is noised and paid for
                    auroc, evaluations = self._evaluate_round(r, list(results))
                self.history[-1]["seconds"] = round(time.monotonic() - t_round, 2)
                self._checkpoint(r)
                shown = "not evaluated" if auroc is None else f"{auroc:.3f}"
                bar.set_postfix_str(f"round {r}: {self.task.metric} {shown}, max eps {max(self.history[-1]['epsilon'].values()):.2f}")
        finally:
            bar.close()
        if not evaluations and self.history:  # resumed after the last round: its evaluation is in the log
            evaluations = dict(self.history[-1].get("evaluations") or {})
        return StudyResult(self.plan, self.weights, self.history, evaluations, list(self.participants),
                           dict(self.denied), round(time.monotonic() - t0, 2))

    def _quorum(self, round_no: int, results: dict, dropped: dict) -> None:
        need = len(self.participants) if self.plan.min_sites is None else self.plan.min_sites
        if len(results) < need:
            why = "; ".join(f"{s}: {m}" for s, m in dropped.items())
            rule = "every site" if self.plan.min_sites is None else f"at least {need} sites (min_sites)"
            raise StudyStopped(f"round {round_no} stopped: {len(results)} of {len(self.participants)} sites "
                               f"answered and the plan needs {rule}. {why}. Resume the study when they are back: "
                               "the sites that trained return the same reply, nothing is paid twice")

    def _evaluate_round(self, round_no: int, sites: list[str]) -> tuple[float | None, dict]:
        """Evaluate the round's model (a failure is reported and the round kept without its score)."""
        evaluations, spent = {}, {}
        if self.plan.secure_aggregation:  # only the sum over the round's survivors
            pooled, spent = self.secure_evaluation(self.weights, round_no)
            evaluations = {} if pooled is None else {SECURE_SUM: pooled}
        else:
            evaluations, _ = self.on_sites(sites, lambda site: self.evaluate(site, self.weights, round_no),
                                           what=f"the evaluation of round {round_no}")
            spent = {site: float(e["receipt"]["epsilon"]) for site, e in evaluations.items()}
        score = _score(self.task, list(evaluations.values())) if evaluations else None
        self.history[-1].update({
            "score": score, "auroc": score if self.task.metric == "auroc" else None,
            "evaluation_epsilon": spent, "evaluations": evaluations,  # noised, public once released
            "site_auroc": {s: _score(self.task, [e]) for s, e in evaluations.items() if s != SECURE_SUM}})
        return score, evaluations

    def _checkpoint(self, round_no: int) -> None:
        save_checkpoint(self.directory, round_no, self.weights,
                        {"sites": self.participants, "denied": self.denied, "history": self.history,
                         "epsilon": self.history[-1]["epsilon"], "auroc": self.history[-1]["auroc"]})


def _combined(site: str, function: str, states: list[RequestStatus]) -> RequestStatus:
    denied = [s for s in states if s.status == "denied"]
    if denied:
        return RequestStatus(site, function, "denied", denied[0].reason)
    if all(s.status == "approved" for s in states):
        return RequestStatus(site, function, "approved")
    return RequestStatus(site, function, "pending")


def _status_words(decisions: dict[str, list[RequestStatus]]) -> str:
    """``site approved | site pending (1/2 approved) | site DENIED``: one line for every site."""
    words = []
    for site, states in decisions.items():
        combined = _combined(site, "", states).status
        done = sum(s.status == "approved" for s in states)
        word = {"approved": "approved", "denied": "DENIED"}.get(combined, f"pending ({done}/{len(states)} approved)")
        words.append(f"{site} {word}")
    return " | ".join(words)


class _StatusLine:
    """The live status of the approvals: rewritten in place (carriage return) when the
    researcher's stdout is a terminal and the study prints there; otherwise a new line
    only when a decision changes it, so a notebook or a log gets no line per poll."""

    def __init__(self, echo):
        self.echo = echo
        self.live = echo is print and getattr(sys.stdout, "isatty", lambda: False)()
        self.shown, self.width = None, 0

    def show(self, words: str, elapsed: float) -> None:
        minutes, seconds = divmod(int(elapsed), 60)
        line = f"  waiting {minutes}m{seconds:02d}s: {words}"
        if self.live:
            sys.stdout.write("\r" + line + " " * max(0, self.width - len(line)))
            sys.stdout.flush()
            self.width = len(line)
        elif words != self.shown:
            self.echo(line)
        self.shown = words

    def close(self) -> None:
        if self.live and self.width:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.width = 0


def _score(task, evaluations: list[dict]) -> float | None:
    try:
        return task.score(evaluations)
    except ValueError:  # e.g. the noised totals left no positive or negative patient
        return None


def _distance(a: dict, b: dict) -> float:
    """L2 distance between two weight dicts over their common layers (client drift)."""
    return float(np.sqrt(sum(float(np.sum((np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)) ** 2))
                             for k in a if k in b)))


def _progress(*, total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="site-round", disable=not enabled, file=sys.stderr, leave=False)

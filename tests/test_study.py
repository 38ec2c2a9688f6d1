"""Federated studies through real in-process Syft datasites: privacy accounting, round
limits, denials, checkpoints and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from syft_policies.quiet import quiet
from federation import PlanError, RoundRefused, Study, StudyPlan, StudyStopped, request_status
from federation.study import SECURE_SUM
from syft_policies import ReviewError, approve_request, deny_request, list_requests

TRAIN_KEYS = {"round", "weights", "num_samples", "epsilon", "delta", "accountant", "budget_remaining", "receipt",
              "metrics"}


def _study(network, tmp_path, **plan_options):
    home, sites = network
    names = plan_options.pop("sites", list(sites))
    plan = StudyPlan(sites=names, **plan_options)
    study = Study(plan, {n: sites[n].researcher() for n in names}, directory=tmp_path / plan.study,
                  echo=lambda *_: None, progress=False)
    study.submit()
    return study


def _review(network, *, deny: tuple[str, ...] = (), reason: str = "") -> None:
    _, sites = network
    for name, site in sites.items():
        officer = site.officer()
        for req in list_requests(officer, status="pending"):
            if name in deny:
                deny_request(officer, req.id, reason=reason)
            else:
                approve_request(officer, req.id)


def _independent_epsilon(plan: StudyPlan, rounds: int) -> float:
    """Opacus' RDP analysis called directly, from the plan's public parameters."""
    orders = RDPAccountant.DEFAULT_ALPHAS
    q = 1 / round(1 / plan.sample_rate)
    rdp = compute_rdp(q=q, noise_multiplier=plan.noise_multiplier, steps=rounds * plan.steps_per_round, orders=orders)
    eps, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=plan.delta)
    return float(eps)


def _site_state(network, site: str, study: str) -> dict:
    from datasites.isolation.mediator import StudyStore

    home, sites = network
    return StudyStore(home / site, sites[site].spec.researchers[0].email).load(study, "state")


def _counters(state: dict) -> dict:
    """What a round changes in a site's study state (the accountant and the round counters)."""
    return {k: state.get(k) for k in ("rounds_done", "last_round", "accountant", "epsilon")}


def test_epsilon_matches_an_independent_accountant_and_rounds_are_capped(network, tmp_path):
    study = _study(network, tmp_path, study="eps-cap", rounds=2, epsilon=3.0)
    _review(network)
    result = study.run()
    assert [h["round"] for h in result.history] == [1, 2]
    expected = _independent_epsilon(study.plan, 2)
    for site, eps in result.epsilon.items():
        assert eps == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert eps <= 3.0
        assert result.history[0]["epsilon"][site] == pytest.approx(_independent_epsilon(study.plan, 1), rel=1e-9)
        state = _site_state(network, site, "eps-cap")
        assert state["rounds_done"] == 2
        assert state["accountant"] == [[study.plan.noise_multiplier, 1 / round(1 / study.plan.sample_rate),
                                        2 * study.plan.steps_per_round]]

    site = study.plan.sites[0]
    before = _site_state(network, site, "eps-cap")
    with pytest.raises(RoundRefused, match="allows 2 rounds"):
        study.train_round(site, result.weights, 3)
    assert _counters(_site_state(network, site, "eps-cap")) == _counters(before)  # nothing trained or spent

    # what the researcher receives: weights shaped like the model, scalars, no per-patient arrays
    reply = result.evaluations[site]  # noised score histograms and their receipt, nothing exact
    assert set(reply) == {"evaluation", "histogram", "receipt"} and reply["evaluation"] == 2
    assert len(reply["histogram"]["positive"]) == len(reply["histogram"]["negative"]) == 32
    assert reply["receipt"]["epsilon"] == study.plan.final_eval_epsilon
    assert result.evaluation_epsilon[site] == pytest.approx(study.plan.evaluation_epsilon)
    assert result.total_epsilon[site] == pytest.approx(result.epsilon[site] + study.plan.evaluation_epsilon)
    with pytest.raises(RuntimeError, match="planned 2 evaluations and all have run here"):  # the job counts
        study.evaluate(site, result.weights)


def test_a_train_reply_carries_no_rows(network, tmp_path):
    study = _study(network, tmp_path, study="reply-shape", rounds=1, epsilon=2.0, sites=["lyon-chu"])
    _review(network)
    study.wait_for_approvals()
    reply = study.train_round("lyon-chu", study.weights, 1)
    assert set(reply) == TRAIN_KEYS
    assert {k: v.shape for k, v in reply["weights"].items()} == {k: v.shape for k, v in study.weights.items()}
    sizes = {np.asarray(v).size for v in reply["weights"].values()}
    assert reply["num_samples"] not in sizes  # no array sized by the number of patients


def test_resume_continues_at_the_right_round_with_the_site_accountant(network, tmp_path):
    _, sites = network
    names = ["amsterdam-umc", "boston-general"]
    study = _study(network, tmp_path, study="resume", rounds=3, epsilon=4.0, sites=names)
    _review(network)
    first = study.run(rounds=1)
    assert [h["round"] for h in first.history] == [1]
    assert (tmp_path / "resume" / "round-0001" / "weights.npz").exists()

    again = Study.resume(tmp_path / "resume", {n: sites[n].researcher() for n in names},
                         echo=lambda *_: None, progress=False)
    assert again.round == 1
    np.testing.assert_array_equal(again.weights["head.weight"], first.weights["head.weight"])
    done = again.run()
    assert [h["round"] for h in done.history] == [1, 2, 3]
    for r in (2, 3):
        for site in names:
            assert done.history[r - 1]["epsilon"][site] == pytest.approx(
                _independent_epsilon(again.plan, r), rel=1e-9)
    assert all(_site_state(network, s, "resume")["rounds_done"] == 3 for s in names)
    meta = json.loads((tmp_path / "resume" / "round-0003" / "meta.json").read_text())
    assert meta["round"] == 3 and meta["sites"] == names and set(meta["epsilon"]) == set(names)


def test_a_denial_stops_the_study_unless_the_plan_allows_fewer_sites(network, tmp_path):
    reason = "no sepsis studies without an IRB reference"
    strict = _study(network, tmp_path, study="strict", rounds=1, epsilon=2.0)
    _review(network, deny=("boston-general",), reason=reason)
    with pytest.raises(StudyStopped) as stopped:
        strict.run()
    message = str(stopped.value)
    assert "boston-general" in message and reason in message and "min_sites" in message

    lenient = _study(network, tmp_path, study="lenient", rounds=1, epsilon=2.0, min_sites=2)
    _review(network, deny=("boston-general",), reason=reason)
    result = lenient.run()
    assert result.sites == ["amsterdam-umc", "lyon-chu"]
    assert set(result.epsilon) == {"amsterdam-umc", "lyon-chu"}
    assert result.denied == {"boston-general": reason}


def test_the_site_budget_is_debited_and_then_refuses_runs_and_approvals(network, tmp_path):
    home, sites = network
    site = sites["lyon-chu"]
    ledger = site.ledger()
    plan = StudyPlan(study="budget", sites=["lyon-chu"], rounds=3, epsilon=3.0)
    # two rounds of DP-SGD and the two evaluations after them (each evaluation is paid too)
    two_rounds = ledger.spent("icu-sepsis") + plan.planned_epsilon(rounds=2) + sum(plan.eval_epsilons[:2]) + 1e-6
    ledger.set_budget("icu-sepsis", two_rounds)
    study = Study(plan, {"lyon-chu": site.researcher()}, directory=tmp_path / "budget", echo=lambda *_: None,
                  progress=False)
    with pytest.raises(PlanError, match=rf"needs epsilon {plan.total_epsilon:.2f} at each site but lyon-chu has "
                                        r"\d\.\d\d left"):  # the researcher sees it before sending
        study.submit()
    ledger.set_budget("icu-sepsis", 1e9)
    study.submit()
    ledger.set_budget("icu-sepsis", two_rounds)  # meanwhile another study spent the rest
    officer = site.officer()
    pending = {r.function: r.id for r in list_requests(officer, status="pending")}
    with pytest.raises(ReviewError, match="privacy budget is left"):  # 3 rounds do not fit
        approve_request(officer, pending["budget_train"], ledger=ledger)
    for rid in pending.values():  # the officer approves anyway, without the ledger check...
        approve_request(officer, rid)
    done = study.run(rounds=2)  # ...two rounds fit and are debited, exactly
    assert ledger.remaining("icu-sepsis") == pytest.approx(1e-6, abs=1e-9)
    assert sum(d["epsilon"] for d in ledger.history("icu-sepsis") if d["reference"].startswith("budget/")) \
        == pytest.approx(done.total_epsilon["lyon-chu"], rel=1e-9)
    before = _site_state(network, "lyon-chu", "budget")
    with pytest.raises(RuntimeError, match="privacy budget is left"):  # ...the third is refused, saying why
        study.run()
    assert _counters(_site_state(network, "lyon-chu", "budget")) == _counters(before)
    assert ledger.remaining("icu-sepsis") == pytest.approx(1e-6, abs=1e-9)
    ledger.set_budget("icu-sepsis", 1e9)  # leave the shared site usable for other tests


def test_governed_approval_two_person_rule_and_expiry(network, tmp_path):
    import datetime as dt

    from syft.service.user.user_roles import ServiceRole

    _, sites = network
    site = sites["boston-general"]
    admin = site.admin()
    email = "second.officer@boston-general.example"
    if email not in [u.email for u in admin.users]:
        with quiet():
            admin.register(name="Second Officer", email=email, password="a-second-officer-pw-7f3",
                           password_verify="a-second-officer-pw-7f3", institution="boston-general")
        uid = [u for u in admin.users if u.email == email][0].id
        admin.users.update(uid=uid, role=ServiceRole.DATA_OWNER)
    first, second = site.officer(), site.login(email, "a-second-officer-pw-7f3")
    governance, audit = site.governance(), site.audit()

    study = _study(network, tmp_path, study="governed", rounds=2, epsilon=2.0, sites=["boston-general"])
    pending = {r.function: r.id for r in list_requests(first, status="pending")}
    with pytest.raises(ReviewError, match="IRB approval or data-use agreement"):
        approve_request(first, pending["governed_train"], governance=governance, purpose="sepsis model")
    terms = dict(governance=governance, audit=audit, irb="IRB-2026-117", purpose="sepsis early warning",
                 expires=(dt.date.today() + dt.timedelta(days=30)).isoformat(), two_person=True)
    for rid in pending.values():
        assert approve_request(first, rid, **terms).status == "pending"  # one signature is not enough
        with pytest.raises(ReviewError, match="two-person rule"):
            approve_request(first, rid, **terms)
        assert approve_request(second, rid, **terms).status == "approved"
    record = governance.get(pending["governed_train"])
    assert record.complete and len(set(record.approvers)) == 2 and record.irb == "IRB-2026-117"
    events = [e for e in audit.entries() if e.get("request") == pending["governed_train"]]
    assert [e["event"] for e in events] == ["submitted", "reviewed", "co-sign-needed", "deciding", "reviewed",
                                           "approved"]
    assert events[-1]["irb"] == "IRB-2026-117" and len(events[-1]["approvers"]) == 2

    study.run(rounds=1)
    record.expires = (dt.date.today() - dt.timedelta(days=1)).isoformat()  # time passes
    governance.put(record)
    before = _site_state(network, "boston-general", "governed")
    with pytest.raises(RuntimeError, match="expired on"):
        study.run()
    assert _counters(_site_state(network, "boston-general", "governed")) == _counters(before)  # nothing ran after expiry
    assert audit.verify().ok


def test_a_restart_keeps_ledger_approvals_and_audit_chain(network):
    from datasites import start_site

    home, sites = network
    old = sites["boston-general"]
    ledger, governance, audit = old.ledger(), old.governance(), old.audit()
    left, approvals, entries = ledger.remaining("icu-sepsis"), governance._load(), audit.entries()
    assert approvals and entries  # the governed study above left its marks here
    old.stop()
    sites["boston-general"] = new = start_site(old.spec, home)
    assert new.ledger().remaining("icu-sepsis") == left
    assert new.governance()._load() == approvals
    assert new.audit().entries() == entries and new.audit().verify().ok
    assert request_status(new.researcher(), "governed_train").status == "approved"


class _DropsAfterMasking:
    """A researcher session to one site whose connection fails right after the site masked."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def before(self, message: dict) -> None:
        """Called before each call reaches the site (raise to lose it on the way there)."""

    def after(self, message: dict) -> None:
        """Called after the site answered (raise to lose the answer)."""
        if message.get("step") == "mask":
            raise ConnectionError("connection to the site lost after it masked its update")

    @property
    def code(self):
        outer, session = self._client.code, self

        class Code:
            def __getattr__(_, function):
                call = getattr(outer, function)

                def run(*args, **inputs):
                    message = inputs.get("message") or {}
                    session.before(message)
                    result = call(*args, **inputs)
                    session.after(message)
                    return result
                return run
        return Code()


def test_secure_aggregation_through_syft_equals_fedavg_and_survives_a_dropout(network, tmp_path):
    from secagg import FixedPoint
    from syft_policies.review import review_request

    _, sites = network
    names = sorted(sites)
    common = dict(rounds=1, epsilon=1.0, model="mlp", sample_rate=0.1)
    plain = _study(network, tmp_path, study="agg-plain", **common)
    secure = _study(network, tmp_path, study="agg-secure", secure_aggregation=True, **common)
    dropping = StudyPlan(study="agg-drop", sites=names, secure_aggregation=True, **common)
    clients = {n: sites[n].researcher() for n in names}
    clients[names[1]] = _DropsAfterMasking(clients[names[1]])
    drop = Study(dropping, clients, directory=tmp_path / "agg-drop", echo=lambda *_: None, progress=False)
    drop.submit()
    _review(network)
    for officer in (sites[n].officer() for n in names):  # the secure request is reviewed low risk
        (req,) = [r for r in list_requests(officer, status=None) if r.function == secure.train_function]
        assert review_request(officer, req.id).risk == "low"

    start = {k: v.copy() for k, v in plain.weights.items()}
    per_site = {n: plain.train_round(n, start, 1) for n in names}  # each site's true update (same seeds)
    expected = plain.strategy.aggregate(start, per_site)
    secure.wait_for_approvals()
    weights, replies = secure.secure_round(secure.weights, 1)
    # each run draws fresh secret noise, so two runs agree only up to what DP-SGD moves a weight
    # in one round (Adam: at most about lr per step); the sum's exactness is tested in test_secagg
    moved = 2 * secure.plan.lr * secure.plan.steps_per_round * 1.05
    for k in expected:
        assert np.max(np.abs(weights[k] - expected[k])) <= moved, k  # the unmasked sum is a FedAvg step
        assert np.max(np.abs(weights[k] - start[k])) > 0, k
    for n in names:  # what the researcher held for each site says nothing about that site's update
        true = np.concatenate([per_site[n]["num_samples"] * np.ravel(per_site[n]["weights"][k])
                               for k in sorted(per_site[n]["weights"])])
        seen = np.concatenate([FixedPoint().decode(np.ravel(replies[n]["masked"][k]))
                               for k in sorted(per_site[n]["weights"])])
        assert abs(np.corrcoef(true, seen)[0, 1]) < 5 / np.sqrt(len(true))  # 5 sigma of independent noise
        assert "weights" not in replies[n] and "num_samples" not in replies[n]

    drop.wait_for_approvals()
    result = drop.run()  # the round, then its evaluation: masked at each survivor, only the sum opens
    weights = result.weights
    assert names[1] not in result.history[-1]["epsilon"]
    assert list(result.evaluations) == [SECURE_SUM] and result.history[-1]["site_auroc"] == {}
    assert set(result.evaluation_epsilon) == set(names) - {names[1]} and 0 <= result.auroc <= 1
    counts = result.evaluations[SECURE_SUM]["histogram"]
    assert sum(counts["positive"]) + sum(counts["negative"]) > 50  # both survivors' test patients, noised
    survivors = {n: per_site[n] for n in names if n != names[1]}
    expected = plain.strategy.aggregate(start, survivors)
    for k in expected:
        assert np.max(np.abs(weights[k] - expected[k])) <= moved, k
    from datasites.jobs.site import Refused
    from datasites.jobs.training import dp_train

    with pytest.raises(Refused, match="secure aggregation"):  # the plain, unmasked path stays closed
        dp_train(None, start, secure.plan.job_plan())


class _LostInConsistency(_DropsAfterMasking):
    """A session whose connection fails in the consistency step of a round's first attempt."""

    def before(self, message: dict) -> None:
        if message.get("step") == "consistency" and message.get("attempt") == 1:
            raise ConnectionError("connection to the site lost before it signed")

    def after(self, message: dict) -> None:
        pass


def test_a_failed_secure_round_is_tried_again_with_fresh_keys_and_paid_once(network, tmp_path):
    """A hospital lost in the consistency step stops the round's first attempt (every survivor
    must sign); nobody revealed a share, so the round runs again with fresh keys, each hospital
    masking the update it trained for the round: trained and paid once."""
    _, sites = network
    names = sorted(sites)
    plan = StudyPlan(study="agg-retry", sites=names, secure_aggregation=True, rounds=1, epsilon=1.0, model="mlp",
                     sample_rate=0.1, retries=1)
    clients = {n: sites[n].researcher() for n in names}
    clients[names[0]] = _LostInConsistency(clients[names[0]])
    lines = []
    study = Study(plan, clients, directory=tmp_path / "agg-retry", echo=lines.append, progress=False)
    study.submit()
    _review(network)
    study.wait_for_approvals()
    result = study.run()
    assert any("attempt 2" in line for line in lines), lines
    assert result.history[0]["sites"] == names and list(result.evaluations) == [SECURE_SUM]
    for n in names:
        paid = [d for d in sites[n].ledger().history("icu-sepsis") if d["reference"].startswith("agg-retry/round-")]
        assert len(paid) == 1 and paid[0]["epsilon"] == pytest.approx(result.epsilon[n])

"""The release policy stops row-level outputs at execution, even when a request was approved."""

from __future__ import annotations

import pytest
import syft as sy

import datetime as dt
import inspect
import threading

import numpy as np
from syft.service.policy.policy import OutputPolicyExecuteOnce

from syft_policies.quiet import quiet
from scratchnet import approve_anyway
from scratchnet.exfiltration import ATTEMPTS, RETURNS_DATA, SUPPRESSED
from federation import fetch_result, remaining_budget, submit_request
from syft_policies import ReviewError, approve_request, list_requests, review_code
from syft_policies.release import ReleasePolicy
from syft_policies.review import review_request


def _assets(client, site):
    return {a.name: a for a in client.datasets[site.spec.dataset_name].assets}


def _syft_function(client, assets, fn, limit=3, output_policy=None):
    """``fn`` bound to the asset each parameter names (``weights`` is the researcher's own dict)."""
    params = list(inspect.signature(fn).parameters)
    if "weights" in params:
        policy = sy.MixedInputPolicy(client=client, cohort=assets["sepsis_cohort"], weights=dict)
    else:
        policy = sy.ExactMatch(**{p: assets["sepsis_cohort" if p == "cohort" else p] for p in params})
    with quiet():
        return sy.syft_function(input_policy=policy, output_policy=output_policy or ReleasePolicy(limit=limit))(fn)


def _inputs(fn, assets):
    out = {}
    for p in inspect.signature(fn).parameters:
        out[p] = {"head.bias": np.zeros(4, dtype="float32")} if p == "weights" else \
            assets["sepsis_cohort" if p == "cohort" else p]
    return out


def test_every_approved_attempt_that_returns_data_is_stopped_at_execution(site):
    ds = site.researcher()
    assets = _assets(ds, site)
    names = RETURNS_DATA + SUPPRESSED
    for name in names:
        submit_request(ds, _syft_function(ds, assets, ATTEMPTS[name]))
    officer = site.officer()
    for req in list_requests(officer, status="pending"):
        if req.function.startswith("x_"):
            assert review_code(req.code).risk == "high"
            approve_anyway(site, req.id)  # two officers err; the release policy still holds
    leaked = []
    for name in RETURNS_DATA:
        try:
            out = fetch_result(ds, f"x_{name}", **_inputs(ATTEMPTS[name], assets))
            leaked.append(f"{name}: {type(out).__name__}")
        except RuntimeError as exc:
            assert "release policy" in str(exc), f"{name}: {exc}"
    assert leaked == [], f"released row-level data: {leaked}"
    try:  # a (birth date, ZIP) histogram: too many cells to leave at all, or only its big cells do
        cells = fetch_result(ds, "x_tiny_cells", patients=assets["patients"])
        assert all(count >= 10 for count in cells.values())
    except RuntimeError as exc:
        assert "release policy" in str(exc)


def test_review_flags_a_request_without_the_sites_release_policy(site):
    ds = site.researcher()
    assets = _assets(ds, site)

    def no_release(cohort):
        return {"mean_age": float(cohort["age"].mean())}

    def weak_release(cohort):
        return {"mean_age": float(cohort["age"].mean())}

    submit_request(ds, _syft_function(ds, assets, no_release, output_policy=OutputPolicyExecuteOnce()))
    submit_request(ds, _syft_function(ds, assets, weak_release, output_policy=ReleasePolicy(min_cell=2)))
    officer = site.officer()
    pending = {r.function: r for r in list_requests(officer, status="pending")}
    plain = review_request(officer, pending["no_release"].id)
    weak = review_request(officer, pending["weak_release"].id)
    assert plain.risk == "high" and any(f.rule == "R013" and "OutputPolicyExecuteOnce" in f.message
                                        for f in plain.findings)
    assert weak.risk == "high" and any(f.rule == "R013" and "min_cell 2" in f.message for f in weak.findings)


def test_an_expired_approval_stops_any_code_not_only_vetted_jobs(site):
    ds = site.researcher()
    assets = _assets(ds, site)

    def mean_age_expiring(cohort):
        return {"mean_age": round(float(cohort["age"].mean()), 1)}

    submit_request(ds, _syft_function(ds, assets, mean_age_expiring))
    officer = site.officer()
    (req,) = [r for r in list_requests(officer, status="pending") if r.function == "mean_age_expiring"]
    store = site.governance()
    for approver in (officer, site.admin()):  # custom code: two people sign
        approve_request(approver, req.id, governance=store, purpose="age profile", irb="IRB-T-1",
                        expires=(dt.date.today() + dt.timedelta(days=1)).isoformat())
    assert fetch_result(ds, "mean_age_expiring", cohort=assets["sepsis_cohort"])["mean_age"] > 0
    record = store.get(req.id)
    record.expires = (dt.date.today() - dt.timedelta(days=1)).isoformat()  # time passes
    store.put(record)
    with pytest.raises(RuntimeError, match="expired on"):
        fetch_result(ds, "mean_age_expiring", cohort=assets["sepsis_cohort"])


def test_release_policy_checks_without_syft():
    import numpy as np
    import pandas as pd

    policy = ReleasePolicy(limit=5, max_rows=256)
    assert policy.apply_to_output(None, {"w": np.zeros((128, 17)), "n": 12})["n"] == 12
    for leak in (pd.DataFrame({"a": [1]}), list(range(300)), {"x": np.zeros(1000)},
                 {"id": "123-45-6789"}, ["0b9a2d1e-3c4f-4a5b-9c8d-7e6f5a4b3c2d"]):
        with pytest.raises(Exception, match="release policy"):
            policy.apply_to_output(None, leak)


def test_researcher_reads_the_budget_left_without_any_approval(site):
    ds = site.researcher()
    ledger = site.ledger()
    (row,) = [r for r in remaining_budget(ds) if r["dataset"] == site.spec.dataset_name]
    assert row["budget"] == ledger.budget(site.spec.dataset_name)
    assert row["remaining"] == pytest.approx(ledger.remaining(site.spec.dataset_name), abs=1e-6)
    assert row["spent"] == pytest.approx(ledger.spent(site.spec.dataset_name), abs=1e-6)


def test_parallel_executions_through_syft_never_spend_more_than_the_budget(site):
    """8 researcher sessions fire an approved DP query at once; this researcher's cap covers 5."""
    ds = site.researcher()
    cohort = _assets(ds, site)["sepsis_cohort"]
    dataset, email = site.spec.dataset_name, site.spec.researchers[0].email
    plan = {"study": "parallel", "dataset": dataset, "epsilon": 1.0}
    ledger = site.ledger()
    mine = sum(d["epsilon"] for d in ledger.history(dataset) if d["researcher"] == email)
    ledger.set_budget(dataset, ledger.spent(dataset) + 100.0)  # the site has plenty...
    ledger.set_budget(dataset, mine + 5.0, researcher=email)  # ...but this researcher may spend 5 more

    def noisy_prevalence(cohort, plan):
        from datasites.jobs.analytics import dp_prevalence
        return dp_prevalence(cohort, plan)

    with quiet():
        fn = sy.syft_function(input_policy=sy.MixedInputPolicy(client=ds, cohort=cohort, plan=sy.Constant(val=plan)),
                              output_policy=ReleasePolicy(limit=8))(noisy_prevalence)
    submit_request(ds, fn)
    officer = site.officer()
    (req,) = [r for r in list_requests(officer, status="pending") if r.function == "noisy_prevalence"]
    report = review_request(officer, req.id)
    assert report.risk == "low" and report.epsilon_cost == pytest.approx(8.0)  # 1.0 x 8 allowed runs
    with pytest.raises(ReviewError, match="privacy budget is left"):
        approve_request(officer, req.id, ledger=site.ledger())  # 8 runs do not fit a budget of 5
    approve_request(officer, req.id)  # approved anyway: the ledger still holds at execution
    sessions = [site.researcher() for _ in range(8)]
    barrier, outcomes = threading.Barrier(8), [None] * 8

    def fire(i):
        barrier.wait()
        try:
            outcomes[i] = fetch_result(sessions[i], "noisy_prevalence", cohort=cohort)
        except RuntimeError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ran = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(ran) == 5 and len(refused) == 3, outcomes
    assert all("privacy budget is left" in str(e) for e in refused), refused  # the reason, not a generic error
    assert ledger.remaining(dataset, researcher=email) == pytest.approx(0.0, abs=1e-9)  # debited in their name
    assert sum(d["epsilon"] for d in ledger.history(dataset) if d["researcher"] == email) == pytest.approx(mine + 5)
    assert all(o["patients"] is None or o["patients"] > 0 for o in ran)


def test_a_ciphertext_passes_only_in_its_canonical_form():
    """Bytes over 512 pass only as a small CKKS vector, byte for byte as the library writes it:
    nothing can ride along in fields the parser skips or after the end."""
    import tenseal as ts

    from he import KeyCustodian
    from syft_policies.release_rules import find_row_level_data

    public = ts.context_from(KeyCustodian("release-test", min_sites=2).public_context())
    blob = ts.ckks_vector(public, [1.0, 2.0, 3.0]).serialize()
    assert find_row_level_data({"ciphertext": blob}) is None
    assert "characters of text or bytes" in find_row_level_data({"ciphertext": blob + b"row: Ben354 999-64-9237"})
    assert "characters of text or bytes" in find_row_level_data({"ciphertext": blob[:-40] + b"\x00" * 40})

"""Attack (red team round 3): run the site's own `train` template on a table the researcher
uploaded. It reads no asset, so nothing is paid; if it still advanced the study's accountant
at the site, the real round on the private cohort would be charged only the last increment."""

from __future__ import annotations

import pytest
import syft as sy

from datasites.jobs.models import build_model, get_weights
from federation import StudyPlan, fetch_result, submit_request
from privacy.accounting import epsilon_spent, schedule
from scratchnet import approve_anyway
from syft_policies import list_requests
from syft_policies.quiet import quiet
from syft_policies.release import ReleasePolicy
from syft_policies.templates import medsyft_train


def _request(attacker, cohort, name, job, limit):
    with quiet():
        fn = sy.syft_function(input_policy=sy.MixedInputPolicy(client=attacker.ds, cohort=cohort,
                                                               plan=sy.Constant(val=job), weights=dict),
                              output_policy=ReleasePolicy(limit=limit), name=name)(medsyft_train)
    return submit_request(attacker.ds, fn)


def test_a_template_on_an_upload_is_custom_code_and_moves_no_accountant(attacker):
    site, ds = attacker.site, attacker.ds
    with quiet():
        mock = attacker.cohort.mock
        mine = sy.ActionObject.from_obj(getattr(mock, "syft_action_data", mock)).send(ds)
    plan = StudyPlan(study="upload-bound", sites=[site.spec.name], model="mlp", rounds=4, local_epochs=1,
                     sample_rate=0.05, noise_multiplier=0.8, epsilon=10.0, evaluate_every=0, final_eval_epsilon=0.25)
    job = plan.job_plan()
    fake = _request(attacker, mine, "upload_bound_train", job, limit=3)
    real = _request(attacker, attacker.cohort, "asset_bound_train", job, limit=1)
    pending = {rid: r for r in list_requests(site.officer()) for rid in (fake, real)
               if r.id.startswith(rid.replace("-", "")[:16])}
    assert pending[fake].inputs["cohort"] == "upload" and pending[real].inputs["cohort"] == "asset"
    from syft_policies import SitePolicy, review_code

    report = review_code(pending[fake].code, plan=pending[fake].plan, inputs=pending[fake].inputs,
                         site_policy=SitePolicy.for_site(site.spec))
    assert report.risk != "low" and any("bound differently" in f.message for f in report.findings)
    approve_anyway(site, fake)
    approve_anyway(site, real)
    weights = get_weights(build_model("mlp", seed=plan.seed))
    for _ in range(3):  # runs as custom code: the mediator keeps no study state for it
        with pytest.raises(RuntimeError, match="failed|refused"):
            fetch_result(ds, "upload_bound_train", cohort=mine, weights=weights)
    spent_before = site.ledger().spent(site.spec.dataset_name)
    reply = fetch_result(ds, "asset_bound_train", cohort=attacker.cohort, weights=weights)
    per_epoch, rate = schedule(job["sample_rate"])
    one_round = epsilon_spent(((job["noise_multiplier"], rate, per_epoch),), job["delta"])
    assert reply["round"] == 1 and reply["epsilon"] == pytest.approx(one_round, rel=1e-6)
    assert site.ledger().spent(site.spec.dataset_name) - spent_before == pytest.approx(one_round, rel=1e-6)
    executed = [e for e in site.audit().entries() if e["event"] == "executed" and e.get("request") == fake]
    assert executed and all(e["template"] is None and e["epsilon_debited"] == 0 for e in executed)

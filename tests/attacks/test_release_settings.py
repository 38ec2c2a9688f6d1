"""Attack (red team round 5): a request's ReleasePolicy settings as the weapon.

``limit=0.5`` priced a ``dp_query`` at epsilon x int(0.5) = 0 (LOW, and the busy officer
approved it) while the site still ran it once and debited the plan's 10.5, over the site's
maximum of 10. ``limit="many"`` made the review raise, which took every officer's queue
down with it. Now one function reads the settings for the review, the budget check and the
execution limit; anything but a whole number is HIGH risk and never runs; no single debit
may exceed the site's maximum epsilon; and one unreadable request cannot hide the others.
"""

from __future__ import annotations

import pytest
import syft as sy

from compliance_console import operations
from federation import submit_request
from scratchnet import approve_anyway
from syft_policies import SitePolicy, list_requests
from syft_policies.quiet import quiet
from syft_policies.release import ReleasePolicy
from syft_policies.review import report_for
from syft_policies.templates import medsyft_dp_query


def _plan(epsilons):
    return {"study": "rt5", "queries": [
        {"name": "outcome", "kind": "count", "by": {"column": "label", "levels": [0, 1]}, "epsilon": epsilons[0]},
        {"name": "age", "kind": "mean", "column": "age", "bounds": [18, 100], "epsilon": epsilons[1]}]}


def _dp_query(attacker, name, plan, limit):
    with quiet():
        fn = sy.syft_function(input_policy=sy.MixedInputPolicy(client=attacker.ds, cohort=attacker.cohort,
                                                               plan=sy.Constant(val=plan)),
                              output_policy=ReleasePolicy(limit=limit), name=name)(medsyft_dp_query)
    return submit_request(attacker.ds, fn)


def _fetch(attacker, name):
    from federation import fetch_result

    try:
        return "released", fetch_result(attacker.ds, name, cohort=attacker.cohort)
    except RuntimeError as exc:
        return "refused", str(exc)


@pytest.mark.parametrize("limit", [0.5, "many"])
def test_a_limit_that_is_not_a_whole_number_is_high_risk_and_never_runs(attacker, limit):
    site = attacker.site
    name = f"rt5_limit_{str(limit).replace('.', '_').lower()}"
    rid = _dp_query(attacker, name, _plan([5.0, 5.5]), limit)
    officer, policy = site.officer(), SitePolicy.for_site(site.spec)
    (info,) = [r for r in list_requests(officer) if r.id == rid.replace("-", "")]
    report = report_for(info, site_policy=policy, budget_remaining=20.0)
    assert report.risk == "high" and any(f.rule == "R013" for f in report.findings)
    rows = operations.queue(officer, site, status=None)  # the queue still lists everything
    assert [r["risk"] for r in rows if r["id"] == info.id] == ["high"]

    approve_anyway(site, rid)  # careless officers accept the HIGH risk
    spent = site.ledger().spent(site.spec.dataset_name)
    outcome, message = _fetch(attacker, name)
    assert outcome == "refused"
    assert site.ledger().spent(site.spec.dataset_name) == spent  # nothing was paid, nothing ran


@pytest.mark.parametrize("settings", [{"limit": 0.5}, {"limit": "many"}, {"limit": True}, {"limit": 0},
                                      {"limit": 10**9}, {"max_rows": 2.5}, {"min_cell": -1}])
def test_the_site_reads_release_settings_as_whole_numbers_only(settings):
    from syft_policies.release_rules import release_settings

    with pytest.raises(ValueError, match="whole number"):
        release_settings(settings)
    assert release_settings({"limit": 3, "id": "ignored"}) == {"limit": 3, "max_rows": 256, "min_cell": 10}


def test_no_single_debit_exceeds_the_sites_maximum_epsilon(attacker):
    site = attacker.site
    rid = _dp_query(attacker, "rt5_over_max", _plan([5.0, 5.5]), 1)  # 10.5 in one call; the site allows 10
    (info,) = [r for r in list_requests(site.officer()) if r.id == rid.replace("-", "")]
    report = report_for(info, site_policy=SitePolicy.for_site(site.spec))
    assert report.risk == "high" and report.epsilon_cost == pytest.approx(10.5)
    approve_anyway(site, rid)
    spent = site.ledger().spent(site.spec.dataset_name)
    outcome, message = _fetch(attacker, "rt5_over_max")
    assert outcome == "refused"
    assert site.ledger().spent(site.spec.dataset_name) == spent

"""The sovereignty policy refuses plans that move a single site's contribution across a border."""

from __future__ import annotations

import pytest

from federation.topology import GLOBAL, AggregationPlan, SiteInfo, SovereigntyPolicy, SovereigntyViolation, \
    regional_plan

SITES = [SiteInfo("amsterdam-umc", "EU", "GDPR"), SiteInfo("lyon-chu", "EU", "GDPR"),
         SiteInfo("boston-general", "US", "HIPAA"), SiteInfo("chicago-mercy", "US", "HIPAA")]


def test_the_regional_plan_is_allowed():
    plan = regional_plan(SITES)
    SovereigntyPolicy().check(plan, SITES)
    assert plan.members("eu-aggregator") == ["amsterdam-umc", "lyon-chu"]
    assert plan.upstream == {"eu-aggregator": GLOBAL, "us-aggregator": GLOBAL}


def test_an_eu_site_sending_to_the_global_or_us_aggregator_is_refused():
    plan = regional_plan(SITES)
    straight = AggregationPlan({**plan.routes, "lyon-chu": GLOBAL}, plan.aggregators, plan.upstream)
    with pytest.raises(SovereigntyViolation, match=r"lyon-chu \(EU, GDPR\) would send its own contribution"):
        SovereigntyPolicy().check(straight, SITES)
    abroad = AggregationPlan({**plan.routes, "amsterdam-umc": "us-aggregator"}, plan.aggregators, plan.upstream)
    problems = SovereigntyPolicy().violations(abroad, SITES)
    assert any("amsterdam-umc" in p and "in US" in p for p in problems)
    assert any("eu-aggregator would send a sum over 1 site" in p for p in problems)  # lyon alone crosses


def test_a_region_with_one_hospital_cannot_send_its_aggregate_abroad():
    with pytest.raises(SovereigntyViolation, match="us-aggregator would send a sum over 1 site"):
        SovereigntyPolicy().check(regional_plan(SITES[:3]), SITES[:3])

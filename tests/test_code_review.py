"""Automatic review: exfiltration attempts are high risk, aggregates and vetted jobs are not."""

from __future__ import annotations

import inspect
import textwrap

import pytest

from federation import StudyPlan
from federation.study import medsyft_evaluate, medsyft_train
from syft_policies import SitePolicy, review_code

from scratchnet.exfiltration import ATTEMPTS

BENIGN = {
    "vetted summary": ("def f(patients, encounters, conditions):\n    from datasites.jobs.summary import cohort_summary\n"
                       "    return cohort_summary(patients, encounters, conditions, min_cell=10)\n"),
    "plain aggregate": ("def f(patients):\n    n = len(patients)\n"
                        "    share = float((patients['GENDER'] == 'F').mean())\n"
                        "    return {'n': int(n), 'female_share': round(share, 2)}\n"),
    "mean age": "def f(cohort):\n    return {'mean_age': float(cohort['age'].mean())}\n",
}


@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_exfiltration_attempts_are_high_risk(name):
    report = review_code(inspect.getsource(ATTEMPTS[name]))
    assert report.risk == "high", f"{name}: {report}"
    assert all(f.line >= 1 for f in report.findings)


def test_there_are_at_least_fifteen_attempts():
    assert len(ATTEMPTS) >= 15


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_aggregates_are_not_high_risk(name):
    assert review_code(BENIGN[name]).risk != "high", str(review_code(BENIGN[name]))


def test_only_a_vetted_call_is_low_risk():
    assert review_code(BENIGN["vetted summary"]).risk == "low"
    submitted = "@sy.syft_function_single_use(patients=a)\n" + BENIGN["vetted summary"]  # as Syft stores it
    assert review_code(submitted).risk == "low"
    assert review_code("@evil\n" + BENIGN["vetted summary"]).risk == "medium"
    assert review_code(BENIGN["plain aggregate"]).risk == "medium"  # fine, but read it


def test_study_requests_are_low_risk_with_their_epsilon_cost():
    plan = StudyPlan(study="review", sites=["a"], rounds=8, epsilon=6.0)
    source = textwrap.dedent(inspect.getsource(medsyft_train))
    report = review_code(source, plan=plan.job_plan(), budget_remaining=10.0)
    assert report.risk == "low" and report.findings == []
    assert report.epsilon_cost == pytest.approx(plan.planned_epsilon(), rel=1e-6)
    assert report.budget_after == pytest.approx(10.0 - report.epsilon_cost)
    assert review_code(textwrap.dedent(inspect.getsource(medsyft_evaluate))).risk == "low"
    text, page = str(report), report._repr_html_()
    assert "LOW risk" in text and "epsilon cost" in text and "<table>" in page


def test_out_of_policy_dp_parameters_and_budget_are_high_risk():
    plan = StudyPlan(study="review", sites=["a"], rounds=8, epsilon=6.0)
    source = textwrap.dedent(inspect.getsource(medsyft_train))
    strict = review_code(source, plan=plan.job_plan(), site_policy=SitePolicy(max_epsilon=3.0))
    assert strict.risk == "high" and any("exceeds the site's maximum" in f.message for f in strict.findings)
    broke = review_code(source, plan=plan.job_plan(), budget_remaining=2.0)
    assert broke.risk == "high" and any(f.rule == "R012" for f in broke.findings)

"""Automatic review: exfiltration attempts are high risk, aggregates and vetted jobs are not."""

from __future__ import annotations

import inspect
import textwrap

import pytest

from federation import StudyPlan
from syft_policies.templates import medsyft_evaluate, medsyft_train
from syft_policies import SitePolicy, review_code

from scratchnet.exfiltration import ATTEMPTS

BENIGN = {
    "vetted summary": ("def f(patients, encounters, conditions):\n    from datasites.jobs.summary import cohort_summary\n"
                       "    return cohort_summary(patients, encounters, conditions, epsilon=1.0)\n"),
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
    assert strict.risk == "high" and any(f.rule == "R011" and "epsilon" in f.message for f in strict.findings)
    broke = review_code(source, plan=plan.job_plan(), budget_remaining=2.0)
    assert broke.risk == "high" and any(f.rule == "R012" for f in broke.findings)


@pytest.mark.parametrize("change, words", [
    ({"lr": 50.0}, "lr 50.0 outside"), ({"max_grad_norm": 1e-6}, "max_grad_norm"),
    ({"max_grad_norm": float("nan")}, "max_grad_norm must be a finite number"),
    ({"sample_rate": 0.9}, "sample_rate"), ({"local_epochs": 40}, "local_epochs"),
    ({"noise_multiplier": 0.1}, "noise_multiplier"), ({"model": "resnet"}, "model 'resnet'"),
    ({"eval_epsilons": [0.5] * 200}, "200 evaluations"), ({"eval_epsilons": [9.0]}, "evaluation's epsilon"),
    ({"eval_epsilons": [float("inf")]}, "finite, positive"), ({"eval_epsilons": [3.0, 3.0]}, "spends epsilon"),
])
def test_every_plan_parameter_is_bounded_by_the_site(change, words):
    """A researcher's plan is checked field by field; each out-of-range value is high risk,
    for the training and the evaluation request alike."""
    plan = {**StudyPlan(study="review", sites=["a"], rounds=8, epsilon=6.0).job_plan(), **change}
    for template in (medsyft_train, medsyft_evaluate):
        report = review_code(textwrap.dedent(inspect.getsource(template)), plan=plan)
        assert report.risk == "high", (template.__name__, change)
        assert any(f.rule == "R011" and words in f.message for f in report.findings), report.findings


def test_evaluation_request_costs_its_planned_evaluations():
    plan = StudyPlan(study="review", sites=["a"], rounds=8, epsilon=6.0, evaluate_every=2,
                     eval_epsilon=0.25, final_eval_epsilon=2.0)
    report = review_code(textwrap.dedent(inspect.getsource(medsyft_evaluate)), plan=plan.job_plan())
    assert report.risk == "low" and report.epsilon_cost == pytest.approx(3 * 0.25 + 2.0)
    assert plan.total_epsilon == pytest.approx(plan.planned_epsilon() + 2.75)

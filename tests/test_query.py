"""The DP query job (OpenDP): the everyday analyses across three real datasites, rated low,
paid exactly, refused with one-line errors when the plan is bad, and noised as stated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from datasites.jobs.query import dp_query, run_queries
from datasites.jobs.site import LocalHospital, use_hospital
from federation import DPQuery
from privacy.queries import QueryPlanError, check_query_plan
from syft_policies import approve_request, list_requests
from syft_policies.review import review_request

EVERYDAY = {"study": "everyday", "queries": [
    {"name": "patients", "kind": "count", "by": {"column": "male", "levels": [0, 1]}, "epsilon": 0.2},
    {"name": "age", "kind": "mean", "column": "age", "bounds": [18, 100], "epsilon": 0.4},
    {"name": "age_bands", "kind": "histogram", "column": "age", "edges": [40, 60, 80], "epsilon": 0.2},
    {"name": "median_age", "kind": "quantile", "column": "age", "q": 0.5, "candidates": list(range(20, 101, 5)),
     "epsilon": 0.2},
    {"name": "sepsis_by_sex", "kind": "contingency", "columns": ["male", "label"], "levels": [[0, 1], [0, 1]],
     "epsilon": 0.2},
    {"name": "risk", "kind": "linear_regression", "x": ["age", "diabetes"], "y": "label",
     "bounds": {"age": [18, 100], "diabetes": [0, 1], "label": [0, 1]}, "epsilon": 0.8},
]}


def _frame(site):
    from datasites.cohort_asset import cohort_frame
    from datasites.data import private_dir
    from synthetic_data import load_synthea

    return cohort_frame(load_synthea(private_dir(site.site_dir.parent, site.spec.name)), site_uid="x")


def test_everyday_analyses_across_three_sites_are_low_risk_and_paid_exactly(network):
    _, sites = network
    query = DPQuery(EVERYDAY, {n: s.researcher() for n, s in sites.items()})
    assert query.epsilon == pytest.approx(2.0)
    spent = {n: s.ledger().spent(s.spec.dataset_name) for n, s in sites.items()}
    query.submit()
    for site in sites.values():
        officer = site.officer()
        (request,) = [r for r in list_requests(officer, status="pending") if r.function == query.name]
        report = review_request(officer, request.id)
        assert report.risk == "low" and report.template == "dp_query" and report.epsilon_cost == pytest.approx(2.0)
        approve_request(officer, request.id, ledger=site.ledger())
    result = query.run()
    frames = {n: _frame(s) for n, s in sites.items()}
    for name, site in sites.items():  # each site paid the plan's epsilon, once, for the dataset read
        assert site.ledger().spent(site.spec.dataset_name) == pytest.approx(spent[name] + 2.0)
        assert result.sites[name]["receipt"]["epsilon"] == pytest.approx(2.0)
    pooled = result.pooled
    n = sum(len(f) for f in frames.values())
    assert abs(sum(pooled["patients"]["count"]) - n) < 3 * 2 * math.sqrt(2) / 0.2 * math.sqrt(3)
    # tolerances: 4 standard deviations of the pooled noise (3 sites), from each query's epsilon
    true_mean = np.mean(np.concatenate([f["age"].to_numpy() for f in frames.values()]))
    sum_sd = math.sqrt(3) * math.sqrt(2) * 100 / 0.2  # Laplace, sensitivity 100 at epsilon 0.4 / 2
    assert pooled["age"]["mean"][0] == pytest.approx(true_mean, abs=4 * sum_sd / n + 2)
    assert sum(pooled["age_bands"]["counts"][0]) == pytest.approx(n, abs=4 * math.sqrt(12) * math.sqrt(2) / 0.2)
    assert 35 <= pooled["median_age"]["quantile"][0] <= 75
    coefficients = pooled["risk"]["coefficients"][0]
    assert set(coefficients) == {"intercept", "age", "diabetes"} and all(map(math.isfinite, coefficients.values()))


@pytest.mark.parametrize("change, words", [
    ({"epsilon": float("nan")}, "epsilon must be a finite number"),
    ({"epsilon": float("inf")}, "epsilon must be a finite number"),
    ({"epsilon": 0}, "epsilon must be in"),
    ({"column": "ssn"}, "unknown columns ['ssn']"),
    ({"bounds": None}, "bounds must be [low, high]"),
    ({"bounds": [100, 18]}, "low must be below high"),
    ({"kind": "raw_rows"}, "kind must be one of"),
])
def test_bad_plans_are_refused_in_one_line_before_anything_is_paid(change, words):
    plan = {"study": "bad", "queries": [{**EVERYDAY["queries"][1], **change}]}
    hospital = LocalHospital(dry_run=False)
    with use_hospital(hospital), pytest.raises(QueryPlanError) as caught:
        dp_query(_FRAME(), plan)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert hospital.debits == []


def test_a_plan_that_would_release_too_many_numbers_is_refused():
    plan = {"study": "wide", "queries": [{"name": "wide", "kind": "histogram", "column": "age", "epsilon": 0.1,
                                          "edges": list(range(1, 128)), "by": {"column": "male", "levels": [0, 1, 2]}}]}
    with pytest.raises(QueryPlanError, match="at most 256"):
        check_query_plan(plan)


def _FRAME():
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame({"age": rng.uniform(18, 95, 500).round(), "male": rng.integers(0, 2, 500),
                         "label": rng.integers(0, 2, 500), "diabetes": rng.integers(0, 2, 500)})


def _discrete_laplace_sd(scale: float) -> float:
    q = math.exp(-1 / scale)
    return math.sqrt(2 * q) / (1 - q)


def test_the_noise_matches_the_stated_epsilon():
    """Honest accounting, measured: over 2,000 calls the spread of each answer's noise is what
    its epsilon and sensitivity imply (within sampling error, about 3%)."""
    frame = _FRAME()
    plan = {"study": "noise", "queries": [
        {"name": "n", "kind": "count", "epsilon": 0.5},
        {"name": "age_sum", "kind": "sum", "column": "age", "bounds": [0, 100], "epsilon": 1.0}]}
    counts, sums = [], []
    for _ in range(2000):
        answers = run_queries(frame, plan)
        counts.append(answers["n"]["count"][0] - len(frame))
        sums.append(answers["age_sum"]["sum"][0] - frame["age"].clip(0, 100).sum())
    assert np.std(counts) == pytest.approx(_discrete_laplace_sd(1 / 0.5), rel=0.08)
    assert np.std(sums) == pytest.approx(math.sqrt(2) * 100 / 1.0, rel=0.08)
    assert abs(np.mean(sums)) < 4 * math.sqrt(2) * 100 / math.sqrt(2000)

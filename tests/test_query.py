"""The DP query job (OpenDP): every kind through three real datasites, rated low, paid exactly
once; bad plans refused in one line before anything is paid; and the noise measured against
what each query's epsilon and sensitivity imply (honest accounting)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from datasites.jobs.query import dp_query, run_queries
from datasites.jobs.site import LocalHospital, Refused, use_hospital
from federation import DPQuery
from privacy.queries import QueryPlanError, check_query_plan, query_epsilon, query_sensitivity
from syft_policies import approve_request, list_requests
from syft_policies.code_review import review_code
from syft_policies.review import review_request
from syft_policies.templates import TEMPLATES

EVERYDAY = {"study": "everyday", "queries": [
    {"name": "patients", "kind": "count", "by": {"column": "male", "levels": [0, 1]}, "epsilon": 0.2},
    {"name": "by_split", "kind": "count", "by": {"split": ["train", "test"]}, "epsilon": 0.1},
    {"name": "age_sum", "kind": "sum", "column": "age", "bounds": [0, 100], "epsilon": 0.1},
    {"name": "age", "kind": "mean", "column": "age", "bounds": [18, 100], "epsilon": 0.4},
    {"name": "age_bands", "kind": "histogram", "column": "age", "edges": [40, 60, 80], "epsilon": 0.2},
    {"name": "median_age", "kind": "quantile", "column": "age", "q": 0.5, "candidates": list(range(20, 101, 5)),
     "epsilon": 0.2},
    {"name": "sepsis_by_sex", "kind": "contingency", "columns": ["male", "label"], "levels": [[0, 1], [0, 1]],
     "epsilon": 0.2},
    {"name": "risk", "kind": "linear_regression", "x": ["age", "diabetes"], "y": "label",
     "bounds": {"age": [18, 100], "diabetes": [0, 1], "label": [0, 1]}, "epsilon": 0.6},
]}
TOTAL = 2.0


def _frame(site):
    from datasites.cohort_asset import cohort_frame
    from datasites.data import private_dir
    from synthetic_data import load_synthea

    return cohort_frame(load_synthea(private_dir(site.site_dir.parent, site.spec.name)), site_uid="x")


def _discrete_laplace_sd(scale: float) -> float:
    q = math.exp(-1 / scale)
    return math.sqrt(2 * q) / (1 - q)


def test_every_kind_across_three_sites_is_low_risk_and_paid_exactly_once(network):
    _, sites = network
    query = DPQuery(EVERYDAY, {n: s.researcher() for n, s in sites.items()})
    assert query.epsilon == pytest.approx(TOTAL)
    spent = {n: s.ledger().spent(s.spec.dataset_name) for n, s in sites.items()}
    query.submit()
    for site in sites.values():
        officer = site.officer()
        (request,) = [r for r in list_requests(officer, status="pending") if r.function == query.name]
        report = review_request(officer, request.id)
        assert report.risk == "low" and report.template == "dp_query"
        assert report.epsilon_cost == pytest.approx(TOTAL)  # the plan's total, times the one allowed call
        approve_request(officer, request.id, ledger=site.ledger())
    result = query.run()
    frames = {n: _frame(s) for n, s in sites.items()}
    for name, site in sites.items():  # each site paid the plan's epsilon, once, on the dataset read
        assert site.ledger().spent(site.spec.dataset_name) == pytest.approx(spent[name] + TOTAL)
        reply = result.sites[name]
        assert reply["receipt"]["epsilon"] == pytest.approx(TOTAL) and reply["receipt"]["delta"] == 0
        assert sum(a["receipt"]["epsilon"] for a in reply["answers"].values()) == pytest.approx(TOTAL)
        left = site.ledger().remaining(site.spec.dataset_name, researcher=site.spec.researchers[0].email)
        assert reply["receipt"]["budget_remaining"] == pytest.approx(left)
        audit = [e for e in site.audit().entries() if e["event"] == "executed" and e.get("template") == "dp_query"]
        assert audit and audit[-1]["release"] == "noised template"
    assert result.spent == result.epsilon == {n: pytest.approx(TOTAL) for n in sites}
    assert set(result.receipts()[next(iter(sites))]) == {q["name"] for q in EVERYDAY["queries"]} | {"total"}

    # pooled answers within 5 standard deviations of the noise each query's epsilon implies (3 sites)
    pooled, everyone = result.pooled, pd.concat(frames.values())
    n, sites_sd = len(everyone), math.sqrt(len(sites))
    count_sd = sites_sd * _discrete_laplace_sd(1 / 0.2)
    assert sum(pooled["patients"]["count"]) == pytest.approx(n, abs=5 * math.sqrt(2) * count_sd)
    assert pooled["by_split"]["count"][0] == pytest.approx((everyone["split"] == "train").sum(),
                                                           abs=5 * sites_sd * _discrete_laplace_sd(10))
    assert pooled["age_sum"]["sum"][0] == pytest.approx(everyone["age"].clip(0, 100).sum(),
                                                        abs=5 * sites_sd * math.sqrt(2) * 100 / 0.1)
    mean_sd = sites_sd * math.sqrt(2) * 100 / 0.2 / n  # the sum half's noise over n
    assert pooled["age"]["mean"][0] == pytest.approx(everyone["age"].clip(18, 100).mean(), abs=5 * mean_sd + 0.5)
    assert sum(pooled["age_bands"]["counts"][0]) == pytest.approx(n, abs=5 * 2 * sites_sd * _discrete_laplace_sd(5))
    table = np.array(pooled["sepsis_by_sex"]["tables"][0])
    assert table.shape == (2, 2) and table.sum() == pytest.approx(n, abs=5 * 2 * sites_sd * _discrete_laplace_sd(5))
    assert 40 <= pooled["median_age"]["quantile"][0] <= 80
    assert set(pooled["median_age"]["sites"]) == set(sites)
    coefficients = pooled["risk"]["coefficients"][0]
    assert set(coefficients) == {"intercept", "age", "diabetes"} and all(map(math.isfinite, coefficients.values()))
    for reply in result.sites.values():  # nothing in a reply repeats the plan's declared values
        assert "edges" not in reply["answers"]["age_bands"] and "candidates" not in reply["answers"]["median_age"]


def test_the_review_prices_a_query_plan_and_refuses_a_bad_one():
    source = TEMPLATES["dp_query"].source
    inputs = {"cohort": "asset", "plan": "constant"}
    release = {"policy": "ReleasePolicy", "genuine": True, "settings": {"limit": 3, "max_rows": 256, "min_cell": 10}}
    report = review_code(source, plan=EVERYDAY, data_params={"cohort"}, inputs=inputs, release=release)
    assert report.risk == "low" and report.template == "dp_query" and report.epsilon_cost == pytest.approx(3 * TOTAL)
    bad = {"study": "bad", "queries": [{**EVERYDAY["queries"][0], "epsilon": float("nan")}]}
    report = review_code(source, plan=bad, data_params={"cohort"}, inputs=inputs, release=release)
    assert report.risk == "high" and any(f.rule == "R011" for f in report.findings)
    report = review_code(source, plan=None, data_params={"cohort"}, inputs=inputs, release=release)
    assert report.risk == "high"  # a dp_query request without its plan pinned


def _synthetic(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"site_uid": "x", "split": np.where(rng.random(n) < 0.25, "test", "train"),
                         "label": rng.integers(0, 2, n).astype("int8"),
                         "age": rng.uniform(18, 88, n).round(1).astype("float32"),
                         "male": rng.integers(0, 2, n).astype("float32"),
                         "diabetes": rng.integers(0, 2, n).astype("float32")})


def _bad(**change):
    return {"study": "bad", "queries": [{**EVERYDAY["queries"][3], **change}]}


@pytest.mark.parametrize("plan, words", [
    (_bad(epsilon=float("nan")), "epsilon must be a finite number"),
    (_bad(epsilon=float("inf")), "epsilon must be a finite number"),
    (_bad(epsilon=0), "epsilon must be in"),
    (_bad(epsilon=1e-300), "epsilon must be in"),
    (_bad(epsilon=-1), "epsilon must be in"),
    (_bad(epsilon=True), "epsilon must be a finite number"),
    (_bad(column="ssn"), "unknown columns ['ssn']"),
    (_bad(column="split"), "columns ['split'] are not numeric"),
    (_bad(bounds=None), "bounds must be [low, high]"),
    (_bad(bounds=[18, float("inf")]), "must be a finite number"),
    (_bad(bounds=[100, 18]), "low must be below high"),
    (_bad(bounds=[0, 1e12]), "must lie within"),
    (_bad(kind="raw_rows"), "kind must be one of"),
    (_bad(name="9f8e7d6c5b4a39281706f5e4d3c2b1a0"), "distinct name"),
    (_bad(by={"column": "male", "levels": ["0", "1"]}), "levels of 'male' must be numbers"),
    (_bad(by={"column": "male", "levels": [float("nan")]}), "must be a finite number"),
    ({"study": "bad", "queries": [{"name": "wide", "kind": "histogram", "column": "age", "epsilon": 0.1,
                                   "edges": list(range(1, 128)), "by": {"male": [0, 1, 2]}}]}, "at most 256"),
    ({"study": "bad", "queries": [{**EVERYDAY["queries"][0], "name": f"q{i}"} for i in range(21)]}, "at most 20"),
    ({"study": "../other", "queries": EVERYDAY["queries"]}, "study is"),
])
def test_bad_plans_are_refused_in_one_line_before_anything_is_paid(plan, words):
    hospital = LocalHospital(dry_run=False)
    with use_hospital(hospital), pytest.raises(Refused) as caught:  # the datasite shows a Refused's message
        dp_query(_synthetic(), plan)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert hospital.debits == []


def test_the_largest_plan_fits_the_release_policy():
    """20 queries of the widest shapes stay under the template limits: 256 items a list,
    8,192 characters, 65,536 numbers (``syft_policies.release_rules``)."""
    from syft_policies.release_rules import find_row_level_data

    frame = _synthetic(300)
    columns = {f"h{h:02d}_signal_{k}": np.random.default_rng(k).normal(size=300) for h in range(2) for k in range(6)}
    frame = frame.assign(**columns)
    names = list(columns)
    shapes = {
        "regression": {"kind": "linear_regression", "x": names[:10], "y": names[10],
                       "bounds": {c: [-1e9, 1e9] for c in names[:11]}, "by": {"split": ["train", "test", "x"]}},
        "histogram": {"kind": "histogram", "column": "age", "edges": [float(e) for e in range(127)],
                      "by": {"male": [0, 1]}},
        "mean": {"kind": "mean", "column": "age", "bounds": [0, 100], "by": {"age": [float(a) for a in range(64)]}},
        "contingency": {"kind": "contingency", "columns": ["age", "diabetes"],
                        "levels": [[float(a) for a in range(16)], [float(a) for a in range(16)]]},
        "quantile": {"kind": "quantile", "column": "age", "q": 0.3, "candidates": [float(c) for c in range(200)],
                     "by": {"age": [float(a) for a in range(64)]}},
    }
    for shape in shapes.values():
        plan = {"study": "x" * 80, "queries": [{"name": f"q{i:02d}".ljust(31, "x"), "epsilon": 0.1, **shape}
                                               for i in range(20)]}
        with use_hospital(LocalHospital(dry_run=False)):
            reply = dp_query(frame, plan)
        assert find_row_level_data(reply, custom=False, frames=(frame,)) is None


N_CALLS = 2000


def test_the_noise_matches_the_stated_epsilon():
    """Honest accounting, measured: over 2,000 calls the spread of each answer's noise is what
    its epsilon and sensitivity imply, within sampling error (10% is 4 standard errors)."""
    frame = _synthetic()
    age = frame["age"].to_numpy(float)
    plan = {"study": "noise", "queries": [
        {"name": "n", "kind": "count", "epsilon": 0.5},
        {"name": "age_sum", "kind": "sum", "column": "age", "bounds": [0, 100], "epsilon": 1.0},
        {"name": "age", "kind": "mean", "column": "age", "bounds": [0, 100], "epsilon": 1.0},
        {"name": "bands", "kind": "histogram", "column": "age", "edges": [40, 60], "epsilon": 0.25},
        {"name": "fit", "kind": "linear_regression", "x": ["diabetes"], "y": "label",
         "bounds": {"diabetes": [0, 1], "label": [-1, 1]}, "epsilon": 2.0}]}
    truth = {"n": len(frame), "sum": age.clip(0, 100).sum(),
             "bands": np.bincount(np.searchsorted([40, 60], age, side="right"), minlength=3)}
    z = np.column_stack([np.ones(len(frame)), frame["diabetes"], frame["label"]])
    truth["gram"] = (z.T @ z)[np.triu_indices(3)]
    noise = {k: [] for k in ("n", "sum", "mean_sum", "mean_count", "bands", "gram")}
    for _ in range(N_CALLS):
        a = run_queries(frame, plan)
        noise["n"].append(a["n"]["count"][0] - truth["n"])
        noise["sum"].append(a["age_sum"]["sum"][0] - truth["sum"])
        noise["mean_sum"].append(a["age"]["sum"][0] - truth["sum"])
        noise["mean_count"].append(a["age"]["count"][0] - truth["n"])
        noise["bands"].append(np.array(a["bands"]["counts"][0]) - truth["bands"])
        noise["gram"].append(np.array(a["fit"]["upper_triangle"][0]) - truth["gram"])
    # z = (1, diabetes in [0, 1], label in [-1, 1]): entries with label range over [-1, 1], whose
    # bounded sum OpenDP proves with sensitivity 2 (hi - lo); the others 1
    l1 = 1 + 1 + 2 + 1 + 2 + 1
    assert query_sensitivity(check_query_plan(plan)[4]) == l1
    implied = {"n": _discrete_laplace_sd(1 / 0.5), "sum": math.sqrt(2) * 100 / 1.0,
               "mean_sum": math.sqrt(2) * 100 / 0.5, "mean_count": _discrete_laplace_sd(1 / 0.5),
               "bands": _discrete_laplace_sd(1 / 0.25), "gram": math.sqrt(2) * l1 / 2.0}
    for key, sd in implied.items():
        values = np.asarray(noise[key], float)
        measured = values.std(axis=0)
        assert np.all(np.abs(measured / sd - 1) < 0.10), (key, measured, sd)
        assert np.all(np.abs(values.mean(axis=0)) < 4 * sd / math.sqrt(N_CALLS)), key  # unbiased
    assert query_epsilon(plan) == pytest.approx(4.75)


def test_the_quantile_is_as_private_as_stated():
    """The exponential mechanism's promise, measured: on neighbouring data (one patient added),
    no answer is more than e^epsilon times likelier on one than on the other."""
    epsilon, calls = 1.0, 3000
    base = np.array([30.0, 40.0, 50.0, 60.0, 61.0])
    plan = {"study": "q", "queries": [{"name": "med", "kind": "quantile", "column": "age", "q": 0.5,
                                       "candidates": [35.0, 45.0, 55.0, 65.0], "epsilon": epsilon}]}

    def frequencies(ages):
        frame = pd.DataFrame({"age": ages})
        hits = np.bincount([run_queries(frame, plan)["med"]["index"][0] for _ in range(calls)], minlength=4)
        return hits / calls

    p, q = frequencies(base), frequencies(np.append(base, 70.0))
    for a, b in zip(p, q):
        if min(a, b) * calls >= 100:  # enough hits to estimate the ratio (standard error about 10%)
            assert abs(math.log(a / b)) <= epsilon + 0.25, (p, q)
    assert np.max(np.abs(p - q)) > 0.02  # and it does respond to the data


def test_prevalence_and_summary_run_on_the_engine_and_pay_first(network_home, specs):
    from datasites.cohort_asset import cohort_frame
    from datasites.data import private_dir
    from datasites.jobs.analytics import dp_prevalence
    from datasites.jobs.summary import cohort_summary
    from synthetic_data import load_synthea

    tables = load_synthea(private_dir(network_home, specs[0].name))
    frame = cohort_frame(tables, site_uid="x")
    hospital = LocalHospital(dry_run=False)
    with use_hospital(hospital):
        prevalence = [dp_prevalence(frame, {"study": "p", "dataset": "icu-sepsis", "epsilon": 0.5}) for _ in range(5)]
        summaries = [cohort_summary(tables["patients"], tables["encounters"], tables["conditions"]) for _ in range(5)]
    assert hospital.debits == [(0.5, "p/dp_prevalence")] * 5 + [(1.0, "cohort_summary")] * 5
    assert len({p["cases"] for p in prevalence}) > 1 and len({s["icu_patients"] for s in summaries}) > 1  # noised
    assert all(abs(p["patients"] - len(frame)) < 60 for p in prevalence)
    assert all(s["receipt"]["epsilon"] == 1.0 and "OpenDP" in s["receipt"]["mechanism"] for s in summaries)
    assert all(abs(s["icu_patients"] - len(frame)) < 60 for s in summaries)


def test_a_plan_is_checked_against_the_assets_schema_without_reading_it():
    plan = {"study": "s", "queries": [{"name": "n", "kind": "count", "by": {"split": ["train"]}, "epsilon": 1}]}
    assert check_query_plan(plan, columns={"split": False})[0]["by"] == {"column": "split", "levels": ["train"]}
    with pytest.raises(QueryPlanError, match="must be numbers"):
        check_query_plan(plan, columns={"split": True})

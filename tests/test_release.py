"""The release policy stops row-level outputs at execution, even when a request was approved."""

from __future__ import annotations

import pytest
import syft as sy

from datasites.quiet import quiet
from federation import fetch_result, submit_request
from syft_policies import approve_request, list_requests
from syft_policies.release import ReleasePolicy


def _leaks(patients):
    """Functions an inattentive officer might approve; each returns patient-level data."""
    with quiet():
        @sy.syft_function(input_policy=sy.ExactMatch(patients=patients), output_policy=ReleasePolicy(limit=3))
        def rel_frame(patients):
            return patients

        @sy.syft_function(input_policy=sy.ExactMatch(patients=patients), output_policy=ReleasePolicy(limit=3))
        def rel_column(patients):
            return patients["BIRTHDATE"].astype(str).tolist()

        @sy.syft_function(input_policy=sy.ExactMatch(patients=patients), output_policy=ReleasePolicy(limit=3))
        def rel_one_id(patients):
            return {"who": str(patients["Id"].iloc[0])}

        @sy.syft_function(input_policy=sy.ExactMatch(patients=patients), output_policy=ReleasePolicy(limit=3))
        def rel_weights(patients):
            import numpy as np
            return {"weights": {"head.bias": np.asarray(patients["LAT"], dtype="float32")}}

        @sy.syft_function(input_policy=sy.ExactMatch(patients=patients), output_policy=ReleasePolicy(limit=3))
        def rel_series(patients):
            return patients["HEALTHCARE_EXPENSES"].describe()
    return [rel_frame, rel_column, rel_one_id, rel_weights, rel_series]


def test_approved_leaks_are_blocked_and_aggregates_released(site):
    ds = site.researcher()
    patients = {a.name: a for a in ds.datasets[site.spec.dataset_name].assets}["patients"]
    leaks = _leaks(patients)
    with quiet():
        @sy.syft_function(input_policy=sy.ExactMatch(patients=patients), output_policy=ReleasePolicy(limit=2))
        def rel_counts(patients):
            import random
            return {"n": int(len(patients)), "count": 3, "mean_age_days": 12345, "noise": random.random()}
    for fn in [*leaks, rel_counts]:
        submit_request(ds, fn)
    officer = site.officer()
    for req in list_requests(officer, status="pending"):
        if req.function.startswith("rel_"):
            approve_request(officer, req.id)  # the reviewer errs; the release policy still holds
    for fn in leaks:
        with pytest.raises(RuntimeError, match="release policy"):
            fetch_result(ds, fn.func_name, patients=patients)
    released = fetch_result(ds, "rel_counts", patients=patients)
    assert released["n"] >= 10
    assert released["count"] is None  # a count below the minimum cell size is suppressed
    assert released["mean_age_days"] == 12345  # not a count: left alone
    second = fetch_result(ds, "rel_counts", patients=patients)
    third = fetch_result(ds, "rel_counts", patients=patients)  # limit 2: Syft does not run it again...
    assert third["noise"] == second["noise"] != released["noise"]  # ...it hands back the last output


def test_release_policy_checks_without_syft():
    import numpy as np
    import pandas as pd

    policy = ReleasePolicy(limit=5, max_rows=256)
    assert policy.apply_to_output(None, {"w": np.zeros((128, 17)), "n": 12})["n"] == 12
    for leak in (pd.DataFrame({"a": [1]}), list(range(300)), {"x": np.zeros(1000)},
                 {"id": "123-45-6789"}, ["0b9a2d1e-3c4f-4a5b-9c8d-7e6f5a4b3c2d"]):
        with pytest.raises(Exception, match="release policy"):
            policy.apply_to_output(None, leak)


def test_researcher_sees_the_remaining_budget_through_a_vetted_job(site):
    from syft_policies import review_code

    ds = site.researcher()
    cohort = {a.name: a for a in ds.datasets[site.spec.dataset_name].assets}["sepsis_cohort"]
    with quiet():
        @sy.syft_function(input_policy=sy.ExactMatch(cohort=cohort), output_policy=ReleasePolicy(limit=5))
        def my_budget(cohort):
            from datasites.jobs import budget_status
            return budget_status(cohort, dataset="icu-sepsis")
    submit_request(ds, my_budget)
    officer = site.officer()
    (req,) = [r for r in list_requests(officer, status="pending") if r.function == "my_budget"]
    assert review_code(req.code).risk == "low"
    approve_request(officer, req.id)
    status = fetch_result(ds, "my_budget", cohort=cohort)
    ledger = site.ledger()
    assert status["budget"] == ledger.budget("icu-sepsis") == site.spec.epsilon_budget
    assert status["remaining"] == pytest.approx(ledger.remaining("icu-sepsis"), abs=1e-6)

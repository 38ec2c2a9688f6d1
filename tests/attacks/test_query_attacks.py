"""Attacks through the DP query template (rated low): a researcher who declares categories and
bins that isolate one patient, and calls again to average the noise away."""

from __future__ import annotations

import numpy as np
import pytest

from syft_policies.templates import medsyft_dp_query

DATASET = "icu-sepsis"


def _ages(site) -> np.ndarray:
    from datasites.cohort_asset import cohort_frame
    from datasites.data import private_dir
    from synthetic_data import load_synthea

    frame = cohort_frame(load_synthea(private_dir(site.site_dir.parent, site.spec.name)), site_uid="x")
    return np.sort(frame["age"].to_numpy(dtype=float))


def test_a_one_patient_bin_answers_only_with_noise_and_every_call_is_paid(attacker):
    """The histogram's middle bin holds exactly the oldest patient, and a count grouped by a
    declared level equal to that patient's exact age singles them out too. Each answer is the
    true count plus discrete Laplace noise of scale 1/epsilon; each call is debited; the
    request's limit stops the averaging."""
    site = attacker.site
    ages = _ages(site)
    oldest, second = ages[-1], ages[-2]
    plan = {"study": "one-patient", "queries": [
        {"name": "bin", "kind": "histogram", "column": "age", "edges": [float(second + oldest) / 2, oldest + 1],
         "epsilon": 0.5},
        {"name": "exact", "kind": "count", "by": {"column": "age", "levels": [float(oldest)]}, "epsilon": 0.5}]}
    attacker.submit(medsyft_dp_query, limit=3, plan=plan)
    before = site.ledger().spent(DATASET)
    seen = []
    for k in range(3):
        outcome, reply = attacker.run(medsyft_dp_query)
        assert outcome == "released", reply
        seen.append((reply["answers"]["bin"]["counts"][0][1], reply["answers"]["exact"]["count"][0]))
        assert site.ledger().spent(DATASET) == pytest.approx(before + 1.0 * (k + 1))
    outcome, again = attacker.run(medsyft_dp_query)  # past the limit: nothing new is computed
    if outcome == "released":  # Syft hands back the last output it already released
        assert (again["answers"]["bin"]["counts"][0][1], again["answers"]["exact"]["count"][0]) == seen[-1]
    else:
        assert "allows 3 execution(s)" in again
    assert site.ledger().spent(DATASET) == pytest.approx(before + 3.0)
    assert seen != [(1, 1)] * 3  # exact answers every time were the leak
    audit = [e for e in site.audit().entries() if e["event"] == "executed" and e.get("template") == "dp_query"]
    assert audit and all(e["release"] == "noised template" for e in audit)


def test_an_unbounded_or_data_shaped_plan_is_refused_without_payment(attacker):
    site = attacker.site
    before = site.ledger().spent(DATASET)
    for query in ({"name": "raw", "kind": "sum", "column": "age", "epsilon": 0.5},  # no declared bounds
                  {"name": "many", "kind": "histogram", "column": "age", "epsilon": 0.5,
                   "edges": [float(a) for a in range(1, 200)]},  # one bin per year of age and more
                  {"name": "who", "kind": "count", "by": {"column": "site_uid", "levels": [1.0]}, "epsilon": 0.5}):
        outcome, message = attacker.attack(medsyft_dp_query, limit=1, plan={"study": "bad", "queries": [query]})
        assert outcome == "refused", message
    assert site.ledger().spent(DATASET) == before

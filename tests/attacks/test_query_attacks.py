"""Attacks through the DP query template (rated low), as a researcher who has read the code
would write them: declare a category and bins that isolate one patient, difference two
groups that differ by that patient, call again and again to average the noise away, bind
the template to a table with many rows per patient, and declare patients' exact values so
the release policy's comparison with the data would answer a question."""

from __future__ import annotations

import math

import numpy as np
import pytest
import syft as sy

from datasites.jobs.query import run_queries
from federation import submit_request
from scratchnet import approve_anyway
from syft_policies.quiet import quiet
from syft_policies.release import ReleasePolicy
from syft_policies.templates import medsyft_dp_query

DATASET = "icu-sepsis"
EPSILON = 0.1  # each of the attack's four queries


def _frame(site):
    from datasites.cohort_asset import cohort_frame
    from datasites.data import private_dir
    from synthetic_data import load_synthea

    return cohort_frame(load_synthea(private_dir(site.site_dir.parent, site.spec.name)), site_uid="x")


def _target(frame) -> tuple[float, float, float]:
    """A patient whose age (under 89: not top-coded) no one else has, and the ages around it."""
    ages, counts = np.unique(frame["age"].to_numpy(float), return_counts=True)
    k = next(i for i in range(len(ages) // 2, len(ages) - 1) if counts[i] == 1 and ages[i] < 89)
    return float(ages[k - 1]), float(ages[k]), float(ages[k + 1])


def _attack_plan(below: float, age: float, above: float) -> dict:
    lo, hi = (below + age) / 2, (age + above) / 2
    return {"study": "isolate", "queries": [
        # a declared category that is exactly the target's age: a one-patient cell per label
        {"name": "isolate", "kind": "contingency", "columns": ["age", "label"], "levels": [[age], [0, 1]],
         "epsilon": EPSILON},
        # a histogram whose middle bin holds the target alone
        {"name": "one_bin", "kind": "histogram", "column": "age", "edges": [lo, hi], "by": {"label": [0, 1]},
         "epsilon": EPSILON},
        # differencing: patients at or above lo, and at or above hi; they differ by the target
        {"name": "from_lo", "kind": "histogram", "column": "age", "edges": [lo], "by": {"label": [0, 1]},
         "epsilon": EPSILON},
        {"name": "from_hi", "kind": "histogram", "column": "age", "edges": [hi], "by": {"label": [0, 1]},
         "epsilon": EPSILON}]}


def _discrete_laplace_sd(scale: float) -> float:
    q = math.exp(-1 / scale)
    return math.sqrt(2 * q) / (1 - q)


def _decode(replies) -> tuple[float, float]:
    """The attacker's best linear estimate of the target's label from every reply (weights 1, 1
    and 1/2: the difference carries two noises), and its standard error from the stated noise."""
    estimates, weights = [], []
    for r in replies:
        a = r["answers"] if "answers" in r else r
        estimates += [a["isolate"]["tables"][0][0][1], a["one_bin"]["counts"][1][1],
                      a["from_lo"]["counts"][1][1] - a["from_hi"]["counts"][1][1]]
        weights += [1.0, 1.0, 0.5]
    sd = _discrete_laplace_sd(1 / EPSILON)
    return float(np.average(estimates, weights=weights)), sd / math.sqrt(sum(weights))


def test_isolating_and_differencing_one_patient_is_paid_call_by_call_and_stopped(attacker):
    """Every call is debited its 0.4; the request's limit stops the averaging, and so does the
    researcher's budget on a second request; what was decoded is as noisy as stated."""
    site = attacker.site
    frame = _frame(site)
    below, age, above = _target(frame)
    truth = int(frame.loc[frame["age"].to_numpy(float) == age, "label"].iloc[0])
    plan = _attack_plan(below, age, above)
    attacker.submit(medsyft_dp_query, limit=3, plan=plan)
    ledger, email = site.ledger(), site.spec.researchers[0].email
    before = ledger.spent(DATASET)
    replies = []
    for k in range(3):
        outcome, reply = attacker.run(medsyft_dp_query)
        assert outcome == "released", reply
        assert reply["receipt"]["epsilon"] == pytest.approx(4 * EPSILON)
        assert ledger.spent(DATASET) == pytest.approx(before + 4 * EPSILON * (k + 1))
        replies.append(reply)
    outcome, again = attacker.run(medsyft_dp_query)  # past the limit: nothing new is computed
    if outcome == "released":  # Syft hands back the last output it already released
        assert again["answers"] == replies[-1]["answers"]
    else:
        assert "allows 3 execution(s)" in again
    assert ledger.spent(DATASET) == pytest.approx(before + 12 * EPSILON)

    estimate, error = _decode(replies)
    assert error > 3  # the stated noise: three calls cannot tell a 0 from a 1
    assert abs(estimate - truth) < 6 * error  # and the decoded value is that noisy, not exact

    # a second request to keep averaging: the researcher's own cap stops it, in their name
    already = sum(d["epsilon"] for d in ledger.history(DATASET) if d.get("researcher") == email)
    ledger.set_budget(DATASET, already + 2 * 4 * EPSILON, researcher=email)
    try:
        attacker.submit(medsyft_dp_query, limit=10, plan={**plan, "study": "isolate-again"})
        assert [attacker.run(medsyft_dp_query)[0] for _ in range(2)] == ["released", "released"]
        outcome, message = attacker.run(medsyft_dp_query)
        assert outcome == "refused" and "privacy budget is left" in message
        mine = sum(d["epsilon"] for d in ledger.history(DATASET) if d.get("researcher") == email)
        assert mine == pytest.approx(already + 8 * EPSILON)
    finally:
        ledger.set_budget(DATASET, 1e9, researcher=email)


def test_the_decoded_label_is_no_better_than_the_epsilon_allows(hostile_site):
    """The same attack, 3 calls each, on 800 worlds where the target is septic or not (in-process,
    same job code): the attacker's hit rate stays under the bound epsilon-DP puts on any test,
    e^eps / (1 + e^eps) with eps = 3 x 0.4, and at what the stated noise predicts."""
    frame = _frame(hostile_site)
    below, age, above = _target(frame)
    plan = _attack_plan(below, age, above)
    target = frame["age"].to_numpy(float) == age
    rng = np.random.default_rng(0)  # picks the worlds; the noise is OpenDP's
    trials, hits = 800, 0
    for _ in range(trials):
        label = int(rng.integers(0, 2))
        world = frame.assign(label=np.where(target, label, frame["label"]).astype("int8"))
        estimate, _ = _decode([run_queries(world, plan) for _ in range(3)])
        hits += int((estimate > 0.5) == bool(label))
    rate, epsilon = hits / trials, 3 * 4 * EPSILON
    bound = math.exp(epsilon) / (1 + math.exp(epsilon))
    error = _discrete_laplace_sd(1 / EPSILON) / math.sqrt(3 * 2.5)  # as in _decode, for three calls
    predicted = 0.5 + 0.5 * math.erf(0.5 / (error * math.sqrt(2)))  # normal approximation of the noise
    slack = 4 * math.sqrt(0.25 / trials)
    assert rate <= bound + slack and rate <= predicted + slack, (rate, predicted, bound)


def test_declared_exact_values_are_never_repeated_so_the_release_check_is_no_oracle(attacker):
    """Candidates and levels equal to patients' exact ages: the release policy blocks outputs
    that are mostly exact private values, so a reply that echoed them would be blocked or not
    depending on the data. The reply holds indices and noised numbers only, and is released."""
    site = attacker.site
    frame = _frame(site)
    ages = np.unique(frame["age"].to_numpy(float))
    exact = [float(a) for a in ages[ages != np.round(ages)][:64]]
    plan = {"study": "oracle", "queries": [
        {"name": "where", "kind": "quantile", "column": "age", "q": 0.5, "candidates": exact[:50],
         "by": {"age": exact}, "epsilon": 0.1},
        {"name": "cells", "kind": "count", "by": {"age": exact}, "epsilon": 0.1}]}
    before = site.ledger().spent(DATASET)
    outcome, reply = attacker.attack(medsyft_dp_query, limit=1, plan=plan)
    assert outcome == "released", reply
    assert site.ledger().spent(DATASET) == pytest.approx(before + 0.2)
    numbers = np.array(reply["answers"]["where"]["index"] + reply["answers"]["cells"]["count"], float)
    assert not np.isin(numbers, ages[ages != np.round(ages)]).any()
    assert all(0 <= i < 50 for i in reply["answers"]["where"]["index"])


def test_an_unbounded_or_data_shaped_plan_is_refused_without_payment(attacker):
    site = attacker.site
    before = site.ledger().spent(DATASET)
    for query, words in (
            ({"name": "raw", "kind": "sum", "column": "age", "epsilon": 0.5}, "bounds must be [low, high]"),
            ({"name": "nan", "kind": "count", "epsilon": float("nan")}, "epsilon must be a finite number"),
            ({"name": "many", "kind": "histogram", "column": "age", "epsilon": 0.5,  # a bin per year and more
              "edges": [float(a) for a in range(1, 200)]}, "edges must list 1 to 127"),
            ({"name": "who", "kind": "count", "by": {"column": "site_uid", "levels": [1.0]}, "epsilon": 0.5},
             "levels of 'site_uid' must be text")):
        outcome, message = attacker.attack(medsyft_dp_query, limit=1, plan={"study": "bad", "queries": [query]})
        assert outcome == "refused" and words in message, message
    assert site.ledger().spent(DATASET) == before


def test_the_template_bound_to_a_table_with_many_rows_per_patient_is_refused_before_payment(attacker):
    """Counting encounters would count a patient many times (sensitivity above 1): the job
    reads only the one-row-per-patient cohort asset, checked by its columns before the debit."""
    site, ds = attacker.site, attacker.ds
    plan = {"study": "encounters", "queries": [{"name": "n", "kind": "count", "epsilon": 0.1}]}
    with quiet():
        fn = sy.syft_function(input_policy=sy.MixedInputPolicy(client=ds, cohort=attacker.assets["encounters"],
                                                               plan=sy.Constant(val=plan)),
                              output_policy=ReleasePolicy(limit=1), name="dp_query_on_encounters")(medsyft_dp_query)
    approve_anyway(site, submit_request(ds, fn))
    before = site.ledger().spent(DATASET)
    from federation import fetch_result

    with pytest.raises(RuntimeError, match="not a sepsis_cohort frame"):
        fetch_result(ds, "dp_query_on_encounters", cohort=attacker.assets["encounters"])
    assert site.ledger().spent(DATASET) == before

"""Non-finite and out-of-range values: refused where they enter, with a line that says what."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest

from federation import PlanError, StudyPlan
from privacy.bounds import plan_problems

BASE = dict(study="values", sites=["a", "b"], rounds=2, epsilon=2.0, model="mlp")
TEXT = ("study", "sites", "model", "strategy", "dataset", "asset", "strategy_options")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_every_numeric_plan_field_refuses_non_finite_values(bad):
    for field in dataclasses.fields(StudyPlan):
        if field.name in TEXT:
            continue
        with pytest.raises(PlanError) as caught, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            StudyPlan(**{**BASE, field.name: bad})
        assert field.name in str(caught.value), field.name


def test_the_site_refuses_non_finite_values_in_an_approved_plan():
    """The review and the job read the pinned plan dict (a researcher can write any JSON)."""
    plan = StudyPlan(**BASE).job_plan()
    for key, value in plan.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "secagg_threshold":
            for bad in (math.nan, math.inf):
                assert plan_problems({**plan, key: bad}), key
    assert plan_problems({**plan, "eval_epsilons": [math.nan] * len(plan["eval_epsilons"])})


def test_budget_set_refuses_infinity(tmp_path):
    from syft_policies.ledger import BudgetLedger

    ledger = BudgetLedger(tmp_path / "ledger.sqlite")
    for bad in (math.inf, math.nan, -1.0):
        with pytest.raises(ValueError, match="finite, non-negative"):
            ledger.set_budget("icu", bad)
    assert ledger.budget("icu") is None

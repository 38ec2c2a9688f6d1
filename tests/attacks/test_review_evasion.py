"""Attack: get data-returning code rated low risk by hiding it from the static review."""

from __future__ import annotations

import inspect

import pytest

from syft_policies import review_code
from syft_policies.templates import TEMPLATES

TRAIN_INPUTS = dict(TEMPLATES["train"].inputs)


def aliased_accessor(cohort, plan, weights):
    peek = cohort.head
    return peek(5)


def walrus(cohort, plan, weights):
    if (rows := cohort) is not None:
        return rows.iloc[:3]


def attribute_chain(cohort, plan, weights):
    import pandas
    return pandas.DataFrame.head.__call__(cohort, 5)


def vetted_name_shadowed(cohort, plan, weights):
    from datasites.jobs.training import dp_train
    dp_train = lambda c, w, p: c.to_dict()  # noqa: E731
    return dp_train(cohort, weights, plan)


def template_plus_one_line(cohort, plan, weights):
    from datasites.jobs.training import dp_train
    weights["head.bias"] = cohort["age"].to_numpy()
    return dp_train(cohort, weights, plan)


def template_with_a_side_channel(cohort, plan, weights):
    from datasites.jobs.training import dp_train
    return dp_train(cohort, weights, plan) if len(cohort) > 10 else cohort


def module_alias(cohort, plan, weights):
    import datasites.jobs.training as t
    return t.dp_train(cohort, weights, plan)


def getattr_on_builtins(cohort, plan, weights):
    return __builtins__["getattr"](cohort, "sam" + "ple")(3)


EVASIONS = [aliased_accessor, walrus, attribute_chain, vetted_name_shadowed, template_plus_one_line,
            template_with_a_side_channel, module_alias, getattr_on_builtins]


@pytest.mark.parametrize("attempt", EVASIONS, ids=lambda f: f.__name__)
def test_every_disguise_is_at_least_medium(attempt):
    report = review_code(inspect.getsource(attempt), inputs=TRAIN_INPUTS)
    assert report.risk in ("medium", "high"), report
    assert report.template is None
    assert any(f.rule == "R010" for f in report.findings)


def test_only_the_exact_template_with_its_input_binding_is_low():
    template = TEMPLATES["train"]
    assert review_code(template.source, inputs=TRAIN_INPUTS).risk == "low"
    renamed = template.source.replace("def medsyft_train", "def my_study_train")
    assert review_code(renamed, inputs=TRAIN_INPUTS).risk == "low"  # names are free
    plan_per_call = dict(TRAIN_INPUTS, plan="researcher")  # the plan passed on each call, not pinned
    assert review_code(template.source, inputs=plan_per_call).risk != "low"


def test_a_disguise_approved_by_one_officer_does_not_run(attacker):
    """The datasite, not the review tool, decides: custom code at a two-person site needs two
    officers' approvals on record, even when an officer's tool was told to allow it."""
    from syft_policies import SitePolicy, approve_request

    site = attacker.site
    rid = attacker.submit(template_plus_one_line, approve=False,
                          plan={"study": "disguise", "dataset": site.spec.dataset_name})
    approve_request(site.officer(), rid, accept_high_risk=True, site_policy=SitePolicy(custom_code="allow"))
    outcome, message = attacker.run(template_plus_one_line, weights={"head.bias": 0})
    assert outcome == "refused" and "two compliance officers" in message

"""The vetted site jobs called directly: inputs, privacy guards, dry runs on mocks."""

from __future__ import annotations

import pytest

from datasites.cohort_asset import cohort_frame
from datasites.jobs.cohort import split_rows
from datasites.jobs.models import model_inputs
from datasites.jobs.site import LocalHospital, use_hospital
from datasites.jobs.training import dp_train
from federation import StudyPlan
from synthetic_data import load_synthea


@pytest.fixture(scope="module")
def frame(network_home, specs):
    return cohort_frame(load_synthea(network_home / specs[1].name / "data" / "private"), site_uid="jobs-site")


def test_cohort_asset_has_no_identifiers_and_a_fixed_split(frame, network_home, specs):
    assert not {"Id", "PATIENT", "SSN", "patient"} & set(frame.columns)
    again = cohort_frame(load_synthea(network_home / specs[1].name / "data" / "private"), site_uid="jobs-site")
    assert (again["split"] == frame["split"]).all()  # the data owner's split does not move between builds
    assert 0.2 < (frame["split"] == "test").mean() < 0.3
    x, y = model_inputs(split_rows(frame, "train"), "lstm")
    assert x.shape[1:] == (12, 17) and len(x) == len(y)
    x, _ = model_inputs(frame, "mlp")
    assert x.shape[1] == 41


def test_dp_train_refuses_a_round_that_would_exceed_the_study_epsilon(frame):
    site = LocalHospital("jobs-site", dry_run=False)
    plan = StudyPlan(study="tight", sites=["x"], rounds=4, noise_multiplier=0.5, epsilon=None).job_plan()
    plan["epsilon"] = 1.0  # far below what one round at this noise costs
    with use_hospital(site), pytest.raises(PermissionError, match="exceed this study's epsilon"):
        dp_train(frame, {}, plan)
    assert site.load("tight", "state") is None and site.debits == []  # refused before any debit or step


def test_dry_run_on_a_mock_leaves_no_privacy_state(network_home, specs, tmp_path):
    mock = cohort_frame(load_synthea(network_home / specs[0].name / "data" / "mock"), site_uid="mock")
    plan = StudyPlan(study="dry", sites=["x"], rounds=2, epsilon=4.0).job_plan()
    first = dp_train(mock, {}, plan)
    second = dp_train(mock, {}, plan)
    assert first["round"] == second["round"] == 1  # throw-away state: a dry run never accumulates
    assert first["epsilon"] == second["epsilon"] > 0
    assert first["budget_remaining"] is None  # nothing was paid: no hospital's budget exists here

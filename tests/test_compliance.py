"""Safe Harbor checks: every identifier type planted in an asset is found and blocks training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datasites.jobs.compliance import IDENTIFIER_TYPES, check_asset
from datasites.deidentify import drop_direct_identifiers, shift_dates, top_code_age, year_only, zip3
from datasites.jobs.training import dp_train
from datasites.jobs.site import Refused

N = 60
PLANTED = {  # identifier type -> a column carrying it, under a name that does not give it away
    "NAME": [f"{f} {l}" for f, l in zip(["Anna", "Pieter", "Marie", "John"] * 15, ["Jansen", "Smith", "Dubois", "Doe"] * 15)],
    "ADDRESS": [f"{10 + i} Keizersgracht Street" for i in range(N)],
    "ZIP": [f"{10115 + 7 * i:05d}" for i in range(N)],
    "DATE": [f"2024-03-{1 + i % 28:02d}" for i in range(N)],
    "PHONE": [f"(617) 555-{1000 + i:04d}" for i in range(N)],
    "EMAIL": [f"patient{i}@mail.example" for i in range(N)],
    "SSN": [f"{100 + i:03d}-{10 + i % 80:02d}-{1000 + i:04d}" for i in range(N)],
    "MRN": [f"MRN{4500000 + i}" for i in range(N)],
    "FREE_TEXT": [f"patient {i} arrived febrile and confused, wife reports fall at home yesterday" for i in range(N)],
}


@pytest.fixture(scope="module")
def cohort(network_home, specs):
    from datasites.cohort_asset import cohort_frame
    from datasites.data import private_dir
    from synthetic_data import load_synthea

    frame = cohort_frame(load_synthea(private_dir(network_home, specs[0].name)), site_uid="compliance-test")
    return frame.iloc[:N].reset_index(drop=True)


def _plan():
    from federation import StudyPlan

    return StudyPlan(study="compliance", sites=["a"], rounds=1, epsilon=1.0, model="mlp").job_plan()


def test_the_published_cohort_is_compliant(cohort):
    report = check_asset(cohort, name="sepsis_cohort")
    assert report.compliant, str(report)


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_each_planted_identifier_is_detected_and_blocks_training(cohort, kind):
    planted = cohort.copy()
    planted["extra_field"] = PLANTED[kind]
    report = check_asset(planted, name="sepsis_cohort")
    assert kind in report.identifiers and not report.compliant, str(report)
    with pytest.raises(Refused, match=f"{kind} in extra_field"):
        dp_train(planted, {}, _plan())


def test_ages_over_89_and_datetime_columns_are_detected_and_block_training(cohort):
    old = cohort.copy()
    old.loc[0, "age"] = 97.0
    assert "AGE_OVER_89" in check_asset(old).identifiers
    dated = cohort.copy()
    dated["admitted"] = pd.Timestamp("2024-05-01")
    assert "DATE" in check_asset(dated).identifiers
    for frame, kind in ((old, "AGE_OVER_89 in age"), (dated, "DATE in admitted")):
        with pytest.raises(Refused, match=kind):
            dp_train(frame, {}, _plan())
    assert set(IDENTIFIER_TYPES) == set(PLANTED) | {"AGE_OVER_89"}


def test_deidentification_makes_a_raw_extract_compliant():
    rng = np.random.default_rng(0)
    raw = pd.DataFrame({"patient_name": PLANTED["NAME"], "address": PLANTED["ADDRESS"], "zip": PLANTED["ZIP"],
                        "phone": PLANTED["PHONE"], "email": PLANTED["EMAIL"], "ssn": PLANTED["SSN"],
                        "mrn": PLANTED["MRN"], "age": rng.uniform(40, 99, N).round(1),
                        "diagnosed": pd.to_datetime(PLANTED["DATE"]), "treated": pd.to_datetime(PLANTED["DATE"]),
                        "response": rng.integers(0, 2, N)})
    before = check_asset(raw)
    assert {"NAME", "ADDRESS", "ZIP", "PHONE", "EMAIL", "SSN", "MRN", "AGE_OVER_89", "DATE"} <= before.identifiers
    shifted = shift_dates(raw, ["diagnosed", "treated"], patient="mrn", secret=b"k" * 32)
    assert ((shifted["treated"] - shifted["diagnosed"]) == (raw["treated"] - raw["diagnosed"])).all()
    clean = year_only(top_code_age(zip3(drop_direct_identifiers(shifted, keep=("zip",)))), ["diagnosed", "treated"])
    assert check_asset(clean).compliant, str(check_asset(clean))
    assert clean["age"].max() <= 90 and set(clean["zip3"].str.len()) == {3}

"""The generator, Synthea layout, loader validation, cohort signal, non-IID hospitals, mocks."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest

from federation.metrics import auroc
from synthetic_data import (HospitalProfile, SyntheaValidationError, build_cohort, describe_hospitals,
                            generate_population, load_synthea, make_mock, partition_hospitals)
from synthetic_data.schema import TABLES

# Synthea v3 CSVConstants, written out independently of synthetic_data.schema
SYNTHEA_V3 = {
    "patients": "Id,BIRTHDATE,DEATHDATE,SSN,DRIVERS,PASSPORT,PREFIX,FIRST,MIDDLE,LAST,SUFFIX,MAIDEN,MARITAL,RACE,"
                "ETHNICITY,GENDER,BIRTHPLACE,ADDRESS,CITY,STATE,COUNTY,FIPS,ZIP,LAT,LON,HEALTHCARE_EXPENSES,"
                "HEALTHCARE_COVERAGE,INCOME",
    "encounters": "Id,START,STOP,PATIENT,ORGANIZATION,PROVIDER,PAYER,ENCOUNTERCLASS,CODE,DESCRIPTION,"
                  "BASE_ENCOUNTER_COST,TOTAL_CLAIM_COST,PAYER_COVERAGE,REASONCODE,REASONDESCRIPTION",
    "conditions": "START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION",
    "observations": "DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE",
    "medications": "START,STOP,PATIENT,PAYER,ENCOUNTER,CODE,DESCRIPTION,BASE_COST,PAYER_COVERAGE,DISPENSES,"
                   "TOTALCOST,REASONCODE,REASONDESCRIPTION",
    "procedures": "START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION,BASE_COST,REASONCODE,REASONDESCRIPTION",
}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    generate_population(400, seed=5).write(d)
    return d


def _digests(d):
    return {t: hashlib.sha256((d / f"{t}.csv").read_bytes()).hexdigest() for t in TABLES}


def test_same_seed_gives_byte_identical_csvs(tmp_path, export_dir):
    generate_population(400, seed=5).write(tmp_path / "again")
    generate_population(400, seed=6).write(tmp_path / "other")
    assert _digests(tmp_path / "again") == _digests(export_dir)
    assert _digests(tmp_path / "other")["patients"] != _digests(export_dir)["patients"]


def test_columns_match_synthea_v3_exactly(export_dir):
    for table, header in SYNTHEA_V3.items():
        assert (export_dir / f"{table}.csv").read_text().split("\n", 1)[0] == header


def test_real_code_systems_and_hourly_icu_vitals(export_dir):
    ex = load_synthea(export_dir)
    obs = ex["observations"]
    assert {"8867-4", "9279-1", "8310-5", "8480-6", "59408-5", "6690-2", "2524-7", "2160-0"} <= set(obs["CODE"])
    assert set(ex["conditions"]["SYSTEM"]) == {"SNOMED-CT"}
    assert "91302008" in set(ex["conditions"]["CODE"])  # SNOMED sepsis
    assert "1659131" in set(ex["medications"]["CODE"])  # RxNorm piperacillin/tazobactam
    hr = obs[obs["CODE"] == "8867-4"].sort_values("DATE")
    gaps = hr.groupby("ENCOUNTER")["DATE"].diff().dropna().dt.total_seconds() / 3600
    assert 0.6 < gaps.median() < 1.4  # roughly hourly


def test_thousands_of_patients_in_seconds():
    import time

    t = time.perf_counter()
    ex = generate_population(3000, seed=1)
    elapsed = time.perf_counter() - t
    assert ex.n_patients == 3000
    assert elapsed < 30  # generous: this asserts "seconds", not a benchmark


def test_model_can_learn_sepsis_but_not_perfectly():
    import tempfile

    ex = generate_population(2500, seed=3)

    with tempfile.TemporaryDirectory() as d:
        ex.write(d)
        cohort = build_cohort(load_synthea(d))
    train, test = cohort.split(seed=0)
    assert not set(train.patient_ids) & set(test.patient_ids)
    X = train.tabular.to_numpy()
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Xs, y = (X - mu) / sd, train.labels
    w, b = np.zeros(X.shape[1]), 0.0
    for _ in range(400):
        p = 1 / (1 + np.exp(-(Xs @ w + b)))
        w -= 0.5 * (Xs.T @ (p - y) / len(y) + 1e-3 * w)
        b -= 0.5 * (p - y).mean()
    score = auroc(test.labels, ((test.tabular.to_numpy() - mu) / sd) @ w + b)
    assert 0.70 < score < 0.97, score
    assert cohort.sequences.shape == (len(cohort), 12, 8)
    assert not np.isnan(cohort.sequences).any()


def _copy(export_dir, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(export_dir, d)
    return d


def test_loader_rejects_missing_file(export_dir, tmp_path):
    d = _copy(export_dir, tmp_path)
    (d / "medications.csv").unlink()
    with pytest.raises(SyntheaValidationError, match="medications.csv is missing"):
        load_synthea(d)


def test_loader_rejects_missing_column(export_dir, tmp_path):
    d = _copy(export_dir, tmp_path)
    f = pd.read_csv(d / "encounters.csv", dtype=str, keep_default_na=False).drop(columns=["PAYER"])
    f.to_csv(d / "encounters.csv", index=False)
    with pytest.raises(SyntheaValidationError, match="encounters.csv is missing column.*PAYER"):
        load_synthea(d)


def test_loader_names_pre_v3_exports(export_dir, tmp_path):
    d = _copy(export_dir, tmp_path)
    f = pd.read_csv(d / "patients.csv", dtype=str, keep_default_na=False).drop(columns=["INCOME", "FIPS", "MIDDLE"])
    f.to_csv(d / "patients.csv", index=False)
    with pytest.raises(SyntheaValidationError, match="before v3"):
        load_synthea(d)
    assert load_synthea(d, allow_pre_v3=True)["patients"]["INCOME"].isna().all()


def test_loader_rejects_wrong_type_with_line_number(export_dir, tmp_path):
    d = _copy(export_dir, tmp_path)
    f = pd.read_csv(d / "patients.csv", dtype=str, keep_default_na=False)
    f.loc[3, "BIRTHDATE"] = "last tuesday"
    f.to_csv(d / "patients.csv", index=False)
    with pytest.raises(SyntheaValidationError) as err:
        load_synthea(d)
    assert "patients.csv column BIRTHDATE" in str(err.value) and "line 5" in str(err.value)
    assert "last tuesday" not in str(err.value)  # a value of the file never appears in an error


def test_loader_rejects_non_finite_numbers_with_file_column_and_line(export_dir, tmp_path):
    """inf in 2% of observations used to load silently and turn a site's weights to NaN."""
    d = _copy(export_dir, tmp_path)
    obs = pd.read_csv(d / "observations.csv", dtype=str, keep_default_na=False)
    numeric = obs.index[obs["TYPE"] == "numeric"]
    hit = numeric[:: max(1, len(numeric) // 50)]
    obs.loc[hit, "VALUE"] = ["inf", "-Infinity", "nan", "NaN"] * (len(hit) // 4) + ["inf"] * (len(hit) % 4)
    obs.to_csv(d / "observations.csv", index=False)
    pat = pd.read_csv(d / "patients.csv", dtype=str, keep_default_na=False)
    pat.loc[2, "INCOME"] = "inf"
    pat.to_csv(d / "patients.csv", index=False)
    with pytest.raises(SyntheaValidationError) as err:
        load_synthea(d)
    message = str(err.value)
    assert f"observations.csv column VALUE: {len(hit)} numeric value(s) are not a finite number" in message
    assert f"line {int(hit[0]) + 2}" in message
    assert "patients.csv column INCOME: 1 value(s) are not a finite number (first at line 4)" in message


def test_loader_rejects_empty_file(export_dir, tmp_path):
    d = _copy(export_dir, tmp_path)
    (d / "observations.csv").write_text("")
    with pytest.raises(SyntheaValidationError, match="observations.csv is empty"):
        load_synthea(d)


def test_loader_reports_every_problem_at_once(export_dir, tmp_path):
    d = _copy(export_dir, tmp_path)
    (d / "procedures.csv").unlink()
    (d / "conditions.csv").write_text("")
    with pytest.raises(SyntheaValidationError) as err:
        load_synthea(d)
    assert len(err.value.problems) == 2


PROFILES = [
    HospitalProfile("old-big", share=2.0, age_preference=0.4, prevalence_odds=1.6),
    HospitalProfile("young-small", share=0.8, age_preference=-0.4, prevalence_odds=0.6,
                    creatinine_unit="umol/L", lactate_loinc="32693-4"),
    HospitalProfile("offset", share=1.0, spo2_offset=2.0),
]


@pytest.fixture(scope="module")
def hospitals():
    return partition_hospitals(generate_population(3000, seed=2), PROFILES, seed=2)


def test_hospitals_measurably_differ(hospitals):
    summary = describe_hospitals(hospitals)
    assert summary["patients"].sum() == 3000
    assert summary.loc["old-big", "patients"] > 1.5 * summary.loc["young-small", "patients"]
    assert summary.loc["old-big", "mean_age"] - summary.loc["young-small", "mean_age"] > 8
    assert summary.loc["old-big", "sepsis_prevalence"] > 1.5 * summary.loc["young-small", "sepsis_prevalence"]
    assert summary.loc["young-small", "creatinine_units"] == "umol/L"
    assert summary.loc["young-small", "lactate_loinc"] == "32693-4"
    assert summary.loc["offset", "median_spo2"] - summary.loc["old-big", "median_spo2"] >= 1.5
    ids = [set(h["patients"]["Id"]) for h in hospitals.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


def test_cohort_harmonises_units_across_hospitals(hospitals, tmp_path):
    means = {}
    for name in ("old-big", "young-small"):
        hospitals[name].write(tmp_path / name)
        means[name] = build_cohort(load_synthea(tmp_path / name)).tabular["creatinine_mean"].mean()
    assert 0.7 < means["young-small"] < 2.0 and 0.7 < means["old-big"] < 2.0  # mg/dL both


def test_mock_copies_no_private_row_or_identifier(hospitals):
    private = hospitals["young-small"]
    mock = make_mock(PROFILES[1], 150, seed=2)
    assert mock.n_patients == 150
    for table in TABLES:
        p, m = private[table].astype(str), mock[table].astype(str)
        assert list(p.columns) == list(m.columns)
        assert p.merge(m, how="inner").empty, f"a private {table} row appears in the mock"
    for col in ("Id", "SSN", "DRIVERS", "PASSPORT", "ADDRESS"):
        if col == "ADDRESS":
            continue  # street names are drawn from a small public list
        assert not set(private["patients"][col]) & set(mock["patients"][col]), col
    # the mock follows the hospital's published habits
    assert set(mock["observations"]["UNITS"]) >= {"umol/L"}

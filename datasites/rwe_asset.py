"""The oncology RWE research asset: a raw hospital extract, de-identified for analysis.

Same meta columns as the sepsis cohort (``site_uid``, ``split``, ``label`` = objective
response), so the vetted jobs (``dp_train``, ``secure_train``, ``evaluate``) serve it with
the ``rwe_logreg`` model; the analytics job reads the biomarker and treatment columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthetic_data.oncology import BIOMARKERS

from .deidentify import drop_direct_identifiers, shift_dates, top_code_age, year_only

__all__ = ["RWE_ASSET", "RWE_DATASET", "RWE_FEATURES", "rwe_frame", "RWE_SCHEMA"]

RWE_ASSET = "rwe_cohort"
RWE_DATASET = "oncology-rwe"
RWE_FEATURES = ("age", "male", "stage", *BIOMARKERS, "treated")
RWE_SCHEMA = {**{c: "numeric" for c in RWE_FEATURES}, "label": "binary", **{m: "binary" for m in BIOMARKERS}}
TEST_FRACTION = 0.25


def rwe_frame(raw: pd.DataFrame, *, site_uid: str, secret: bytes, seed: int = 0) -> pd.DataFrame:
    """De-identify ``raw`` (drop direct identifiers and the note, shift dates per patient, keep
    years only, top-code age) and add the meta columns; float32 features like the sepsis cohort."""
    shifted = shift_dates(raw, ["birth_date", "diagnosis_date", "treatment_start"], patient="mrn", secret=secret)
    shifted = shifted.drop(columns=["birth_date", "treatment_start"])
    clean = year_only(top_code_age(drop_direct_identifiers(shifted.drop(columns=["zip"]))), ["diagnosis_date"])
    rng = np.random.default_rng(seed)
    split = np.where(rng.random(len(clean)) < TEST_FRACTION, "test", "train")
    features = pd.DataFrame({
        "age": clean["age"].astype("float32"), "male": (clean["sex"] == "M").astype("float32"),
        "stage": clean["stage"].astype("float32"),
        **{m: clean[m].astype("float32") for m in BIOMARKERS},
        "treated": (clean["treatment"] == "drug-x").astype("float32"),
        "diagnosis_year": clean["diagnosis_date_year"].astype("float32"),
    })
    meta = pd.DataFrame({"site_uid": site_uid, "split": split, "label": clean["response"].astype("int8")})
    return pd.concat([meta, features], axis=1).reset_index(drop=True)

"""Vetted job: the size, sepsis prevalence and mean age of a hospital's ICU cohort, DP-noised.

A fixed query plan on one row per ICU patient (built here from the raw Synthea tables),
answered by the DP query job's OpenDP mechanisms: the counts of septic and other ICU
patients at ``epsilon / 2`` (one patient moves one count by one) and their mean age at
``epsilon / 2`` (a count and a sum of ages clamped to [0, 110]). Paid from the site's
budget before anything is computed; small noised counts are shown as None.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .query import run_queries
from .receipt import receipt
from .site import hospital

__all__ = ["cohort_summary"]

SEPSIS_CODES = ("91302008", "76571007")  # SNOMED-CT sepsis, septic shock
ICU_ADMISSION = "305351004"
MIN_CELL = 10


def _icu_patients(patients, encounters, conditions) -> pd.DataFrame:
    stays = encounters[encounters["CODE"] == ICU_ADMISSION]
    admit = stays.drop_duplicates("PATIENT").set_index("PATIENT")["START"].dt.tz_localize(None)
    birth = patients.set_index("Id")["BIRTHDATE"].reindex(admit.index)
    septic = set(conditions[conditions["CODE"].isin(SEPSIS_CODES)]["PATIENT"])
    return pd.DataFrame({"age": ((admit - birth).dt.days / 365.25).to_numpy(dtype=float),
                         "sepsis": np.array([p in septic for p in admit.index], dtype=float)})


def cohort_summary(patients, encounters, conditions, *, epsilon: float = 1.0) -> dict:
    """Noised ICU cohort size, sepsis cases and prevalence, and mean age (epsilon-DP)."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon <= 10:
        raise ValueError("epsilon must be a number in (0, 10]")
    left = hospital().debit(float(epsilon), reference="cohort_summary")  # paid before anything is read
    frame = _icu_patients(patients, encounters, conditions)
    half = float(epsilon) / 2
    answers = run_queries(frame, {"study": "cohort-summary", "queries": [
        {"name": "outcome", "kind": "count", "by": {"column": "sepsis", "levels": [0, 1]}, "epsilon": half},
        {"name": "age", "kind": "mean", "column": "age", "bounds": [0, 110], "epsilon": half}]})
    other, cases = answers["outcome"]["count"]
    n = other + cases
    mean_age = answers["age"]["mean"][0]

    def cell(x):
        return x if x >= MIN_CELL else None

    return {
        "icu_patients": cell(n),
        "sepsis_cases": cell(cases),
        "sepsis_prevalence": round(cases / n, 3) if n >= MIN_CELL and cases >= MIN_CELL else None,
        "mean_age": round(float(mean_age), 1) if mean_age is not None and n >= MIN_CELL else None,
        "receipt": receipt("OpenDP discrete Laplace (counts) and Laplace (age sum, bounds [0, 110])",
                           epsilon=float(epsilon), budget_remaining=left),
    }

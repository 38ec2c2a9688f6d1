"""Vetted job: the size, sepsis prevalence and mean age of a hospital's ICU cohort, DP-noised.

A fixed query plan answered by the DP query job (``datasites.jobs.query``) on one row per
ICU patient, built from the raw Synthea tables after the debit: the counts of septic and
other ICU patients at ``epsilon / 2`` (one patient moves one count by one; OpenDP's
discrete Laplace) and their mean age at ``epsilon / 2`` (a count and a sum of ages clamped
to [0, 110], a quarter each). The site template fixes ``epsilon`` (1.0 a call). The
datasite debits the dataset the three tables belong to. Noised counts below 10 are shown
as None (post-processing of the noised value, never of the true one).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .query import pay, run_queries
from .receipt import receipt

__all__ = ["cohort_summary", "MIN_CELL", "AGE_BOUNDS"]

SEPSIS_CODES = ("91302008", "76571007")  # SNOMED-CT sepsis, septic shock
ICU_ADMISSION = "305351004"
MIN_CELL = 10
AGE_BOUNDS = (0.0, 110.0)


def _icu_patients(patients, encounters, conditions) -> pd.DataFrame:
    """One row per ICU patient (age at first ICU admission, sepsis 0/1): a patient is one row."""
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
    epsilon = float(epsilon)
    tables = [getattr(t, "syft_action_data", t) for t in (patients, encounters, conditions)]
    plan = {"study": "cohort-summary", "queries": [
        {"name": "outcome", "kind": "count", "by": {"column": "sepsis", "levels": [0, 1]}, "epsilon": epsilon / 2},
        {"name": "age", "kind": "mean", "column": "age", "bounds": list(AGE_BOUNDS), "epsilon": epsilon / 2}]}
    left = pay(plan, columns={"age": True, "sepsis": True}, reference="cohort_summary")  # before any row is read
    answers = run_queries(_icu_patients(*tables), plan)
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
                           epsilon=epsilon, budget_remaining=left),
    }

"""Vetted job: the size, sepsis prevalence and mean age of a hospital's ICU cohort.

Aggregates only: counts below ``min_cell`` are suppressed (None), never exact small
numbers or rows.
"""

from __future__ import annotations

__all__ = ["cohort_summary"]

SEPSIS_CODES = ("91302008", "76571007")  # SNOMED-CT sepsis, septic shock
ICU_ADMISSION = "305351004"


def cohort_summary(patients, encounters, conditions, *, min_cell: int = 10) -> dict:
    """Size, sepsis prevalence and mean age of the ICU cohort, small cells suppressed."""
    if min_cell < 5:
        raise ValueError("min_cell below 5 is not allowed: small counts can identify patients")
    stays = encounters[encounters["CODE"] == ICU_ADMISSION]
    n = int(stays["PATIENT"].nunique())
    cases = int(conditions[conditions["CODE"].isin(SEPSIS_CODES)]["PATIENT"].nunique())
    admit = stays.drop_duplicates("PATIENT").set_index("PATIENT")["START"].dt.tz_localize(None)
    birth = patients.set_index("Id")["BIRTHDATE"].reindex(admit.index)
    ages = (admit - birth).dt.days / 365.25

    def cell(x):
        return x if x >= min_cell else None

    return {
        "icu_patients": cell(n),
        "sepsis_cases": cell(cases),
        "sepsis_prevalence": round(cases / n, 3) if n >= min_cell and cases >= min_cell else None,
        "mean_age": round(float(ages.mean()), 1) if n >= min_cell else None,
        "min_cell": min_cell,
    }

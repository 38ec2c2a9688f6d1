"""Non-IID hospitals: split one population into sites that differ on purpose.

Sites differ in size (``share``), age mix (``age_preference``: log-odds of admitting a
patient per decade above 60), outcome prevalence (``prevalence_odds``), and habits of
measurement and coding: creatinine reported in umol/L (LOINC 14682-9), lactate coded as
whole-blood lactate (LOINC 32693-4), a pulse-oximeter offset on SpO2. Mock twins are
generated from the same *public* profile with a fresh seed, never from private rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import codes
from .export import SyntheaExport
from .generator import generate_population
from .profile import HospitalProfile, Location

__all__ = ["HospitalProfile", "partition_hospitals", "describe_hospitals", "make_mock"]


def _patient_age_and_label(export: SyntheaExport) -> tuple[pd.Series, pd.Series]:
    pats = export["patients"].set_index("Id")
    enc = export["encounters"]
    icu = enc[enc["CODE"] == codes.ENCOUNTER_ICU.code].drop_duplicates("PATIENT").set_index("PATIENT")
    admit = pd.to_datetime(icu["START"].reindex(pats.index).astype(str).str[:10], errors="coerce")
    age = (admit - pd.to_datetime(pats["BIRTHDATE"])).dt.days / 365.25
    cond = export["conditions"]
    septic = pats.index.isin(cond[cond["CODE"] == codes.SEPSIS.code]["PATIENT"])
    return age.fillna(60.0), pd.Series(septic, index=pats.index)


def apply_habits(export: SyntheaExport, profile: HospitalProfile, rng: np.random.Generator) -> SyntheaExport:
    """Rewrite a hospital's export with its location and measurement/coding habits."""
    tables = {t: f.copy() for t, f in export.tables.items()}
    p = tables["patients"]
    loc = profile.location
    n = len(p)
    p["CITY"], p["STATE"], p["COUNTY"], p["FIPS"] = loc.city, loc.state, loc.county, loc.fips
    p["BIRTHPLACE"] = f"{loc.city}  {loc.state}  US"
    p["ZIP"] = [f"{loc.zip_prefix}{z:02d}" for z in rng.integers(0, 99, n)]
    p["LAT"] = np.round(loc.lat + rng.normal(0, 0.05, n), 6)
    p["LON"] = np.round(loc.lon + rng.normal(0, 0.05, n), 6)

    o = tables["observations"]
    if profile.creatinine_unit == "umol/L":
        alt = codes.ALTERNATE_LOINC["14682-9"][1]
        rows = o["CODE"] == codes.LABS["creatinine"].code
        o.loc[rows, "VALUE"] = np.round(o.loc[rows, "VALUE"].astype(float) * codes.CREATININE_UMOL_PER_MGDL).astype(str)
        o.loc[rows, ["CODE", "DESCRIPTION", "UNITS"]] = [alt.code, alt.description, alt.units]
    if profile.lactate_loinc != codes.LABS["lactate"].code:
        alt = codes.ALTERNATE_LOINC[profile.lactate_loinc][1]
        rows = o["CODE"] == codes.LABS["lactate"].code
        o.loc[rows, ["CODE", "DESCRIPTION"]] = [alt.code, alt.description]
    if profile.spo2_offset:
        rows = o["CODE"] == codes.VITALS["spo2"].code
        o.loc[rows, "VALUE"] = np.clip(o.loc[rows, "VALUE"].astype(float) + profile.spo2_offset, 70, 100).round().astype(str)
    return SyntheaExport(tables)


def _seed_for(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def partition_hospitals(
    export: SyntheaExport, profiles: list[HospitalProfile], *, seed: int = 0
) -> dict[str, SyntheaExport]:
    """Assign every patient to exactly one hospital, with non-IID odds; apply habits."""
    if not profiles:
        raise ValueError("give at least one HospitalProfile")
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ValueError(f"hospital names must be unique, got {names}")
    rng = np.random.default_rng(seed)
    age, septic = _patient_age_and_label(export)
    decades = ((age - 60) / 10).to_numpy()
    w = np.stack([p.share * np.exp(p.age_preference * decades) * np.where(septic, p.prevalence_odds, 1.0)
                  for p in profiles], axis=1)
    w /= w.sum(axis=1, keepdims=True)
    u = rng.random(len(w))[:, None]
    choice = (u > np.cumsum(w, axis=1)).sum(axis=1)
    ids = age.index.to_numpy()
    out = {}
    for k, profile in enumerate(profiles):
        part = export.subset(ids[choice == k])
        out[profile.name] = apply_habits(part, profile, np.random.default_rng(_seed_for(seed, profile.name)))
    return out


def make_mock(profile: HospitalProfile, n_patients: int = 150, *, seed: int = 0) -> SyntheaExport:
    """A mock twin: same schema and habits, plausible values, no private row or value.

    Generated from the public profile only; its prevalence and age mix are the
    generator's defaults, so a mock does not leak the hospital's own statistics.
    """
    mseed = _seed_for("mock", seed, profile.name)
    pop = generate_population(n_patients, seed=mseed, location=profile.location, mock=True)
    return apply_habits(pop, profile, np.random.default_rng(mseed + 1))


def describe_hospitals(exports: dict[str, SyntheaExport]) -> pd.DataFrame:
    """How the hospitals differ: size, age mix, prevalence, units and codes in use."""
    rows = []
    for name, ex in exports.items():
        age, septic = _patient_age_and_label(ex)
        o = ex["observations"]
        creat = o[o["CODE"].isin(["2160-0", "14682-9"])]
        lact = o[o["CODE"].isin(["2524-7", "32693-4"])]
        spo2 = pd.to_numeric(o[o["CODE"] == codes.VITALS["spo2"].code]["VALUE"], errors="coerce")
        rows.append({
            "hospital": name,
            "patients": ex.n_patients,
            "mean_age": round(float(age.mean()), 1),
            "age_75_plus": round(float((age >= 75).mean()), 3),
            "sepsis_prevalence": round(float(septic.mean()), 3),
            "creatinine_units": ",".join(sorted(creat["UNITS"].dropna().unique())),
            "lactate_loinc": ",".join(sorted(lact["CODE"].unique())),
            "median_spo2": float(spo2.median()) if len(spo2) else float("nan"),
        })
    return pd.DataFrame(rows).set_index("hospital")

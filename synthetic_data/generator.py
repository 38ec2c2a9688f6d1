"""Seeded generator of ICU patients in Synthea's CSV export layout.

Each patient has demographics, chronic comorbidities (recorded at an earlier wellness
visit) and one ICU stay with hourly vitals and 4-hourly labs. A latent septic process,
whose risk depends on age, comorbidities, the admission reason and an unobserved
frailty, drives the vitals; the recorded sepsis onset is then *derived from the charted
values* (SIRS >= 2 plus lactate >= 2 mmol/L or systolic BP < 100, for two consecutive
hours), so the label follows from the data as it would in a chart review. Signal is
real but imperfect: frailty is hidden, noise is autocorrelated, and non-septic patients
have transient febrile / tachycardic episodes.
"""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd

from . import codes
from .export import SyntheaExport
from .profile import DEFAULT_LOCATION, Location
from .schema import COLUMNS

__all__ = ["Location", "generate_population", "DEFAULT_LOCATION"]



_FIRST = ["Ada", "Ben", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jamal",
          "Keiko", "Liam", "Maria", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sven", "Tara",
          "Umar", "Vera", "Wen", "Xavier", "Yara", "Zoe"]
_LAST = ["Andersen", "Bakker", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen",
         "Ivanova", "Jansen", "Kowalski", "Lopez", "Meyer", "Nguyen", "Okafor", "Peeters",
         "Quispe", "Rossi", "Schmidt", "Tanaka", "Ueda", "Visser", "Walker", "Yilmaz", "Zhou"]
_STREETS = ["Main St", "Oak Ave", "Harbor Rd", "Elm St", "Station Rd", "Mill Ln", "Park Pl"]
_RACES = np.array(["white", "black", "asian", "native", "other"])
_RACE_P = [0.72, 0.11, 0.09, 0.02, 0.06]
_MAX_STAY_H = 60
_LAB_EVERY_H = 4


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.bytes(16 * n)
    return np.array([str(uuid.UUID(bytes=raw[i * 16:(i + 1) * 16], version=4)) for i in range(n)], dtype=object)


def _iso(ts: np.ndarray) -> np.ndarray:
    """datetime64[s] -> Synthea's ``2024-03-01T08:15:00Z``."""
    return np.char.add(np.datetime_as_string(ts.astype("datetime64[s]"), unit="s"), "Z").astype(object)


def _day(ts: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(ts.astype("datetime64[D]"), unit="D").astype(object)


def _ar_noise(rng, n, t, sd, rho=0.7):
    """Autocorrelated measurement noise, shape (n, t)."""
    out = np.empty((n, t))
    out[:, 0] = rng.normal(0, sd, n)
    innov = rng.normal(0, sd * np.sqrt(1 - rho ** 2), (n, t))
    for k in range(1, t):
        out[:, k] = rho * out[:, k - 1] + innov[:, k]
    return out


def _first_sustained(crit: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Index of the first hour where ``crit`` holds for two consecutive valid hours, else -1."""
    both = crit[:, :-1] & crit[:, 1:] & valid[:, 1:]
    has = both.any(axis=1)
    return np.where(has, both.argmax(axis=1), -1)


def generate_population(
    n_patients: int,
    *,
    seed: int = 0,
    location: Location = DEFAULT_LOCATION,
    age_mean: float = 63.0,
    risk_shift: float = 0.0,
    start_date: str = "2024-01-01",
    days: int = 365,
    mock: bool = False,
) -> SyntheaExport:
    """Generate ``n_patients`` ICU patients. Same arguments, same frames (and CSV bytes).

    ``mock=True`` marks identifiers as mock (SSN area 000, ``M``-prefixed licence and
    passport numbers), so a mock identifier can never equal a private one.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    rng = np.random.default_rng(seed)
    n, T = n_patients, _MAX_STAY_H

    # --- who they are -------------------------------------------------------------
    age = np.clip(rng.normal(age_mean, 16.0, n), 18, 99)
    male = rng.random(n) < 0.55
    race = _RACES[rng.choice(len(_RACES), n, p=_RACE_P)]
    hispanic = rng.random(n) < 0.1
    a = (age - 60) / 10
    comorb = {
        "diabetes": rng.random(n) < _sigmoid(-1.2 + 0.35 * a),
        "hypertension": rng.random(n) < _sigmoid(-0.2 + 0.5 * a),
        "copd": rng.random(n) < _sigmoid(-2.3 + 0.4 * a),
        "heart_failure": rng.random(n) < _sigmoid(-2.4 + 0.55 * a),
        "cancer": rng.random(n) < _sigmoid(-2.3 + 0.3 * a),
    }
    comorb["ckd"] = rng.random(n) < _sigmoid(-2.2 + 0.45 * a + 0.9 * comorb["diabetes"])
    reasons = list(codes.ADMISSION_REASONS)
    reason = np.array(reasons)[rng.choice(len(reasons), n, p=[0.22, 0.13, 0.15, 0.15, 0.15, 0.20])]
    infection = np.isin(reason, codes.INFECTIOUS_REASONS)
    frailty = rng.normal(0, 1, n)

    logit = (risk_shift - 2.5 + 0.25 * a + 0.5 * comorb["diabetes"] + 0.6 * comorb["ckd"]
             + 0.35 * comorb["copd"] + 0.3 * comorb["heart_failure"] + 0.8 * comorb["cancer"]
             + 1.6 * infection + 0.8 * frailty)
    latent = rng.random(n) < _sigmoid(logit)

    # --- the ICU stay -------------------------------------------------------------
    stay = rng.integers(24, T + 1, n)
    hours = np.arange(T)[None, :]
    valid = hours < stay[:, None]
    onset_true = rng.uniform(3, stay - 3)
    lead = rng.uniform(4, 10, n)
    sev = np.clip((hours - (onset_true - lead)[:, None]) / lead[:, None], 0, 1.6) * latent[:, None]
    resp = rng.uniform(0.6, 1.3, n)[:, None]
    # transient non-septic episodes: fever and tachycardia without organ dysfunction
    has_ep = rng.random(n) < 0.35
    ep_start = rng.uniform(0, stay - 2)
    ep_len = rng.uniform(3, 9, n)
    ep = ((hours >= ep_start[:, None]) & (hours < (ep_start + ep_len)[:, None]) & has_ep[:, None]) * rng.uniform(0.4, 0.8, n)[:, None]

    hypo = rng.random(n) < 0.2
    leukopenia = rng.random(n) < 0.15
    hr = rng.normal(82, 10, n)[:, None] + 8 * comorb["heart_failure"][:, None] + 32 * sev * resp + 20 * ep + _ar_noise(rng, n, T, 5)
    rr = rng.normal(16, 2.5, n)[:, None] + 2 * comorb["copd"][:, None] + 9 * sev * resp + 5 * ep + _ar_noise(rng, n, T, 1.5)
    temp = rng.normal(36.9, 0.3, n)[:, None] + np.where(hypo, -0.9, 1.6)[:, None] * sev * resp + 1.1 * ep + _ar_noise(rng, n, T, 0.25)
    sbp = rng.normal(124, 15, n)[:, None] + 10 * comorb["hypertension"][:, None] - 32 * sev * resp + _ar_noise(rng, n, T, 7)
    spo2 = np.clip(rng.normal(96.5, 1.3, n)[:, None] - 3 * comorb["copd"][:, None] - 4 * sev * resp + _ar_noise(rng, n, T, 1.0), 70, 100)
    wbc = np.clip(rng.normal(8, 2.0, n)[:, None] + np.where(leukopenia, -4.5, 7.0)[:, None] * sev * resp + 3 * ep + _ar_noise(rng, n, T, 1.0), 0.5, None)
    lactate = np.clip(rng.lognormal(np.log(1.1), 0.3, n)[:, None] + 2.6 * sev * resp + _ar_noise(rng, n, T, 0.25), 0.3, None)
    creat = np.clip((rng.normal(0.9, 0.18, n) + 1.0 * comorb["ckd"])[:, None] * (1 + 0.6 * sev * resp) + _ar_noise(rng, n, T, 0.08), 0.3, None)

    hr, rr, sbp = np.round(hr), np.round(rr), np.round(sbp)
    temp, spo2 = np.round(temp, 1), np.round(spo2)
    wbc, lactate, creat = np.round(wbc, 1), np.round(lactate, 1), np.round(creat, 2)

    # --- the chart decides the onset ---------------------------------------------
    lab_hour = (hours // _LAB_EVERY_H) * _LAB_EVERY_H  # labs carried forward
    wbc_cf = np.take_along_axis(wbc, np.broadcast_to(lab_hour, wbc.shape), axis=1)
    lac_cf = np.take_along_axis(lactate, np.broadcast_to(lab_hour, lactate.shape), axis=1)
    sirs = (hr > 90).astype(int) + (rr > 20) + ((temp > 38) | (temp < 36)) + ((wbc_cf > 12) | (wbc_cf < 4))
    crit = (sirs >= 2) & ((lac_cf >= 2) | (sbp < 100)) & valid
    onset = _first_sustained(crit, valid)
    septic = onset >= 0
    shock = septic & (_first_sustained((lac_cf > 4) & (sbp < 90) & valid, valid) >= 0)
    died = rng.random(n) < np.where(shock, 0.35, np.where(septic, 0.15, 0.04))

    # --- timestamps ---------------------------------------------------------------
    t0 = np.datetime64(start_date, "s")
    admit = t0 + (rng.integers(0, days * 24 * 3600, n)).astype("timedelta64[s]")
    admit = admit - (admit.astype("int64") % 60).astype("timedelta64[s]")  # whole minutes
    discharge = admit + (stay * 3600).astype("timedelta64[s]")
    birth = (admit.astype("datetime64[D]") - np.round(age * 365.25).astype("timedelta64[D]"))
    wellness = admit - (rng.integers(30, 720, n) * 86400).astype("timedelta64[s]")

    pid = _uuids(rng, n)
    icu_id = _uuids(rng, n)
    well_id = _uuids(rng, n)
    org, prov, payer = _uuids(rng, 1)[0], _uuids(rng, 4), _uuids(rng, 3)
    pat_payer = payer[rng.integers(0, 3, n)]

    # --- patients.csv -------------------------------------------------------------
    first = np.array(_FIRST)[rng.integers(0, len(_FIRST), n)]
    last = np.array(_LAST)[rng.integers(0, len(_LAST), n)]
    digits = rng.integers(100, 999, (n, 2))
    expenses = np.round(rng.lognormal(11.5, 0.8, n), 2)
    patients = pd.DataFrame({
        "Id": pid,
        "BIRTHDATE": _day(birth),
        "DEATHDATE": np.where(died, _day(discharge), ""),
        "SSN": [f"{'000' if mock else '999'}-{x:02d}-{y:04d}" for x, y in zip(rng.integers(10, 99, n), rng.integers(1000, 9999, n))],
        "DRIVERS": [f"{'M' if mock else 'S'}999{x:05d}" for x in rng.integers(10000, 99999, n)],
        "PASSPORT": [f"{'M' if mock else 'X'}{x:08d}X" for x in rng.integers(10**7, 10**8 - 1, n)],
        "PREFIX": np.where(male, "Mr.", "Ms."),
        "FIRST": [f"{f}{d}" for f, d in zip(first, digits[:, 0])],
        "MIDDLE": "",
        "LAST": [f"{s}{d}" for s, d in zip(last, digits[:, 1])],
        "SUFFIX": "",
        "MAIDEN": "",
        "MARITAL": np.array(["M", "S", "D", "W"])[rng.choice(4, n, p=[0.5, 0.25, 0.12, 0.13])],
        "RACE": race,
        "ETHNICITY": np.where(hispanic, "hispanic", "nonhispanic"),
        "GENDER": np.where(male, "M", "F"),
        "BIRTHPLACE": f"{location.city}  {location.state}  US",
        "ADDRESS": [f"{h} {s}" for h, s in zip(rng.integers(1, 999, n), np.array(_STREETS)[rng.integers(0, len(_STREETS), n)])],
        "CITY": location.city,
        "STATE": location.state,
        "COUNTY": location.county,
        "FIPS": location.fips,
        "ZIP": [f"{location.zip_prefix}{z:02d}" for z in rng.integers(0, 99, n)],
        "LAT": np.round(location.lat + rng.normal(0, 0.05, n), 6),
        "LON": np.round(location.lon + rng.normal(0, 0.05, n), 6),
        "HEALTHCARE_EXPENSES": expenses,
        "HEALTHCARE_COVERAGE": np.round(expenses * rng.uniform(0.2, 0.9, n), 2),
        "INCOME": rng.integers(15000, 150000, n),
    })

    # --- encounters.csv -----------------------------------------------------------
    reason_codes = np.array([codes.ADMISSION_REASONS[r].code for r in reason], dtype=object)
    reason_desc = np.array([codes.ADMISSION_REASONS[r].description for r in reason], dtype=object)
    base_cost = np.round(rng.uniform(1500, 4000, n), 2)
    claim = np.round(base_cost * stay / 24 * rng.uniform(1.5, 3, n), 2)
    enc_icu = pd.DataFrame({
        "Id": icu_id, "START": _iso(admit), "STOP": _iso(discharge), "PATIENT": pid,
        "ORGANIZATION": org, "PROVIDER": prov[rng.integers(0, 4, n)], "PAYER": pat_payer,
        "ENCOUNTERCLASS": "inpatient", "CODE": codes.ENCOUNTER_ICU.code,
        "DESCRIPTION": codes.ENCOUNTER_ICU.description, "BASE_ENCOUNTER_COST": base_cost,
        "TOTAL_CLAIM_COST": claim, "PAYER_COVERAGE": np.round(claim * rng.uniform(0.5, 0.95, n), 2),
        "REASONCODE": reason_codes, "REASONDESCRIPTION": reason_desc,
    })
    enc_well = pd.DataFrame({
        "Id": well_id, "START": _iso(wellness), "STOP": _iso(wellness + np.timedelta64(1800, "s")),
        "PATIENT": pid, "ORGANIZATION": org, "PROVIDER": prov[rng.integers(0, 4, n)], "PAYER": pat_payer,
        "ENCOUNTERCLASS": "wellness", "CODE": codes.ENCOUNTER_WELLNESS.code,
        "DESCRIPTION": codes.ENCOUNTER_WELLNESS.description, "BASE_ENCOUNTER_COST": 136.8,
        "TOTAL_CLAIM_COST": 136.8, "PAYER_COVERAGE": 109.44, "REASONCODE": "", "REASONDESCRIPTION": "",
    })
    encounters = pd.concat([enc_well, enc_icu], ignore_index=True)

    # --- conditions.csv -----------------------------------------------------------
    cond_parts = []
    for name, flags in comorb.items():
        idx = np.flatnonzero(flags)
        c = codes.COMORBIDITIES[name]
        cond_parts.append(pd.DataFrame({"START": _day(wellness[idx]), "STOP": "", "PATIENT": pid[idx],
                                        "ENCOUNTER": well_id[idx], "SYSTEM": "SNOMED-CT", "CODE": c.code,
                                        "DESCRIPTION": c.description}))
    cond_parts.append(pd.DataFrame({"START": _day(admit), "STOP": _day(discharge), "PATIENT": pid,
                                    "ENCOUNTER": icu_id, "SYSTEM": "SNOMED-CT", "CODE": reason_codes,
                                    "DESCRIPTION": reason_desc}))
    s_idx = np.flatnonzero(septic)
    onset_ts = admit + (np.maximum(onset, 0) * 3600).astype("timedelta64[s]")
    for c, idx in ((codes.SEPSIS, s_idx), (codes.SEPTIC_SHOCK, np.flatnonzero(shock))):
        cond_parts.append(pd.DataFrame({"START": _day(onset_ts[idx]), "STOP": _day(discharge[idx]),
                                        "PATIENT": pid[idx], "ENCOUNTER": icu_id[idx], "SYSTEM": "SNOMED-CT",
                                        "CODE": c.code, "DESCRIPTION": c.description}))
    conditions = pd.concat(cond_parts, ignore_index=True)

    # --- observations.csv ---------------------------------------------------------
    pi, hi = np.nonzero(valid)
    jitter = rng.integers(-600, 601, pi.size).astype("timedelta64[s]")
    vt = admit[pi] + (hi * 3600).astype("timedelta64[s]") + jitter
    vt_iso = _iso(vt)
    series = {"heart_rate": hr, "respiratory_rate": rr, "temperature": temp, "systolic_bp": sbp, "spo2": spo2,
              "wbc": wbc, "lactate": lactate, "creatinine": creat}
    decimals = {"temperature": 1, "wbc": 1, "lactate": 1, "creatinine": 2}
    lab_rows = (hi % _LAB_EVERY_H) == 0
    obs_parts = []
    for name, values in series.items():
        meta = codes.VITALS.get(name) or codes.LABS[name]
        rows = slice(None) if name in codes.VITALS else lab_rows
        v = np.round(values[pi[rows], hi[rows]], decimals.get(name, 0))
        obs_parts.append(pd.DataFrame({
            "DATE": vt_iso[rows], "PATIENT": pid[pi[rows]], "ENCOUNTER": icu_id[pi[rows]],
            "CATEGORY": meta.category, "CODE": meta.code, "DESCRIPTION": meta.description,
            "VALUE": v.astype(str), "UNITS": meta.units, "TYPE": "numeric"}))
    observations = pd.concat(obs_parts, ignore_index=True)
    order = np.lexsort((observations["CODE"].to_numpy(), observations["DATE"].to_numpy()))
    observations = observations.iloc[order].reset_index(drop=True)

    # --- medications.csv ----------------------------------------------------------
    med_parts = []

    def meds(idx, med, start, stop, dispenses, base):
        c = codes.MEDICATIONS[med]
        cost = np.round(np.full(idx.size, base), 2)
        med_parts.append(pd.DataFrame({
            "START": _iso(start[idx]), "STOP": _iso(stop[idx]) if stop is not None else "", "PATIENT": pid[idx],
            "PAYER": pat_payer[idx], "ENCOUNTER": (icu_id if start is not wellness else well_id)[idx],
            "CODE": c.code, "DESCRIPTION": c.description, "BASE_COST": cost,
            "PAYER_COVERAGE": np.round(cost * 0.8, 2), "DISPENSES": dispenses,
            "TOTALCOST": np.round(cost * dispenses, 2), "REASONCODE": "", "REASONDESCRIPTION": ""}))

    meds(np.flatnonzero(comorb["diabetes"]), "metformin", wellness, None, 12, 31.5)
    meds(np.flatnonzero(comorb["hypertension"]), "lisinopril", wellness, None, 12, 12.4)
    meds(np.flatnonzero(comorb["hypertension"] & comorb["ckd"]), "amlodipine", wellness, None, 12, 9.8)
    meds(np.flatnonzero(reason == "heart_failure_exacerbation"), "furosemide", admit, discharge, 4, 18.2)
    meds(np.flatnonzero((temp > 38).any(axis=1)), "acetaminophen", admit, discharge, 6, 2.1)
    abx_start = onset_ts + np.timedelta64(3600, "s")
    meds(s_idx, "piperacillin_tazobactam", abx_start, discharge, 8, 42.7)
    meds(np.flatnonzero(shock), "norepinephrine", abx_start, discharge, 3, 88.0)
    medications = pd.concat(med_parts, ignore_index=True)

    # --- procedures.csv -----------------------------------------------------------
    proc_parts = []

    def procs(idx, c, start, minutes, base):
        proc_parts.append(pd.DataFrame({
            "START": _iso(start[idx]), "STOP": _iso(start[idx] + np.timedelta64(minutes * 60, "s")),
            "PATIENT": pid[idx], "ENCOUNTER": icu_id[idx], "SYSTEM": "SNOMED-CT", "CODE": c.code,
            "DESCRIPTION": c.description, "BASE_COST": base, "REASONCODE": reason_codes[idx],
            "REASONDESCRIPTION": reason_desc[idx]}))

    procs(np.flatnonzero(infection | septic), codes.PROCEDURE_BLOOD_CULTURE, np.where(septic, onset_ts, admit), 15, 152.3)
    procs(np.flatnonzero(reason == "respiratory_failure"), codes.PROCEDURE_VENTILATION, admit, 240, 1210.0)
    procs(np.flatnonzero(comorb["ckd"] & (creat.max(axis=1) > 3.0)), codes.PROCEDURE_HEMODIALYSIS, admit, 240, 870.0)
    procedures = pd.concat(proc_parts, ignore_index=True)

    tables = {"patients": patients, "encounters": encounters, "conditions": conditions,
              "observations": observations, "medications": medications, "procedures": procedures}
    return SyntheaExport({t: f[COLUMNS[t]] for t, f in tables.items()})

"""A synthetic oncology real-world-evidence extract: advanced lung cancer patients, their
tumour biomarkers, first-line treatment (an investigational targeted drug or standard
chemotherapy) and objective response.

The extract is what a hospital's EHR export looks like *before* de-identification: names,
addresses, ZIP codes, exact dates, phone, e-mail, MRN and a clinical note are present,
so the site's Safe Harbor check has something to catch (``datasites.rwe_asset`` turns it
into the research asset). The truth the analytics should recover: the drug works much
better in EGFR-mutated tumours (odds ratio about 3.3 for response among treated patients)
and somewhat better with high PD-L1; KRAS mutations predict worse response.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["generate_rwe", "BIOMARKERS", "TRUE_EFFECTS", "REGION_PREVALENCE"]

BIOMARKERS = ("egfr", "kras", "alk", "pdl1_high", "tmb_high")
REGION_PREVALENCE = {  # share of tumours carrying each marker, by region (lung adenocarcinoma-like)
    "EU": {"egfr": 0.14, "kras": 0.30, "alk": 0.05, "pdl1_high": 0.28, "tmb_high": 0.22},
    "US": {"egfr": 0.18, "kras": 0.26, "alk": 0.05, "pdl1_high": 0.32, "tmb_high": 0.25},
}
TRUE_EFFECTS = {"intercept": -1.0, "treated": 0.2, "treated:egfr": 1.2, "treated:pdl1_high": 0.5,
                "kras": -0.5, "stage": -0.35, "age_per_decade": -0.15}

_FIRST = ["Anna", "Pieter", "Marie", "Lucas", "Sophie", "Jan", "Emma", "Thomas", "Julia", "David", "Sarah",
          "Michael", "Laura", "Daniel", "Lisa", "James", "Claire", "Paul", "Eva", "Mark"]
_LAST = ["Jansen", "de Vries", "Martin", "Bernard", "Smith", "Johnson", "Dubois", "Bakker", "Miller", "Davis",
         "Moreau", "Visser", "Wilson", "Garcia", "Laurent", "Meijer", "Brown", "Lefebvre", "Taylor", "Clark"]
_STREETS = ["Main Street", "Oak Avenue", "Church Road", "Park Lane", "Station Road", "Elm Drive", "Mill Way"]


def generate_rwe(site: str, *, n: int, region: str, seed: int, treated_share: float = 0.5) -> pd.DataFrame:
    """``n`` patients of one hospital, as a raw (identified) EHR extract."""
    if region not in REGION_PREVALENCE:
        raise ValueError(f"region must be one of {sorted(REGION_PREVALENCE)}, got {region!r}")
    if n < 1:
        raise ValueError("n must be positive")
    rng = np.random.default_rng([seed, sum(map(ord, site))])
    prevalence = REGION_PREVALENCE[region]
    age = np.clip(rng.normal(66, 10, n), 28, 97).round(1)
    male = rng.random(n) < 0.55
    stage = rng.choice([3, 4], size=n, p=[0.3, 0.7])
    markers = {m: rng.random(n) < p for m, p in prevalence.items()}
    markers["kras"] &= ~markers["egfr"]  # mutually exclusive drivers
    markers["alk"] &= ~(markers["egfr"] | markers["kras"])
    treated = rng.random(n) < treated_share + 0.15 * markers["egfr"]  # confounding by indication
    e = TRUE_EFFECTS
    logit = (e["intercept"] + e["treated"] * treated + e["treated:egfr"] * treated * markers["egfr"]
             + e["treated:pdl1_high"] * treated * markers["pdl1_high"] + e["kras"] * markers["kras"]
             + e["stage"] * (stage - 3) + e["age_per_decade"] * (age - 65) / 10)
    response = rng.random(n) < 1 / (1 + np.exp(-logit))
    diagnosed = pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")
    birth = diagnosed - pd.to_timedelta((age * 365.25).astype(int), unit="D")
    first = rng.choice(_FIRST, n)
    last = rng.choice(_LAST, n)
    zip_base = 10000 if region == "US" else 75000
    return pd.DataFrame({
        "mrn": [f"MRN{seed % 97:02d}{i:06d}" for i in range(n)],
        "patient_name": [f"{f} {l}" for f, l in zip(first, last)],
        "address": [f"{rng.integers(1, 400)} {rng.choice(_STREETS)}" for _ in range(n)],
        "zip": [f"{zip_base + int(z):05d}" for z in rng.integers(0, 9999, n)],
        "phone": [f"(617) 555-{int(p):04d}" for p in rng.integers(0, 9999, n)],
        "email": [f"{f.lower()}.{l.lower().replace(' ', '')}{i}@mail.example" for i, (f, l) in enumerate(zip(first, last))],
        "birth_date": birth, "diagnosis_date": diagnosed,
        "treatment_start": diagnosed + pd.to_timedelta(rng.integers(7, 40, n), unit="D"),
        "age": age, "sex": np.where(male, "M", "F"), "stage": stage,
        **{m: v.astype(int) for m, v in markers.items()},
        "treatment": np.where(treated, "drug-x", "standard"),
        "response": response.astype(int),
        "note": [f"{f} {l}, {a:.0f}y, stage {s} NSCLC; started {'drug-x' if t else 'platinum doublet'}; "
                 f"follow-up scan pending at clinic" for f, l, a, s, t in zip(first, last, age, stage, treated)],
    })

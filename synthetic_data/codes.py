"""Clinical code tables: SNOMED-CT (conditions, encounters, procedures), LOINC
(observations), RxNorm (medications). One place, so generator and cohort builder agree."""

from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    code: str
    description: str


# --- SNOMED-CT -----------------------------------------------------------------------
SEPSIS = Code("91302008", "Sepsis (disorder)")
SEPTIC_SHOCK = Code("76571007", "Septic shock (disorder)")

COMORBIDITIES: dict[str, Code] = {
    "diabetes": Code("44054006", "Diabetes mellitus type 2 (disorder)"),
    "hypertension": Code("59621000", "Essential hypertension (disorder)"),
    "ckd": Code("433144002", "Chronic kidney disease stage 3 (disorder)"),
    "copd": Code("13645005", "Chronic obstructive lung disease (disorder)"),
    "heart_failure": Code("88805009", "Chronic congestive heart failure (disorder)"),
    "cancer": Code("363346000", "Malignant neoplastic disease (disorder)"),
}

# Reason for the ICU admission; the first two are infections (higher sepsis risk).
ADMISSION_REASONS: dict[str, Code] = {
    "pneumonia": Code("233604007", "Pneumonia (disorder)"),
    "uti": Code("68566005", "Urinary tract infectious disease (disorder)"),
    "respiratory_failure": Code("65710008", "Acute respiratory failure (disorder)"),
    "heart_failure_exacerbation": Code("195111005", "Decompensated cardiac failure (disorder)"),
    "trauma": Code("417746004", "Traumatic injury (disorder)"),
    "post_operative": Code("397945004", "Unexpected postoperative complication (disorder)"),
}
INFECTIOUS_REASONS = ("pneumonia", "uti")

ENCOUNTER_ICU = Code("305351004", "Admission to intensive care unit (procedure)")
ENCOUNTER_WELLNESS = Code("162673000", "General examination of patient (procedure)")

PROCEDURE_BLOOD_CULTURE = Code("104177005", "Blood culture for bacteria, including anaerobic screen (procedure)")
PROCEDURE_VENTILATION = Code("40617009", "Artificial ventilation (regime/therapy)")
PROCEDURE_HEMODIALYSIS = Code("302497006", "Hemodialysis (procedure)")

# --- LOINC ---------------------------------------------------------------------------
class Loinc(NamedTuple):
    code: str
    description: str
    units: str
    category: str


VITALS: dict[str, Loinc] = {
    "heart_rate": Loinc("8867-4", "Heart rate", "/min", "vital-signs"),
    "respiratory_rate": Loinc("9279-1", "Respiratory rate", "/min", "vital-signs"),
    "temperature": Loinc("8310-5", "Body temperature", "Cel", "vital-signs"),
    "systolic_bp": Loinc("8480-6", "Systolic blood pressure", "mm[Hg]", "vital-signs"),
    "spo2": Loinc("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "vital-signs"),
}
LABS: dict[str, Loinc] = {
    "wbc": Loinc("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", "laboratory"),
    "lactate": Loinc("2524-7", "Lactate [Moles/volume] in Serum or Plasma", "mmol/L", "laboratory"),
    "creatinine": Loinc("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "laboratory"),
}
# Codes some hospitals use instead (a coding habit), with the factor to the canonical unit.
ALTERNATE_LOINC: dict[str, tuple[str, Loinc, float]] = {
    "32693-4": ("lactate", Loinc("32693-4", "Lactate [Moles/volume] in Blood", "mmol/L", "laboratory"), 1.0),
    "14682-9": ("creatinine", Loinc("14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "umol/L", "laboratory"), 1 / 88.42),
    "2708-6": ("spo2", Loinc("2708-6", "Oxygen saturation in Arterial blood", "%", "vital-signs"), 1.0),
}
CREATININE_UMOL_PER_MGDL = 88.42

# --- RxNorm --------------------------------------------------------------------------
MEDICATIONS: dict[str, Code] = {
    "metformin": Code("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    "lisinopril": Code("314076", "lisinopril 10 MG Oral Tablet"),
    "amlodipine": Code("197361", "Amlodipine 5 MG Oral Tablet"),
    "furosemide": Code("1719286", "10 ML Furosemide 10 MG/ML Injection"),
    "acetaminophen": Code("313782", "Acetaminophen 325 MG Oral Tablet"),
    "piperacillin_tazobactam": Code("1659131", "piperacillin 2000 MG / tazobactam 250 MG Injection"),
    "norepinephrine": Code("242969", "4 ML norepinephrine 1 MG/ML Injection"),
}

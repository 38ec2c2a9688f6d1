"""Synthea v3 CSV export layout: file names, exact column names and column types.

Column names are those of Synthea's ``CSVConstants`` (v3). Types drive the loader's
validation; the generator writes exactly these columns in this order.
"""

from __future__ import annotations

TABLES = ("patients", "encounters", "conditions", "observations", "medications", "procedures")

# column -> type; types: id, date (YYYY-MM-DD), datetime (ISO 8601), str, float, int
SCHEMA: dict[str, dict[str, str]] = {
    "patients": {
        "Id": "id", "BIRTHDATE": "date", "DEATHDATE": "date", "SSN": "str", "DRIVERS": "str",
        "PASSPORT": "str", "PREFIX": "str", "FIRST": "str", "MIDDLE": "str", "LAST": "str",
        "SUFFIX": "str", "MAIDEN": "str", "MARITAL": "str", "RACE": "str", "ETHNICITY": "str",
        "GENDER": "str", "BIRTHPLACE": "str", "ADDRESS": "str", "CITY": "str", "STATE": "str",
        "COUNTY": "str", "FIPS": "str", "ZIP": "str", "LAT": "float", "LON": "float",
        "HEALTHCARE_EXPENSES": "float", "HEALTHCARE_COVERAGE": "float", "INCOME": "float",
    },
    "encounters": {
        "Id": "id", "START": "datetime", "STOP": "datetime", "PATIENT": "id",
        "ORGANIZATION": "id", "PROVIDER": "id", "PAYER": "id", "ENCOUNTERCLASS": "str",
        "CODE": "str", "DESCRIPTION": "str", "BASE_ENCOUNTER_COST": "float",
        "TOTAL_CLAIM_COST": "float", "PAYER_COVERAGE": "float", "REASONCODE": "str",
        "REASONDESCRIPTION": "str",
    },
    "conditions": {
        "START": "date", "STOP": "date", "PATIENT": "id", "ENCOUNTER": "id", "SYSTEM": "str",
        "CODE": "str", "DESCRIPTION": "str",
    },
    "observations": {
        "DATE": "datetime", "PATIENT": "id", "ENCOUNTER": "id", "CATEGORY": "str",
        "CODE": "str", "DESCRIPTION": "str", "VALUE": "str", "UNITS": "str", "TYPE": "str",
    },
    "medications": {
        "START": "datetime", "STOP": "datetime", "PATIENT": "id", "PAYER": "id",
        "ENCOUNTER": "id", "CODE": "str", "DESCRIPTION": "str", "BASE_COST": "float",
        "PAYER_COVERAGE": "float", "DISPENSES": "int", "TOTALCOST": "float",
        "REASONCODE": "str", "REASONDESCRIPTION": "str",
    },
    "procedures": {
        "START": "datetime", "STOP": "datetime", "PATIENT": "id", "ENCOUNTER": "id",
        "SYSTEM": "str", "CODE": "str", "DESCRIPTION": "str", "BASE_COST": "float",
        "REASONCODE": "str", "REASONDESCRIPTION": "str",
    },
}

COLUMNS: dict[str, list[str]] = {table: list(cols) for table, cols in SCHEMA.items()}

# Columns a value is mandatory in (the rest may be blank, as in real Synthea output).
REQUIRED_VALUES: dict[str, tuple[str, ...]] = {
    "patients": ("Id", "BIRTHDATE", "GENDER"),
    "encounters": ("Id", "START", "PATIENT", "ENCOUNTERCLASS", "CODE"),
    "conditions": ("START", "PATIENT", "CODE"),
    "observations": ("DATE", "PATIENT", "CODE"),
    "medications": ("START", "PATIENT", "CODE"),
    "procedures": ("START", "PATIENT", "CODE"),
}

# Columns that exports from Synthea before v3 lack; the loader names them.
PRE_V3_MISSING: dict[str, tuple[str, ...]] = {
    "patients": ("MIDDLE", "FIPS", "INCOME"),
    "conditions": ("SYSTEM",),
    "procedures": ("SYSTEM",),
    "observations": ("CATEGORY",),
}

# Identifier-bearing columns: never leave a site, never copied into a mock.
IDENTIFIER_COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("Id", "SSN", "DRIVERS", "PASSPORT", "FIRST", "MIDDLE", "LAST", "MAIDEN",
                 "ADDRESS", "ZIP", "LAT", "LON", "BIRTHDATE"),
}

TABLES_DESCRIPTION: dict[str, str] = {
    "patients": "One row per patient: demographics and (direct) identifiers.",
    "encounters": "Wellness visits and ICU admissions (SNOMED 305351004), with admission reason.",
    "conditions": "SNOMED-CT diagnoses: comorbidities, admission reason, sepsis (91302008).",
    "observations": "LOINC vitals (hourly) and labs (4-hourly) during the ICU stay.",
    "medications": "RxNorm medications: chronic drugs, antibiotics, vasopressors.",
    "procedures": "SNOMED-CT procedures: blood cultures, ventilation, dialysis.",
}

"""Synthea-format synthetic ICU patients: generate, load, build cohorts, split into hospitals."""

from .cohort import Cohort, build_cohort
from .export import SyntheaExport
from .generator import Location, generate_population
from .schema import TABLES, TABLES_DESCRIPTION
from .loader import SyntheaValidationError, load_synthea
from .partition import HospitalProfile, describe_hospitals, make_mock, partition_hospitals

__all__ = [
    "generate_population", "load_synthea", "SyntheaValidationError", "SyntheaExport",
    "build_cohort", "Cohort", "HospitalProfile", "Location", "partition_hospitals",
    "describe_hospitals", "make_mock",
]

"""Synthea-format synthetic ICU patients: generate, load, build cohorts, split into hospitals.

Also synthetic BraTS-shaped brain MRI (``synthetic_data.imaging``), imported on first use so
the tabular path does not load nibabel.
"""

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
    # imaging (lazy)
    "MODALITIES", "ImagingProfile", "CENTRES", "ImagingCohort", "ImagingDataError", "generate_centre",
    "make_imaging_mock", "export_brats", "load_brats", "axial_slices", "split_cases",
]

_IMAGING = frozenset(__all__[__all__.index("MODALITIES"):])


def __getattr__(name: str):
    if name in _IMAGING:
        from . import imaging

        return getattr(imaging, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

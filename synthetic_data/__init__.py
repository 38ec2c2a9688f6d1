"""Synthea-format synthetic ICU patients: generate, load, build cohorts, split into hospitals.

Also synthetic BraTS-shaped brain MRI (``synthetic_data.imaging``). Names are imported on
first use, so the tabular path does not load nibabel and a spec's profile loads no pandas.
"""

from importlib import import_module

__all__ = [
    "generate_population", "load_synthea", "SyntheaValidationError", "SyntheaExport",
    "build_cohort", "Cohort", "HospitalProfile", "Location", "partition_hospitals",
    "describe_hospitals", "make_mock",
    # imaging (lazy)
    "MODALITIES", "ImagingProfile", "CENTRES", "ImagingCohort", "ImagingDataError", "generate_centre",
    "make_imaging_mock", "export_brats", "load_brats", "axial_slices", "split_cases",
]

_IMAGING = frozenset(__all__[__all__.index("MODALITIES"):])
_WHERE = {"Cohort": "cohort", "build_cohort": "cohort", "SyntheaExport": "export", "generate_population": "generator",
          "Location": "profile", "HospitalProfile": "profile", "TABLES": "schema", "TABLES_DESCRIPTION": "schema",
          "SyntheaValidationError": "loader", "load_synthea": "loader", "describe_hospitals": "partition",
          "make_mock": "partition", "partition_hospitals": "partition", **{n: "imaging" for n in _IMAGING}}


def __getattr__(name: str):  # loaded on first use: reading a spec needs none of NumPy / pandas / nibabel
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

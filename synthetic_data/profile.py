"""What makes a simulated hospital what it is: plain data, no NumPy or pandas, so reading
a hospital's spec (every ``medsyft`` command does) stays fast."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import codes

__all__ = ["Location", "HospitalProfile", "DEFAULT_LOCATION"]


@dataclass(frozen=True)
class Location:
    """Where a population lives (fills Synthea's address columns)."""

    city: str
    state: str
    county: str
    fips: str
    zip_prefix: str  # first three digits; the generator adds two
    lat: float
    lon: float


DEFAULT_LOCATION = Location("Boston", "Massachusetts", "Suffolk County", "25025", "021", 42.36, -71.06)


@dataclass(frozen=True)
class HospitalProfile:
    """What makes one simulated hospital different from the others."""

    name: str
    share: float = 1.0
    age_preference: float = 0.0
    prevalence_odds: float = 1.0
    location: Location = field(default=DEFAULT_LOCATION)
    creatinine_unit: str = "mg/dL"  # or "umol/L"
    lactate_loinc: str = codes.LABS["lactate"].code  # or "32693-4"
    spo2_offset: float = 0.0

    def __post_init__(self):
        if self.share <= 0:
            raise ValueError(f"{self.name}: share must be positive, got {self.share}")
        if self.prevalence_odds <= 0:
            raise ValueError(f"{self.name}: prevalence_odds must be positive, got {self.prevalence_odds}")
        if self.creatinine_unit not in ("mg/dL", "umol/L"):
            raise ValueError(f"{self.name}: creatinine_unit must be 'mg/dL' or 'umol/L', got {self.creatinine_unit!r}")
        if self.lactate_loinc not in (codes.LABS["lactate"].code, "32693-4"):
            raise ValueError(f"{self.name}: lactate_loinc must be '2524-7' or '32693-4', got {self.lactate_loinc!r}")

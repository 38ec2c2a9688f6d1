"""From a Synthea export to model inputs: one row per ICU stay (first stay per patient).

Tabular features (demographics, comorbidities, window summaries of vitals and labs) and
fixed-length hourly sequences over the first ``window_hours`` of the stay, for an LSTM.
Units and alternate LOINC codes are harmonised here, so a hospital's coding habit does
not silently change a feature's meaning; sensor offsets are left as they are (they are
real measurement differences).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import codes
from .export import SyntheaExport

__all__ = ["Cohort", "build_cohort", "SEQUENCE_FEATURES"]

SEQUENCE_FEATURES = tuple(list(codes.VITALS) + list(codes.LABS))
_CODE_TO_FEATURE = {m.code: (name, 1.0) for name, m in {**codes.VITALS, **codes.LABS}.items()}
_CODE_TO_FEATURE.update({code: (name, factor) for code, (name, _, factor) in codes.ALTERNATE_LOINC.items()})
_SEPSIS_CODES = {codes.SEPSIS.code, codes.SEPTIC_SHOCK.code}
_INFECTION_CODES = {codes.ADMISSION_REASONS[r].code for r in codes.INFECTIOUS_REASONS}


@dataclass
class Cohort:
    """Model-ready cohort; row ``i`` of every array is the same patient."""

    patient_ids: np.ndarray
    tabular: pd.DataFrame
    sequences: np.ndarray  # float32, (patients, window_hours, len(SEQUENCE_FEATURES))
    labels: np.ndarray  # int64, 1 = sepsis during the stay

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def prevalence(self) -> float:
        return float(self.labels.mean()) if len(self) else float("nan")

    def take(self, idx: np.ndarray) -> "Cohort":
        return Cohort(self.patient_ids[idx], self.tabular.iloc[idx], self.sequences[idx], self.labels[idx])

    def split(self, *, test_fraction: float = 0.25, seed: int = 0) -> tuple["Cohort", "Cohort"]:
        """Patient-level split, stratified by label (each patient is in exactly one part)."""
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
        rng = np.random.default_rng(seed)
        test = []
        for label in (0, 1):
            idx = np.flatnonzero(self.labels == label)
            rng.shuffle(idx)
            test.extend(idx[: int(round(len(idx) * test_fraction))])
        is_test = np.zeros(len(self), bool)
        is_test[test] = True
        return self.take(np.flatnonzero(~is_test)), self.take(np.flatnonzero(is_test))


def _icu_stays(export: SyntheaExport) -> pd.DataFrame:
    enc = export["encounters"]
    stays = enc[(enc["CODE"] == codes.ENCOUNTER_ICU.code) | (enc["ENCOUNTERCLASS"] == "inpatient")]
    stays = stays[stays["Id"].isin(export["observations"]["ENCOUNTER"])]
    if stays.empty:
        raise ValueError("no ICU / inpatient encounters with observations in this export; the cohort needs "
                         "inpatient stays with charted vitals (LOINC 8867-4, 9279-1, 8310-5, 8480-6, 59408-5)")
    return stays.sort_values("START").drop_duplicates("PATIENT").reset_index(drop=True)


def build_cohort(export: SyntheaExport, *, window_hours: int = 12) -> Cohort:
    """Build the sepsis cohort from a loaded export (see :func:`load_synthea`)."""
    if window_hours < 1:
        raise ValueError(f"window_hours must be at least 1, got {window_hours}")
    stays = _icu_stays(export)
    n, F = len(stays), len(SEQUENCE_FEATURES)
    pos = pd.Series(np.arange(n), index=stays["Id"].to_numpy())
    start = pd.Series(stays["START"].to_numpy(), index=stays["Id"].to_numpy())

    # hourly grid of the first window_hours
    obs = export["observations"]
    obs = obs[obs["ENCOUNTER"].isin(pos.index) & obs["CODE"].isin(_CODE_TO_FEATURE.keys())]
    feat = obs["CODE"].map(lambda c: _CODE_TO_FEATURE[c][0])
    factor = obs["CODE"].map(lambda c: _CODE_TO_FEATURE[c][1]).astype(float)
    umol = (feat == "creatinine") & (obs["UNITS"] == "umol/L") & (obs["CODE"] == codes.LABS["creatinine"].code)
    factor = factor.where(~umol, 1 / codes.CREATININE_UMOL_PER_MGDL)
    value = pd.to_numeric(obs["VALUE"], errors="coerce") * factor
    hour = np.round((obs["DATE"] - obs["ENCOUNTER"].map(start)).dt.total_seconds() / 3600).astype(int)
    keep = (hour >= 0) & (hour < window_hours) & value.notna()
    grid = np.full((n, window_hours, F), np.nan)
    fidx = feat[keep].map({f: i for i, f in enumerate(SEQUENCE_FEATURES)}).to_numpy()
    sidx = obs["ENCOUNTER"][keep].map(pos).to_numpy()
    # mean of repeated measurements in an hour
    sums = np.zeros_like(grid)
    counts = np.zeros_like(grid)
    np.add.at(sums, (sidx, hour[keep].to_numpy(), fidx), value[keep].to_numpy())
    np.add.at(counts, (sidx, hour[keep].to_numpy(), fidx), 1)
    grid = np.divide(sums, counts, out=grid, where=counts > 0)
    raw = grid.copy()
    # carry the last value forward, then fill never-measured with the cohort median
    for t in range(1, window_hours):
        gap = np.isnan(grid[:, t])
        grid[:, t][gap] = grid[:, t - 1][gap]
    medians = np.nanmedian(raw.reshape(-1, F), axis=0)
    medians = np.where(np.isnan(medians), 0.0, medians)
    grid = np.where(np.isnan(grid), medians[None, None, :], grid)

    # tabular features
    pats = export["patients"].set_index("Id")
    admit = stays["START"].dt.tz_localize(None)
    birth = stays["PATIENT"].map(pats["BIRTHDATE"])
    tab = pd.DataFrame(index=pd.Index(stays["PATIENT"].to_numpy(), name="patient"))
    tab["age"] = ((admit - birth).dt.days / 365.25).to_numpy()
    tab["male"] = (stays["PATIENT"].map(pats["GENDER"]) == "M").astype(float).to_numpy()
    cond = export["conditions"]
    for name, c in codes.COMORBIDITIES.items():
        has = cond[(cond["CODE"] == c.code)]["PATIENT"].unique()
        tab[name] = stays["PATIENT"].isin(has).astype(float).to_numpy()
    tab["infection_on_admission"] = stays["REASONCODE"].isin(_INFECTION_CODES).astype(float).to_numpy()
    with np.errstate(all="ignore"):
        for i, f in enumerate(SEQUENCE_FEATURES):
            tab[f"{f}_mean"] = grid[:, :, i].mean(axis=1)
            tab[f"{f}_min"] = grid[:, :, i].min(axis=1)
            tab[f"{f}_max"] = grid[:, :, i].max(axis=1)
            tab[f"{f}_last"] = grid[:, -1, i]

    sepsis = cond[cond["CODE"].isin(_SEPSIS_CODES)]
    labels = (stays["Id"].isin(sepsis["ENCOUNTER"]) | stays["PATIENT"].isin(sepsis[sepsis["ENCOUNTER"].isna()]["PATIENT"]))
    return Cohort(stays["PATIENT"].to_numpy(), tab, grid.astype(np.float32), labels.to_numpy().astype(np.int64))

"""The analysis-ready cohort a hospital publishes next to its Synthea tables.

One row per ICU patient: the fixed train/test split the data owner chose, the label,
9 static covariates and the first 12 hourly values of 8 charted variables (float32; window
summaries are derived from these by the models, which keeps the asset small - Syft walks
its serialised bytes on every job call). No patient identifiers. The constant ``site_uid`` column names the datasite, so a vetted job knows
which hospital's job-state store (privacy accountant, local layers) it runs against.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthetic_data import SyntheaExport, build_cohort
from synthetic_data.cohort import SEQUENCE_FEATURES

__all__ = ["cohort_frame", "sequence_columns", "split_rows", "check_frame", "COHORT_ASSET", "SPLIT_SEED", "STATIC_FEATURES"]

COHORT_ASSET = "sepsis_cohort"
META_COLUMNS = ("site_uid", "split", "label")
TEST_FRACTION = 0.25
STATIC_FEATURES = ("age", "male", "diabetes", "hypertension", "ckd", "copd", "heart_failure", "cancer",
                   "infection_on_admission")
SPLIT_SEED = 0  # the data owner's fixed split: every study evaluates on the same patients


def cohort_frame(export: SyntheaExport, *, site_uid: str, seed: int = 0) -> pd.DataFrame:
    """Build the cohort asset; the test split is patient-level and stratified by label."""
    cohort = build_cohort(export)
    train, test = cohort.split(test_fraction=TEST_FRACTION, seed=seed)
    parts = []
    for split, part in (("train", train), ("test", test)):
        frame = part.tabular[list(STATIC_FEATURES)].reset_index(drop=True).astype("float32")
        frame["age"] = np.where(frame["age"] >= 89, np.minimum(np.floor(frame["age"]), 90), frame["age"])  # Safe Harbor: 90+
        n, T, F = part.sequences.shape
        seq = pd.DataFrame(part.sequences.reshape(n, T * F).astype("float32"),
                           columns=[f"h{t:02d}_{f}" for t in range(T) for f in SEQUENCE_FEATURES])
        meta = pd.DataFrame({"site_uid": site_uid, "split": split, "label": part.labels.astype("int8")})
        parts.append(pd.concat([meta, frame, seq], axis=1))
    return pd.concat(parts, ignore_index=True)


def sequence_columns(frame: pd.DataFrame) -> list[list[str]]:
    """Column names per hour, each in ``SEQUENCE_FEATURES`` order."""
    hours = sorted({c[:3] for c in frame.columns if c[0] == "h" and c[1:3].isdigit()})
    if not hours:
        raise ValueError("this frame has no hourly columns (hNN_<feature>); is it the sepsis_cohort asset?")
    return [[f"{h}_{f}" for f in SEQUENCE_FEATURES] for h in hours]


def split_rows(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return frame[frame["split"] == split]


def check_frame(frame) -> pd.DataFrame:
    """The plain DataFrame behind a job argument (Syft hands jobs a wrapper whose every
    attribute access is intercepted, which makes column-by-column work slow)."""
    frame = getattr(frame, "syft_action_data", frame)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected the sepsis_cohort DataFrame, got {type(frame).__name__}")
    missing = [c for c in META_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"not a sepsis_cohort frame: missing columns {missing}")
    return frame


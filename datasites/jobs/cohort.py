"""Reading the cohort assets a vetted job is given: columns, splits, checks.

The assets themselves are built by the data owner (``datasites.cohort_asset``,
``datasites.rwe_asset``); a job only reads them, so only this side lives in the worker.
"""

from __future__ import annotations

import pandas as pd

from synthetic_data.cohort import SEQUENCE_FEATURES

__all__ = ["check_frame", "split_rows", "sequence_columns", "STATIC_FEATURES", "META_COLUMNS", "COHORT_ASSET"]

COHORT_ASSET = "sepsis_cohort"
META_COLUMNS = ("site_uid", "split", "label")
STATIC_FEATURES = ("age", "male", "diabetes", "hypertension", "ckd", "copd", "heart_failure", "cancer",
                   "infection_on_admission")


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
    """The plain DataFrame behind a job argument, checked to be a cohort asset."""
    frame = getattr(frame, "syft_action_data", frame)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected the sepsis_cohort DataFrame, got {type(frame).__name__}")
    missing = [c for c in META_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"not a sepsis_cohort frame: missing columns {missing}")
    return frame

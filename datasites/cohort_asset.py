"""The analysis-ready cohort a hospital publishes next to its Synthea tables.

One row per ICU patient: the fixed train/test split the data owner chose, the label,
9 static covariates and the first 12 hourly values of 8 charted variables (float32; window
summaries are derived from these by the models, which keeps the asset small - Syft walks
its serialised bytes on every job call). No patient identifiers. The constant ``site_uid``
column names the datasite the cohort belongs to (``mock`` for the mock twin).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthetic_data import SyntheaExport, build_cohort
from synthetic_data.cohort import SEQUENCE_FEATURES

from .jobs.cohort import COHORT_ASSET, STATIC_FEATURES

__all__ = ["cohort_frame", "COHORT_ASSET", "SPLIT_SEED"]

TEST_FRACTION = 0.25
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

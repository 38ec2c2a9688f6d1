"""A Synthea CSV export held in memory: one DataFrame per table, in Synthea's layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .schema import COLUMNS, TABLES


@dataclass
class SyntheaExport:
    """The six tables of a Synthea CSV export (``tables[name]`` is a DataFrame)."""

    tables: dict[str, pd.DataFrame]

    def __getitem__(self, table: str) -> pd.DataFrame:
        return self.tables[table]

    @property
    def n_patients(self) -> int:
        return len(self.tables["patients"])

    def write(self, directory: str | Path) -> Path:
        """Write ``<table>.csv`` files with Synthea's exact columns (deterministic bytes)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for table in TABLES:
            frame = self.tables[table]
            frame.to_csv(directory / f"{table}.csv", columns=COLUMNS[table], index=False,
                         lineterminator="\n")
        return directory

    def subset(self, patient_ids) -> "SyntheaExport":
        """The export restricted to some patients (every table filtered by patient)."""
        ids = pd.Index(patient_ids)
        out = {}
        for table, frame in self.tables.items():
            key = "Id" if table == "patients" else "PATIENT"
            out[table] = frame[frame[key].isin(ids)].reset_index(drop=True)
        return SyntheaExport(out)

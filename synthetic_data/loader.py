"""Read a Synthea CSV export directory (ours or a real Synthea run) through one path.

Validation collects every problem before failing, and each message says what to fix.
Nothing downstream (e.g. an upload to a datasite) happens unless the whole export is valid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .export import SyntheaExport
from .schema import PRE_V3_MISSING, REQUIRED_VALUES, SCHEMA, TABLES

__all__ = ["load_synthea", "SyntheaValidationError"]


class SyntheaValidationError(ValueError):
    """The export directory is not a valid Synthea v3 CSV export; ``problems`` lists why."""

    def __init__(self, directory: Path, problems: list[str]):
        self.directory = directory
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{directory} is not a valid Synthea CSV export:\n{lines}")


def _bad_rows(raw: pd.Series, parsed: pd.Series) -> pd.Index:
    return raw.index[(raw != "") & parsed.isna()]


def _parse(table: str, column: str, kind: str, raw: pd.Series, problems: list[str]) -> pd.Series:
    if kind == "date":
        parsed = pd.to_datetime(raw.where(raw != ""), format="%Y-%m-%d", errors="coerce")
        expect = "a date like 2024-03-01"
    elif kind == "datetime":
        parsed = pd.to_datetime(raw.where(raw != ""), format="ISO8601", errors="coerce", utc=True)
        expect = "an ISO 8601 time like 2024-03-01T08:15:00Z"
    elif kind in ("float", "int"):
        parsed = pd.to_numeric(raw.where(raw != ""), errors="coerce")
        parsed = parsed.where(np.isfinite(parsed.astype(float)))  # inf and NaN spelled out are bad input
        expect = "a finite number"
        if kind == "int":
            frac = parsed.notna() & (parsed % 1 != 0)
            parsed = parsed.where(~frac).astype("Int64")
            expect = "a whole number"
    else:
        return raw
    bad = _bad_rows(raw, parsed)
    if len(bad):
        row = int(bad[0]) + 2  # header is line 1
        problems.append(f"{table}.csv column {column}: {len(bad)} value(s) are not {expect} "
                        f"(first at line {row}); fix or blank them")
    return parsed


def _read_table(directory: Path, table: str, allow_pre_v3: bool, problems: list[str]) -> pd.DataFrame | None:
    path = directory / f"{table}.csv"
    if not path.is_file():
        problems.append(f"{table}.csv is missing; a Synthea export has {', '.join(t + '.csv' for t in TABLES)} "
                        "(run Synthea with exporter.csv.export = true, or `medsyft data generate`)")
        return None
    if path.stat().st_size == 0:
        problems.append(f"{table}.csv is empty (0 bytes); re-export it, it needs at least the header line")
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    expected = list(SCHEMA[table])
    missing = [c for c in expected if c not in frame.columns]
    legacy = [c for c in missing if c in PRE_V3_MISSING.get(table, ())]
    if legacy and allow_pre_v3:
        for c in legacy:
            frame[c] = ""
        missing = [c for c in missing if c not in legacy]
    elif legacy:
        problems.append(f"{table}.csv lacks {', '.join(legacy)}: this looks like an export from Synthea "
                        "before v3; re-export with Synthea v3, or load with allow_pre_v3=True to fill them blank")
        missing = [c for c in missing if c not in legacy]
        if not missing:
            return None
    if missing:
        problems.append(f"{table}.csv is missing column(s) {', '.join(missing)} "
                        f"(Synthea v3 columns: {', '.join(expected)})")
        return None
    if table == "patients" and frame.empty:
        problems.append("patients.csv has a header but no patients; an export needs at least one patient")
    for column in REQUIRED_VALUES[table]:
        blank = frame.index[frame[column] == ""]
        if len(blank):
            problems.append(f"{table}.csv column {column}: {len(blank)} blank value(s) "
                            f"(first at line {int(blank[0]) + 2}); every row needs one")
    out = {}
    for column, kind in SCHEMA[table].items():
        out[column] = _parse(table, column, kind, frame[column], problems)
    if table == "observations":  # a numeric observation's VALUE must be a finite number
        numeric = frame["TYPE"] == "numeric"
        value = pd.to_numeric(frame["VALUE"].where(numeric & (frame["VALUE"] != "")), errors="coerce")
        bad = frame.index[numeric & (frame["VALUE"] != "") & ~np.isfinite(value.astype(float))]
        if len(bad):
            problems.append(f"observations.csv column VALUE: {len(bad)} numeric value(s) are not a finite number "
                            f"(first at line {int(bad[0]) + 2}); fix or blank them")
    return pd.DataFrame(out)


def load_synthea(directory: str | Path, *, allow_pre_v3: bool = False) -> SyntheaExport:
    """Load and validate a Synthea CSV export directory.

    Returns typed frames (dates and times as pandas timestamps, numbers as numbers,
    blanks as missing). Raises :class:`SyntheaValidationError` listing every problem.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SyntheaValidationError(directory, [f"{directory} is not a directory; point to the folder holding patients.csv etc."])
    problems: list[str] = []
    tables = {t: _read_table(directory, t, allow_pre_v3, problems) for t in TABLES}
    if not problems:
        ids = set(tables["patients"]["Id"])
        for t in TABLES[1:]:
            orphans = ~tables[t]["PATIENT"].isin(ids)
            if orphans.any():
                problems.append(f"{t}.csv: {int(orphans.sum())} row(s) name a PATIENT that is not in patients.csv "
                                f"(first at line {int(orphans.to_numpy().argmax()) + 2}); export all tables "
                                "from one run")
    if problems:
        raise SyntheaValidationError(directory, problems)
    for t, frame in tables.items():
        for column, kind in SCHEMA[t].items():
            if kind in ("str", "id"):
                if column not in REQUIRED_VALUES[t]:
                    frame[column] = frame[column].mask(frame[column] == "")
    return SyntheaExport(tables)  # type: ignore[arg-type]

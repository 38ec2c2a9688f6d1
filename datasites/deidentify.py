"""De-identification helpers for a research extract (HIPAA Safe Harbor style).

Each returns a new frame; none modifies its input. ``datasites.compliance.check_asset``
tells which of them an extract needs.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

__all__ = ["drop_direct_identifiers", "top_code_age", "zip3", "shift_dates", "year_only"]

DIRECT_IDENTIFIERS = ("name", "first", "last", "maiden", "address", "street", "phone", "email", "ssn",
                      "mrn", "drivers", "passport", "note", "text")
# ZIP3 areas with fewer than 20,000 people must become 000 (the Census list Safe Harbor cites)
SMALL_ZIP3 = {"036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878", "879",
              "884", "890", "893"}


def drop_direct_identifiers(frame: pd.DataFrame, *, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """Drop columns whose name marks a direct identifier (names, addresses, contacts, ids, free text)."""
    doomed = [c for c in frame.columns if c not in keep and any(w in str(c).lower() for w in DIRECT_IDENTIFIERS)]
    return frame.drop(columns=doomed)


def top_code_age(frame: pd.DataFrame, column: str = "age", *, top: int = 90) -> pd.DataFrame:
    """Ages over 89 become ``top`` (90 = "90 or older")."""
    out = frame.copy()
    out[column] = np.minimum(out[column].astype(float), float(top))
    out.loc[(out[column] > top - 1) & (out[column] < top), column] = float(top - 1)
    return out


def zip3(frame: pd.DataFrame, column: str = "zip", *, new: str = "zip3") -> pd.DataFrame:
    """Keep the first three ZIP digits ("000" for sparsely populated areas) and drop the full ZIP."""
    out = frame.copy()
    first3 = out[column].astype(str).str.extract(r"^(\d{3})", expand=False).fillna("000")
    out[new] = first3.where(~first3.isin(SMALL_ZIP3), "000")
    return out.drop(columns=[column])


def shift_dates(frame: pd.DataFrame, columns: list[str], *, patient: str, secret: bytes,
                max_days: int = 182) -> pd.DataFrame:
    """Shift every date of a patient by the same offset (from a keyed hash, within +-max_days):
    intervals between a patient's events survive, calendar dates do not."""
    def offset(pid) -> int:
        digest = hashlib.blake2b(str(pid).encode(), key=secret[:64], digest_size=8).digest()
        return int.from_bytes(digest, "big") % (2 * max_days + 1) - max_days

    out = frame.copy()
    days = pd.to_timedelta(out[patient].map(offset), unit="D")
    for c in columns:
        out[c] = pd.to_datetime(out[c]) + days
    return out


def year_only(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Replace dates by their year (an integer column named ``<column>_year``)."""
    out = frame.copy()
    for c in columns:
        out[f"{c}_year"] = pd.to_datetime(out[c]).dt.year.astype("int32")
    return out.drop(columns=columns)

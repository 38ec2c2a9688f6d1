"""Pre-training compliance checks at a hospital: schema, and HIPAA Safe Harbor identifiers.

``check_asset(frame)`` looks at every column, by name and by content, for the Safe Harbor
identifier types a research extract must not hold (45 CFR 164.514(b)(2)): names, street
addresses, full ZIP codes, dates more precise than the year, ages over 89, phone numbers,
e-mail addresses, SSNs, medical-record-like ids, and free text (which hides all of them).
The vetted jobs call ``require_compliant`` first, so training and analytics never run on an
asset that fails; ``datasites.deidentify`` (the data owner's side) has the fixes.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .site import Refused

__all__ = ["check_asset", "require_compliant", "ComplianceReport", "IdentifierFinding", "IDENTIFIER_TYPES"]

IDENTIFIER_TYPES = ("NAME", "ADDRESS", "ZIP", "DATE", "AGE_OVER_89", "PHONE", "EMAIL", "SSN", "MRN", "FREE_TEXT")

_PATTERNS = {  # checked on string values; a column is flagged when enough of its values match
    "SSN": re.compile(r"^\d{3}-\d{2}-\d{4}$"),
    "EMAIL": re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$"),
    "PHONE": re.compile(r"^(\+?1[-. ]?)?(\(\d{3}\)|\d{3})[-. ]?\d{3}[-. ]?\d{4}$|^\+\d{2}[\d -]{8,14}$"),
    "ZIP": re.compile(r"^\d{5}(-\d{4})?$"),
    "DATE": re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?|^\d{1,2}/\d{1,2}/\d{2,4}$"),
    "ADDRESS": re.compile(r"^\d+[A-Za-z]?\s+([A-Za-z'.-]+\s)+(Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|"
                          r"Boulevard|Blvd|Way|Court|Ct|Place|Pl|Straat|straat|weg|Rue|rue)\b", re.IGNORECASE),
    "MRN": re.compile(r"^(MRN|MR|PID)?[-: ]?\d{6,12}$|^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                      re.IGNORECASE),
    "NAME": re.compile(r"^[A-Z][a-z'-]+( [A-Z]\.?)?( [A-Z][a-z'-]+){1,2}\d*$"),
}
_NAME_COLUMNS = {
    "NAME": ("name", "first", "last", "surname", "given", "maiden", "prefix", "suffix"),
    "ADDRESS": ("address", "street"), "ZIP": ("zip", "postcode", "postal"), "PHONE": ("phone", "tel", "fax"),
    "EMAIL": ("email", "e_mail"), "SSN": ("ssn", "social"), "MRN": ("mrn", "record_number", "patient_id"),
}
_NAME_EXEMPT = ("zip3", "site", "split")


@dataclass(frozen=True)
class IdentifierFinding:
    column: str
    identifier: str  # one of IDENTIFIER_TYPES, or SCHEMA
    detail: str


@dataclass
class ComplianceReport:
    asset: str
    rows: int
    findings: list[IdentifierFinding] = field(default_factory=list)

    @property
    def compliant(self) -> bool:
        return not self.findings

    @property
    def identifiers(self) -> set[str]:
        return {f.identifier for f in self.findings}

    def __str__(self) -> str:
        head = f"compliance check of {self.asset!r} ({self.rows} rows): " + \
            ("PASS" if self.compliant else f"FAIL, {len(self.findings)} problem(s)")
        return "\n".join([head] + [f"  {f.identifier:<11} {f.column:<24} {f.detail}" for f in self.findings])

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(f.identifier)}</td><td><code>{html.escape(f.column)}</code></td>"
                       f"<td>{html.escape(f.detail)}</td></tr>" for f in self.findings)
        verdict = "PASS" if self.compliant else "FAIL"
        return (f"<div><b>{html.escape(self.asset)}</b>: {verdict} ({self.rows} rows)"
                + (f"<table><tr><th>identifier</th><th>column</th><th>detail</th></tr>{rows}</table>" if rows else "")
                + "</div>")


def _share(values: pd.Series, pattern: re.Pattern) -> float:
    return float(values.map(lambda v: bool(pattern.match(v))).mean()) if len(values) else 0.0


def _column_findings(name: str, col: pd.Series) -> list[IdentifierFinding]:
    out = []
    lower = name.lower()
    if any(lower == e or lower.endswith("_" + e) or lower.startswith(e) for e in _NAME_EXEMPT):
        return out
    for kind, words in _NAME_COLUMNS.items():
        if any(w in lower for w in words):
            out.append(IdentifierFinding(name, kind, f"column name suggests {kind.lower().replace('_', ' ')}"))
    if pd.api.types.is_datetime64_any_dtype(col):
        out.append(IdentifierFinding(name, "DATE", "full dates; keep the year only (or shift per patient)"))
    elif pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        if "age" in lower.split("_") or lower == "age":
            over = int((col > 90).sum()) + int(((col > 89) & (col < 90)).sum())
            if over:
                out.append(IdentifierFinding(name, "AGE_OVER_89", f"{over} ages over 89; top-code them at 90"))
    else:
        values = col.dropna().astype(str).str.strip()
        sample = values.sample(min(len(values), 500), random_state=0) if len(values) else values
        for kind, pattern in _PATTERNS.items():
            share = _share(sample, pattern)
            if share >= 0.5 and not (kind == "MRN" and values.nunique() < 0.5 * max(len(values), 1)):
                what = kind.lower().replace("_", " ")
                out.append(IdentifierFinding(name, kind, f"{share:.0%} of values look like {what} values"))
        words = sample.str.split().map(len) if len(sample) else sample
        if len(sample) and float(words.mean()) >= 6 and values.nunique() >= 0.5 * len(values):
            out.append(IdentifierFinding(name, "FREE_TEXT", f"free text (mean {float(words.mean()):.0f} words)"))
    return list({(f.identifier): f for f in out}.values())


def check_asset(frame: pd.DataFrame, *, name: str = "asset", schema: dict[str, str] | None = None) -> ComplianceReport:
    """Safe Harbor identifiers in ``frame`` and, given ``schema`` ({column: 'numeric'|'string'|...}),
    missing or mistyped columns."""
    frame = getattr(frame, "syft_action_data", frame)
    report = ComplianceReport(name, int(len(frame)))
    for column in frame.columns:
        report.findings.extend(_column_findings(str(column), frame[column]))
    for column, kind in (schema or {}).items():
        if column not in frame.columns:
            report.findings.append(IdentifierFinding(column, "SCHEMA", "required column is missing"))
        elif kind == "numeric" and not pd.api.types.is_numeric_dtype(frame[column]):
            report.findings.append(IdentifierFinding(column, "SCHEMA", f"expected numbers, found {frame[column].dtype}"))
        elif kind == "binary" and not set(np.unique(frame[column].dropna())) <= {0, 1}:
            report.findings.append(IdentifierFinding(column, "SCHEMA", "expected 0/1 values"))
    return report


def require_compliant(frame: pd.DataFrame, *, name: str = "asset", schema: dict[str, str] | None = None) -> None:
    """Refuse (with the report) to train or analyse on a non-compliant asset."""
    report = check_asset(frame, name=name, schema=schema)
    if not report.compliant:
        problems = "; ".join(f"{f.identifier} in {f.column}" for f in report.findings[:8])
        raise Refused(f"the {name} asset fails the site's compliance check ({problems}); "
                      "the data owner must de-identify it before any training or analytics")

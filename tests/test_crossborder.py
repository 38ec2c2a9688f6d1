"""The cross-border scenario end to end on four in-process datasites, and its report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from datasites.jobs.rwe import RWE_CELLS, rwe_cells
from federation.crossborder import odds_ratio, release_cells, run_cross_border
from federation.report import render_html


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("xb")
    return run_cross_border(base / "home", n_patients=300, rounds=1, results=base / "results", echo=lambda *_: None)


def _html_counts(page: str) -> list[str]:
    return re.findall(r'<td class="count">([^<]*)</td>', page)


def test_the_report_is_written_and_shows_no_cell_below_the_minimum(run):
    html_path, pdf_path = map(Path, run["report"])
    assert pdf_path.read_bytes()[:5] == b"%PDF-" and pdf_path.stat().st_size > 10_000
    page = html_path.read_text()
    counts = _html_counts(page)
    assert len(counts) >= 40
    assert all(c == "&lt;10" or int(c) >= 10 for c in counts), counts
    counts = {k: v for k, v in run["statistics"]["cells"].items() if not k.startswith("sum")}
    assert all(v is None or v >= 10 for v in counts.values())
    assert 55 < run["statistics"]["age"]["mean"] < 75 and 5 < run["statistics"]["age"]["sd"] < 15  # true 66 (10)
    assert set(run["statistics"]["cells"]) == set(RWE_CELLS)
    for site in ("amsterdam-umc", "boston-general"):  # the receipt names every site and its epsilon
        assert site in page
    assert "IRB-RWE-2026-042" in page and "Privacy receipt" in page


def test_only_regional_sums_crossed_and_the_custodian_decrypted_one_global_sum(run):
    regions = {s["name"]: s["region"] for s in run["sites"]}
    for flow in run["sovereignty"]["flows"]:
        if flow["from"] in regions:  # a hospital's own contribution stays in its region
            assert flow["to"] == f"{regions[flow['from']].lower()}-aggregator", flow
        else:
            assert flow["to"] == "global-aggregator"
    assert "would send its own contribution" in run["sovereignty"]["refused_plan"]
    (decryption,) = run["receipt"]["he"]["decryptions"]
    assert decryption["by"] == "global-aggregator" and len(decryption["sites"]) == 4


def test_privacy_receipt_matches_the_ledgers_and_audits_verify(run):
    from federation import StudyPlan

    plans = [StudyPlan.from_dict(p) for p in run["model"]["plans"].values()]
    planned = run["statistics"]["epsilon_per_site"] + max(p.epsilon + p.evaluation_epsilon for p in plans)
    for site, spent in run["receipt"]["epsilon"].items():
        assert 0 < spent["oncology-rwe"] <= planned + 1e-6, site
        # the receipt adds up: statistics + DP-SGD + evaluation = what the site's ledger was debited
        assert sum(run["receipt"]["breakdown"][site].values()) == pytest.approx(spent["oncology-rwe"], rel=1e-6)
    assert all(a["verified"] for a in run["receipt"]["audit"].values())
    expected = {"NAME", "ADDRESS", "ZIP", "DATE", "PHONE", "EMAIL", "MRN", "FREE_TEXT"}
    assert all(v["published"] and expected <= set(v["raw"]) for v in run["compliance"].values())
    assert all(len(items) == 3 and all(a["irb"] == "IRB-RWE-2026-042" for a in items)
               for items in run["receipt"]["approvals"].values())


def test_small_cells_are_suppressed_in_released_statistics_and_odds_ratios(run):
    import pandas as pd

    tiny = pd.DataFrame({"age": [55.0, 61.0, 70.0] * 5, "label": [1, 0, 0] * 5, "treated": [1.0, 0.0, 1.0] * 5,
                         "egfr": [1.0, 0.0, 0.0] * 5, "kras": 0.0, "alk": 0.0, "pdl1_high": 0.0, "tmb_high": 0.0})
    released = release_cells(rwe_cells(tiny))
    assert released["n"] == 15 and all(v is None or v >= 10 for k, v in released.items() if not k.startswith("sum"))
    assert release_cells({**rwe_cells(tiny.iloc[:5])})["sum_age_dev"] is None  # no sums of a suppressed cohort
    assert odds_ratio(None, 20, 30, 40)["or"] is None
    page = render_html({**run, "statistics": {**run["statistics"], "cells": released}})
    assert all(c == "&lt;10" or int(c) >= 10 for c in _html_counts(page))

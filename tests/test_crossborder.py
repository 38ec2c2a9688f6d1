"""The cross-border scenario end to end on four in-process datasites, and its report
(HTML, and the same page printed to PDF by headless Chromium)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from datasites.jobs.rwe import RWE_CELLS, rwe_cells
from federation.crossborder import (count_noise_sd, interaction_odds_ratio, odds_ratio, release_cells,
                                    run_cross_border, write_report_or_warn)
from federation.pdf import find_chromium
from federation.report import SECTIONS, render_html, report_from

A4 = (595.28, 841.89)  # points
needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed "
                                                                     "(apt-get install -y chromium)")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("xb")
    return run_cross_border(base / "home", n_patients=300, rounds=1, results=base / "results", echo=lambda *_: None)


def _html_counts(page: str) -> list[str]:
    return re.findall(r'<td class="count">([^<]*)</td>', page)


def _section(page: str, title: str) -> str:
    match = re.search(rf"<h2>{re.escape(title)}</h2>(.*?)</section>", page, re.S)
    assert match, f"no section {title!r}"
    return match.group(1)


def test_the_report_is_written_and_shows_no_cell_below_the_minimum(run):
    page = Path(run["report"][0]).read_text()
    counts = _html_counts(page)
    assert len(counts) >= 40
    assert all(c == "&lt;10" or int(c) >= 10 for c in counts), counts
    released = {str(v) for v in run["statistics"]["cells"].values() if v is not None}
    assert {c for c in counts if c != "&lt;10"} <= released  # only global noisy sums, no hospital's own count
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


def test_interaction_is_the_ratio_of_the_arms_odds_ratios_with_woolfs_interval():
    drug, control = (40, 20, 30, 60), (20, 40, 30, 30)  # OR 4 on drug-x, 0.5 on standard care
    got = interaction_odds_ratio(drug, control)
    se = (1 / 40 + 1 / 20 + 1 / 30 + 1 / 60 + 1 / 20 + 1 / 40 + 1 / 30 + 1 / 30) ** 0.5  # 0.5164
    assert got["ratio"] == pytest.approx(8.0)
    assert got["se_log"] == pytest.approx(0.516398, abs=1e-6)
    assert (got["low"], got["high"]) == pytest.approx((8 * np.exp(-1.96 * se), 8 * np.exp(1.96 * se)))
    assert (got["low"], got["high"]) == pytest.approx((2.9075, 22.0119), abs=1e-4)
    wider = interaction_odds_ratio(drug, control, noise_sd=10.0)  # the DP noise widens it, same estimate
    assert wider["ratio"] == pytest.approx(8.0) and wider["low"] < got["low"] and wider["high"] > got["high"]
    for hidden in ((None, 20, 30, 60), (40, 20, 0, 60)):  # suppressed or zero: no number is invented
        out = interaction_odds_ratio(hidden, control)
        assert out["ratio"] is None and out["low"] is None and out["note"].startswith("not estimable")
    with pytest.raises(ValueError, match="4 counts"):
        interaction_odds_ratio((1, 2, 3), control)
    with pytest.raises(ValueError, match="negative"):
        interaction_odds_ratio((40, -1, 30, 60), control)


def test_interaction_equals_the_interaction_term_of_a_logistic_regression():
    """response ~ drug + marker + drug:marker, fitted by maximum likelihood (scipy) on the 8
    cells: exp(interaction coefficient) and its Wald SE are the ratio of odds ratios and Woolf's."""
    from scipy.optimize import minimize

    drug, control = (57, 31, 112, 240), (23, 64, 95, 180)
    rows, weights, ys = [], [], []
    for treated, table in ((1, drug), (0, control)):
        for marker, responders, non in ((1, table[0], table[1]), (0, table[2], table[3])):
            for y, w in ((1, responders), (0, non)):
                rows.append([1.0, treated, marker, treated * marker])
                weights.append(w)
                ys.append(y)
    x, w, y = np.array(rows), np.array(weights, float), np.array(ys, float)

    def nll(beta):
        z = x @ beta
        return float(np.sum(w * (np.logaddexp(0, z) - y * z))), x.T @ (w * (1 / (1 + np.exp(-z)) - y))

    beta = minimize(nll, np.zeros(4), jac=True, method="BFGS", options={"gtol": 1e-10}).x
    p = 1 / (1 + np.exp(-(x @ beta)))
    se = np.sqrt(np.linalg.inv(x.T @ (x * (w * p * (1 - p))[:, None]))[3, 3])
    got = interaction_odds_ratio(drug, control)
    assert got["ratio"] == pytest.approx(np.exp(beta[3]), rel=1e-5)
    assert got["se_log"] == pytest.approx(se, rel=1e-4)


def test_the_report_answers_the_interaction_question_per_biomarker(run):
    from synthetic_data.oncology import BIOMARKERS

    page = Path(run["report"][0]).read_text()
    assert re.findall(r"<h2>(.*?)</h2>", page) == list(SECTIONS)
    section = _section(page, "Treatment x biomarker interaction")
    assert len(run["interactions"]) == len(BIOMARKERS)
    for r in run["interactions"]:
        row = re.search(rf"<tr><td>{re.escape(r['label'])}</td>(.*?)</tr>", section, re.S).group(1)
        if r["ratio"] is None:
            assert "not estimable" in row
        else:  # the estimate with both intervals
            assert re.search(r">\d+\.\d\d<", row) or "&lt;0.01" in row or "&gt;100" in row, row
            assert row.count("&ndash;") == 2 and r["low_dp"] <= r["low"] <= r["ratio"] <= r["high"] <= r["high_dp"]
    assert 'alt="forest plot of the treatment x biomarker interactions"' in section
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page))
    methods = _section(page, "Methods and limitations")
    sd = count_noise_sd(1.0, 4)  # Laplace scale 16 at each of 4 hospitals
    assert f"about <b>{sd:.0f} patients</b>" in methods and sd == pytest.approx(45.25, abs=0.01)
    for words in ("&lt;10", "do not add up", "not randomised", "associations"):
        assert words in methods


def test_the_report_records_run_approvals_deidentification_audit_and_budget(run):
    from importlib.metadata import version

    page = Path(run["report"][0]).read_text()
    canonical = json.dumps(run["plan"], sort_keys=True, separators=(",", ":")).encode()
    assert run["run"]["plan_sha256"] == hashlib.sha256(canonical).hexdigest()
    meta = _section(page, "Run")
    assert run["run"]["plan_sha256"] in meta and "matches the plan recorded" in meta
    assert version("syft") in meta and version("medsyft") in meta and re.search(r"\d{4}-\d\d-\d\dT", meta)
    approvals = _section(page, "Approvals")
    assert approvals.count("<tr><td>") == 12 and approvals.count("<td>low</td>") == 12  # 3 requests x 4 sites
    assert "IRB-RWE-2026-042" in approvals
    deid = _section(page, "De-identification")
    for site, c in run["compliance"].items():
        assert c["raw_problems"] >= len(c["raw"]) and c["published_problems"] == 0
        assert re.search(rf"<td>{site}</td><td>FAIL, {c['raw_problems']} problems</td>.*?PASS", deid)
    audit = _section(page, "Audit chain and privacy budget")
    for site, b in run["receipt"]["budget"].items():
        assert run["receipt"]["audit"][site]["verified"]
        assert b["remaining"] == pytest.approx(b["budget"] - b["spent"], abs=1e-6) and b["remaining"] > 0
        assert re.search(rf"<td>{site}</td><td><span class=\"ok\">intact</span>.*?>{b['remaining']:.2f}<", audit)


def test_an_older_summary_without_the_new_records_still_renders(run):
    old = {k: v for k, v in run.items() if k not in ("run", "plan", "interactions", "report")}
    old["statistics"] = {k: v for k, v in run["statistics"].items() if k != "noise"}
    old["receipt"] = {k: v for k, v in run["receipt"].items() if k not in ("reviews", "budget")}
    page = render_html(old)
    assert re.findall(r"<h2>(.*?)</h2>", page) == list(SECTIONS) and "not recorded" in page


@needs_chromium
def test_the_pdf_is_the_html_printed_on_a4_pages(run):
    from pypdf import PdfReader

    html_path, pdf_path = map(Path, run["report"])
    reader = PdfReader(pdf_path)
    assert len(reader.pages) >= 3
    for number, page in enumerate(reader.pages, 1):
        assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx(A4, abs=1.0), number
    text = " ".join(" ".join(p.extract_text().split()) for p in reader.pages)
    headings = [h.replace("&amp;", "&") for h in re.findall(r"<h2>(.*?)</h2>", html_path.read_text())]
    assert headings == list(SECTIONS)
    missing = [h for h in headings if h not in text]
    assert not missing, missing
    assert f"page 1 of {len(reader.pages)}" in text  # page numbers from the CSS margin boxes
    for r in run["interactions"]:
        assert r["label"] in text


def test_without_chromium_the_html_is_written_and_the_pdf_step_says_what_to_install(run, tmp_path, monkeypatch):
    import federation.pdf as pdf

    results = Path(run["report"][0]).parent
    shutil.copy(results / "summary.json", tmp_path / "summary.json")
    monkeypatch.setattr(pdf, "EXECUTABLES", ("/nonexistent/chromium",))
    with pytest.raises(pdf.ChromiumMissing) as caught:
        report_from(tmp_path)  # what `medsyft report` calls
    message = str(caught.value)
    assert "apt-get install -y chromium" in message and "\n" not in message
    assert (tmp_path / "report.html").stat().st_size > 10_000 and not (tmp_path / "report.pdf").exists()
    said = []  # the demo warns and goes on
    written = write_report_or_warn(json.loads((tmp_path / "summary.json").read_text()), tmp_path, echo=said.append)
    assert written == [tmp_path / "report.html"]
    assert len(said) == 1 and said[0].startswith("warning:") and "apt-get install -y chromium" in said[0]

"""The demo end to end (in-process, small): study, denial, baselines, summary and plots."""

import json
from pathlib import Path

import pytest

from datasites import shipped_specs
from syft_policies.audit import AuditLog

from federation.demo import DENIAL_REASON, format_summary, run_demo


def test_demo_runs_the_study_and_writes_results(tmp_path):
    results = tmp_path / "results"
    summary = run_demo(tmp_path, n_patients=600, seed=3, rounds=2, results=results, echo=lambda *_: None,
                       progress=False)
    on_disk = json.loads((results / "summary.json").read_text())
    assert on_disk["rounds"] == 2 and on_disk["auroc"] == json.loads(json.dumps(summary["auroc"]))
    for key in ("federated_dp", "pooled", "pooled_dp", "local_mean"):
        assert 0.5 < on_disk["auroc"][key] <= 1.0, key
    assert set(on_disk["epsilon"]["per_site"]) == {"amsterdam-umc", "lyon-chu", "boston-general"}
    assert all(0 < e <= on_disk["epsilon"]["target"] for e in on_disk["epsilon"]["per_site"].values())
    assert on_disk["epsilon"]["delta"] == 1e-5
    for name in ("roc_curves.png", "auroc_per_round.png", "site_distributions.png"):
        assert (results / name).read_bytes()[:4] == b"\x89PNG"
    (denied,) = on_disk["denied"].values()
    assert denied["status"] == "denied" and denied["reason"].startswith(DENIAL_REASON)
    assert "R004" in denied["reason"] and "head" in denied["reason"]  # the automatic review's finding
    eps = on_disk["epsilon"]
    for site, budget in on_disk["budget"].items():  # each site's ledger paid exactly training + evaluation
        assert eps["total"][site] == pytest.approx(eps["per_site"][site] + eps["evaluation"][site])
        assert eps["evaluation"][site] == pytest.approx(summary["plan"]["final_eval_epsilon"])  # 2 rounds: one
        assert budget["remaining"] == pytest.approx(20.0 - eps["total"][site], abs=1e-6)
        assert on_disk["receipts"][site]["final_evaluation"]["epsilon"] == eps["evaluation"][site]
    assert "federated DP-SGD" in format_summary(summary)
    # the first hospital's officer approved the study in the web console, in headless Chromium
    shots = [Path(p).name for p in on_disk["console_screenshots"]]
    assert shots == ["01-login.png", "02-queue.png", "03-request.png", "04-approve-study.png", "05-decided.png",
                     "06-ledger.png", "07-audit.png"]
    assert all((results / "console" / name).read_bytes()[:4] == b"\x89PNG" for name in shots)
    officer = shipped_specs()[0].compliance_officer.email
    log = AuditLog(tmp_path / "demo" / shipped_specs()[0].name / "audit.jsonl")
    assert [e["by"] for e in log.entries() if e["event"] == "approved"] == [officer, officer]
    assert any(e["event"] == "console-login" and e["account"] == officer for e in log.entries())
    for site, audit in on_disk["audit"].items():  # submissions, reviews, decisions, every execution
        assert audit["verified"] and audit["entries"] >= 2 * 3 + 2 * 2, (site, audit)
    again = run_demo(tmp_path, n_patients=600, seed=3, rounds=2, results=results, echo=lambda *_: None,
                     progress=False, console=False)  # re-runnable on the same home: fresh sites, same data, same epsilon
    assert again["hospitals"] == summary["hospitals"] and again["epsilon"]["total"] == summary["epsilon"]["total"]
    assert again["auroc"]["federated_dp"] != summary["auroc"]["federated_dp"]  # fresh secret noise each run

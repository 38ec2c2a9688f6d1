"""HTTP mode across processes, driven through the `medsyft` CLI, and a restart."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import syft as sy

from datasites import connect, load_spec, site_status
from syft_policies.release import ReleasePolicy
from syft_policies.quiet import quiet
from datasites.spec import SPEC_DIR
from federation import fetch_result, request_status, submit_request

MEDSYFT = [sys.executable, "-m", "federation.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args, env):
    """The real ``medsyft`` command, invoked in this process (Typer's runner) so Syft is imported once."""
    from typer.testing import CliRunner

    from federation.cli import app

    result = CliRunner().invoke(app, list(args), env={k: env[k] for k in ("MEDSYFT_SPECS", "MEDSYFT_HOME")})
    assert result.exit_code == 0, f"medsyft {' '.join(args)} failed:\n{result.output}\n{result.exception!r}"
    return result.output


def _cli_fails(*args, env, extra_env=None):
    """Run ``medsyft`` expecting a failure: (exit code, everything it printed)."""
    from typer.testing import CliRunner

    from federation.cli import app

    result = CliRunner().invoke(app, list(args), env={**{k: env[k] for k in ("MEDSYFT_SPECS", "MEDSYFT_HOME")},
                                                      **(extra_env or {})})
    assert result.exit_code != 0, f"medsyft {' '.join(args)} should have failed:\n{result.output}"
    return result.exit_code, result.output


def _one_line_error(output: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error"), output
    assert "Traceback" not in output


@pytest.fixture()
def http_site(tmp_path, network_home):
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    text = (SPEC_DIR / "boston-general.toml").read_text().replace("port = 8103", f"port = {_free_port()}")
    (specs_dir / "boston-general.toml").write_text(text)
    spec = load_spec(specs_dir / "boston-general.toml")
    home = tmp_path / "home"
    shutil.copytree(network_home / spec.name / "data", home / spec.name / "data")
    env = {**os.environ, "MEDSYFT_SPECS": str(specs_dir), "MEDSYFT_HOME": str(home)}
    yield spec, home, env
    from datasites import stop_site

    stop_site(spec, home)


def test_http_sites_review_cli_and_restart(http_site):
    spec, home, env = http_site
    out = _cli("sites", "up", env=env)
    assert f"{spec.name}" in out and f"http://127.0.0.1:{spec.port}" in out
    status = site_status(spec, home)
    assert status["state"] == "running" and status["pid"] != os.getpid()
    assert "running" in _cli("sites", "status", env=env)

    site = connect(spec, home)
    ds = site.researcher()
    assets = {a.name: a for a in ds.datasets[spec.dataset_name].assets}
    with quiet():
        @sy.syft_function(input_policy=sy.ExactMatch(patients=assets["patients"], encounters=assets["encounters"],
                                                     conditions=assets["conditions"]),
                          output_policy=ReleasePolicy(limit=1))
        def http_summary(patients, encounters, conditions):
            from datasites.jobs.summary import cohort_summary
            return cohort_summary(patients, encounters, conditions, epsilon=1.0)

        @sy.syft_function_single_use(patients=assets["patients"])
        def http_rows(patients):
            return patients.iloc[:3]
    ok_id = submit_request(ds, http_summary)
    bad_id = submit_request(ds, http_rows)

    listing = _cli("review", "list", "--site", spec.name, env=env)
    assert "http_summary" in listing and "http_rows" in listing and "pending" in listing
    shown = _cli("review", "show", ok_id[:10], "--site", spec.name, env=env)
    assert "cohort_summary" in shown and spec.researchers[0].email in shown and "LOW risk" in shown
    assert "HIGH risk" in _cli("review", "show", bad_id[:10], "--site", spec.name, env=env)
    assert f"budget epsilon {spec.epsilon_budget:g}, spent 0.000" in _cli("budget", "show", "--site", spec.name, env=env)
    assert "approved" in _cli("review", "approve", ok_id, "--site", spec.name, "--irb", "IRB-2026-9",
                              "--purpose", "sepsis prevalence", env=env)
    _cli("review", "deny", bad_id[:8], "--site", spec.name, "--reason", "row-level output", env=env)

    result = fetch_result(ds, "http_summary", patients=assets["patients"], encounters=assets["encounters"],
                          conditions=assets["conditions"])
    assert result["icu_patients"] >= 10 and 0 < result["sepsis_prevalence"] < 1
    assert request_status(ds, "http_rows").reason == "row-level output"
    assert "pending" not in _cli("review", "list", "--site", spec.name, env=env).replace("no pending", "")
    audit = _cli("audit", "show", "--site", spec.name, env=env)
    assert "approved" in audit and "denied" in audit and "row-level output" in audit and "IRB-2026-9" in audit
    assert "executed" in audit and "outcome=released" in audit and "template=cohort_summary" in audit
    # submitted, reviewed, deciding, approved; the same for the denial; debited; executed
    assert "intact: 10 entries" in _cli("audit", "verify", "--site", spec.name, env=env)

    # expected failures are one line that says what to do, never a traceback or a secret
    code, out = _cli_fails("review", "approve", "deadbeef", "--site", spec.name, "--purpose", "x", "--irb", "I", env=env)
    _one_line_error(out)
    assert "no request with id" in out and code == 2
    wrong = "not-the-officers-password"
    code, out = _cli_fails("review", "list", "--site", spec.name, env=env,
                           extra_env={f"{spec.env_prefix}_COMPLIANCE_OFFICER_PASSWORD": wrong})
    _one_line_error(out)
    assert wrong not in out and "credentials" in out.lower()
    failed = [e for e in connect(spec, home).audit().entries() if e["event"] == "login-failed"]
    assert failed and failed[-1]["account"] == spec.compliance_officer.email

    # onboarding: the admin adds a researcher, who logs in with the one-time password it printed
    added = _cli("accounts", "add", "--site", spec.name, "--email", "grace@navy.example", "--name", "Grace Hopper",
                 "--institution", "Navy Research", env=env)
    password = added.split("one-time password (shown once; medsyft keeps no copy): ")[1].split()[0]
    with quiet():
        grace = sy.login(url="http://127.0.0.1", port=spec.port, email="grace@navy.example", password=password)
    assert [d.name for d in grace.datasets] == [spec.dataset_name]
    shown = _cli("accounts", "show", "--site", spec.name, "--email", "grace@navy.example", env=env)
    assert "Grace Hopper" in shown and "Navy Research" in shown and password not in shown
    rotated = _cli("accounts", "rotate", "--site", spec.name, "--email", "grace@navy.example", env=env)
    assert password not in rotated and "one-time password" in rotated
    with quiet(), pytest.raises(Exception):
        sy.login(url="http://127.0.0.1", port=spec.port, email="grace@navy.example", password=password)
    code, out = _cli_fails("accounts", "add", "--site", spec.name, "--email", "grace@navy.example", "--name", "G",
                           env=env)
    _one_line_error(out)
    assert code == 2 and "exists" in out
    assert password not in (home / spec.name / "audit.jsonl").read_text()

    assert "stopped" in _cli("sites", "down", env=env)
    assert site_status(spec, home)["state"] == "stopped"
    code, out = _cli_fails("review", "list", "--site", spec.name, env=env)
    _one_line_error(out)
    assert "is not running" in out and "medsyft sites up" in out
    _cli("sites", "up", env=env)  # a fresh process on the same directory
    ds = connect(spec, home).researcher()
    assert [d.name for d in ds.datasets] == [spec.dataset_name]
    assert request_status(ds, "http_rows").status == "denied"
    assert "http_summary" in _cli("review", "list", "--all", "--site", spec.name, env=env)


def test_cli_rejects_unknown_site(http_site):
    _, _, env = http_site
    proc = subprocess.run([*MEDSYFT, "review", "list", "--site", "nowhere"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "unknown site" in proc.stderr


def test_a_broken_data_source_is_one_line_and_is_never_copied(tmp_path, network_home, specs):
    """The owner points the spec at a damaged Synthea export: one line naming their folder, nothing copied;
    once the folder is fixed the same command works, no --overwrite needed."""
    spec = specs[0]
    source = tmp_path / "synthea-export"
    shutil.copytree(network_home / spec.name / "data" / "private", source)
    (source / "conditions.csv").write_text("")
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    for other in specs:
        text = (SPEC_DIR / f"{other.name}.toml").read_text()
        if other.name == spec.name:
            text = text.replace("[dataset]\n", f'[dataset]\nsource = "{source}"\n')
        (specs_dir / f"{other.name}.toml").write_text(text)
    home = tmp_path / "home"
    env = {"MEDSYFT_SPECS": str(specs_dir), "MEDSYFT_HOME": str(home)}
    code, out = _cli_fails("data", "generate", "--patients", "600", env=env)
    _one_line_error(out)
    assert str(source) in out and "conditions.csv is empty" in out
    assert not (home / spec.name / "data" / "private").exists()
    shutil.copy(network_home / spec.name / "data" / "private" / "conditions.csv", source / "conditions.csv")
    assert "written" in _cli("data", "generate", "--patients", "600", env=env)

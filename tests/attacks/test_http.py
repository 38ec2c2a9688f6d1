"""Attacks over HTTP with a plain Syft client, against a hospital in its own server process."""

from __future__ import annotations

import shutil
import socket

import pytest
import syft as sy

from datasites import load_spec, start_site, stop_site
from datasites.credentials import credentials_file, site_passwords
from datasites.spec import SPEC_DIR
from scratchnet import approve_anyway
from syft_policies.quiet import quiet
from syft_policies.release import ReleasePolicy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def http_hospital(tmp_path_factory, network_home):
    root = tmp_path_factory.mktemp("http-attack")
    port = _free_port()
    text = (SPEC_DIR / "boston-general.toml").read_text().replace("port = 8103", f"port = {port}")
    text += "\n[isolation]\nwall_seconds = 8\nmemory_mb = 1024\n"
    (root / "boston-general.toml").write_text(text)
    spec = load_spec(root / "boston-general.toml")
    home = root / "home"
    shutil.copytree(network_home / spec.name / "data", home / spec.name / "data")
    site = start_site(spec, home, mode="http")
    yield site
    stop_site(spec, home)


def _login(site, email, password):
    with quiet():
        return sy.login(url="http://127.0.0.1", port=site.port, email=email, password=password)


def call_home(cohort, where):
    """From inside the hospital: its files, its environment, and its own HTTP API on loopback."""
    import os
    import socket as s

    seen = {"site dir": os.path.exists(where["site"]), "credentials": os.path.exists(where["credentials"]),
            "environment": sorted(k for k in os.environ if k.startswith("MEDSYFT"))}
    try:
        s.create_connection(("127.0.0.1", where["port"]), timeout=2).close()
        seen["datasite api"] = "reachable"
    except OSError as exc:
        seen["datasite api"] = type(exc).__name__
    return seen


def test_approved_code_over_http_sees_neither_files_nor_the_server(http_hospital):
    site = http_hospital
    password = site_passwords(site.spec, site.site_dir)[site.spec.researchers[0].email]
    ds = _login(site, site.spec.researchers[0].email, password)
    cohort = {a.name: a for a in ds.datasets[site.spec.dataset_name].assets}["sepsis_cohort"]
    where = {"site": str(site.site_dir), "credentials": str(credentials_file(site.site_dir)), "port": site.port}
    with quiet():
        request = sy.syft_function(input_policy=sy.MixedInputPolicy(client=ds, cohort=cohort,
                                                                    where=sy.Constant(val=where)),
                                   output_policy=ReleasePolicy(limit=1))(call_home)
        rid = str(ds.code.request_code_execution(request).id.no_dash)
    approve_anyway(site, rid)
    with quiet():
        seen = ds.code.call_home(cohort=cohort).get()
    assert seen == {"site dir": False, "credentials": False, "environment": [], "datasite api": "ConnectionRefusedError"}


def test_password_guessing_is_slowed_down_and_audited(http_hospital):
    site = http_hospital
    victim = site.spec.compliance_officer.email
    answers = []
    for guess in ("changethis", "password123", "Summer2026!", "letmein-please"):
        try:
            _login(site, victim, guess)
            answers.append("in")
        except Exception as exc:  # noqa: BLE001
            answers.append(str(exc))
    assert "in" not in answers
    assert any("too many failed logins" in a for a in answers[3:]), answers
    real = site_passwords(site.spec, site.site_dir)[victim]
    with pytest.raises(Exception, match="too many failed logins"):  # even the right password waits now
        _login(site, victim, real)
    failed = [e for e in site.audit().entries() if e["event"] == "login-failed" and e["account"] == victim]
    refused = [e for e in site.audit().entries() if e["event"] == "login-refused" and e["account"] == victim]
    assert len(failed) == 3 and all(e["address"] == "127.0.0.1" for e in failed)
    assert len(refused) >= 2 and real not in str(refused)


def test_researchers_cannot_run_actions_on_stored_objects(http_hospital):
    from syft.service.action.action_object import Action, ActionType

    site = http_hospital
    password = site_passwords(site.spec, site.site_dir)[site.spec.researchers[0].email]
    ds = _login(site, site.spec.researchers[0].email, password)
    cohort = {a.name: a for a in ds.datasets[site.spec.dataset_name].assets}["sepsis_cohort"]
    from syft.types.uid import LineageID

    action = Action(path="pandas.core.frame.DataFrame", op="head", remote_self=LineageID(cohort.action_id),
                    args=[], kwargs={},
                    action_type=ActionType.METHOD)
    with quiet(), pytest.raises(Exception, match="not actions on stored objects"):
        ds.api.services.action.execute(action)


def test_guessing_reveals_no_accounts_and_does_not_lock_everyone_out(http_hospital):
    site = http_hospital
    answers = set()
    for i in range(12):  # a sprayer trying made-up accounts from the hospital's own address
        try:
            _login(site, f"nobody{i}@example.org", "password123")
        except Exception as exc:  # noqa: BLE001
            answers.add(str(exc))
    try:
        _login(site, site.spec.researchers[0].email, "not-her-password")
    except Exception as exc:  # noqa: BLE001
        answers.add(str(exc))
    assert len(answers) == 1 and "Invalid credentials" in answers.pop()  # unknown or real: the same answer
    password = site_passwords(site.spec, site.site_dir)[site.spec.researchers[0].email]
    assert _login(site, site.spec.researchers[0].email, password) is not None  # the real user still gets in

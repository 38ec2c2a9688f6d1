"""Real Syft datasites: provisioning, the trust boundary, the approval loop, restarts."""

from __future__ import annotations

import shutil
import stat

import pytest
import syft as sy

from datasites import start_site
from datasites.data import private_dir
from syft_policies.quiet import quiet
from federation import NotApproved, fetch_result, request_status, submit_request
from synthetic_data import SyntheaValidationError, load_synthea
from syft_policies import ReviewError, approve_request, deny_request, list_requests


def _assets(client, spec):
    return {a.name: a for a in client.datasets[spec.dataset_name].assets}


def test_dataset_has_private_and_mock_assets(site):
    admin = site.admin()
    assets = _assets(admin, site.spec)
    assert sorted(assets) == ["conditions", "encounters", "medications", "observations", "patients", "procedures",
                              "sepsis_cohort"]
    private = load_synthea(private_dir(site.site_dir.parent, site.spec.name))
    assert len(assets["patients"].data) == private.n_patients  # the data owner sees private data
    assert len(assets["patients"].mock) == 150


def test_researcher_sees_mock_but_cannot_read_private_data(site):
    ds = site.researcher()
    patients = _assets(ds, site.spec)["patients"]
    assert len(patients.mock) == 150
    with quiet():
        data = patients.data
    assert data is None or type(data).__name__ == "SyftError"
    private_ids = set(load_synthea(private_dir(site.site_dir.parent, site.spec.name))["patients"]["Id"])
    assert not private_ids & set(patients.mock["Id"])


def test_roles_and_no_default_password(site):
    from syft.service.user.user_roles import ServiceRole

    roles = {u.email: u.role for u in site.admin().users}
    assert roles[site.spec.compliance_officer.email] == ServiceRole.DATA_OWNER
    assert roles[site.spec.researchers[0].email] == ServiceRole.DATA_SCIENTIST
    assert "info@openmined.org" not in roles
    with quiet(), pytest.raises(Exception):
        site.login("info@openmined.org", "changethis")
    from datasites.credentials import credentials_file

    secrets = credentials_file(site.site_dir)
    assert site.site_dir not in secrets.parents  # generated passwords live beside the site's tree
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600 and stat.S_IMODE(secrets.parent.stat().st_mode) == 0o700
    assert "changethis" not in secrets.read_text()
    assert not (site.site_dir / "secrets.json").exists()


def test_site_files_are_private_to_the_site(site):
    """Every directory is 0700 and every file medsyft or provisioning wrote is 0600 (Syft's
    later result blobs keep its own mode, inside the 0700 blob directory; an HTTP site
    runs with umask 077, so there they are 0600 too)."""
    assert stat.S_IMODE(site.site_dir.stat().st_mode) == 0o700
    for path in site.site_dir.rglob("*"):
        if path.is_symlink() or (path.parent.name == "blob" and path.is_file()):
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path.relative_to(site.site_dir)}: {oct(mode)}"


def _summary(assets):
    from syft_policies.release import ReleasePolicy

    with quiet():
        @sy.syft_function(input_policy=sy.ExactMatch(patients=assets["patients"], encounters=assets["encounters"],
                                                     conditions=assets["conditions"]),
                          output_policy=ReleasePolicy(limit=1))
        def sepsis_summary_t(patients, encounters, conditions):
            from datasites.jobs.summary import cohort_summary
            return cohort_summary(patients, encounters, conditions, epsilon=1.0)
    return sepsis_summary_t


def test_request_is_pending_until_approved_then_returns_aggregate(site):
    ds, officer = site.researcher(), site.officer()
    assets = _assets(ds, site.spec)
    rid = submit_request(ds, _summary(assets))
    kwargs = dict(patients=assets["patients"], encounters=assets["encounters"], conditions=assets["conditions"])
    assert request_status(ds, "sepsis_summary_t").status == "pending"
    with pytest.raises(NotApproved, match="pending"):
        fetch_result(ds, "sepsis_summary_t", **kwargs)
    pending = [p for p in list_requests(officer) if p.function == "sepsis_summary_t"]  # the site is shared
    assert [p.id for p in pending] == [rid]
    assert "cohort_summary" in pending[0].code and pending[0].researcher == site.spec.researchers[0].email
    approve_request(officer, rid[:8])
    result = fetch_result(ds, "sepsis_summary_t", **kwargs)
    private = load_synthea(private_dir(site.site_dir.parent, site.spec.name))
    # noised (discrete Laplace, scale 2 at epsilon 1/2): within 8 standard deviations of the truth
    assert abs(result["icu_patients"] - private.n_patients) <= 8 * 2 * 2 ** 0.5
    cases = private["conditions"][private["conditions"]["CODE"] == "91302008"]["PATIENT"].nunique()
    assert abs(result["sepsis_cases"] - cases) <= 8 * 2 * 2 ** 0.5
    assert result["receipt"]["epsilon"] == 1.0
    with pytest.raises(ReviewError, match="already approved"):
        approve_request(officer, rid)


def test_denied_request_never_runs_and_researcher_sees_reason(site, tmp_path, monkeypatch):
    ds, officer = site.researcher(), site.officer()
    assets = _assets(ds, site.spec)
    marker = tmp_path / "ran"
    monkeypatch.setenv("MEDSYFT_TEST_MARKER", str(marker))  # the in-process site shares our env
    with quiet():
        @sy.syft_function_single_use(patients=assets["patients"])
        def leak_rows(patients):
            import os
            open(os.environ["MEDSYFT_TEST_MARKER"], "w").write("ran")  # proves execution
            return patients.head(5)
    rid = submit_request(ds, leak_rows)
    with pytest.raises(ReviewError, match="reason"):
        deny_request(officer, rid, reason="  ")
    deny_request(officer, rid, reason="returns patient rows")
    status = request_status(ds, "leak_rows")
    assert (status.status, status.reason) == ("denied", "returns patient rows")
    with pytest.raises(NotApproved, match="returns patient rows"):
        fetch_result(ds, "leak_rows", patients=assets["patients"])
    with quiet():  # straight through Syft, bypassing our helper
        direct = None
        try:
            direct = ds.code.leak_rows(patients=assets["patients"])
        except Exception:
            pass
    assert direct is None or "denied" in str(direct).lower()
    assert not marker.exists()
    assert list_requests(officer, status="denied")[-1].reason == "returns patient rows"


def test_researcher_cannot_approve_own_request(site):
    ds = site.researcher()
    assets = _assets(ds, site.spec)
    with quiet():
        @sy.syft_function_single_use(patients=assets["patients"])
        def self_approve(patients):
            return len(patients)
    submit_request(ds, self_approve)
    with quiet():
        mine = [r for r in ds.requests if r.code.service_func_name == "self_approve"][0]
        try:
            mine.approve()
        except Exception:
            pass
    assert request_status(ds, "self_approve").status == "pending"


def test_invalid_export_uploads_nothing(tmp_path, specs, network_home):
    spec = specs[1]
    home = tmp_path / "home"
    shutil.copytree(network_home / spec.name / "data", home / spec.name / "data")
    (private_dir(home, spec.name) / "conditions.csv").write_text("")
    with pytest.raises(SyntheaValidationError, match="conditions.csv is empty"):
        start_site(spec, home)
    from datasites.server import open_datasite

    server = open_datasite(spec, home / spec.name)
    try:
        admin = server.get_guest_client(verbose=False).login(
            email=spec.admin.email, password=__import__("datasites.credentials", fromlist=["x"]).site_passwords(
                spec, home / spec.name)[spec.admin.email])
        assert [d.name for d in admin.datasets] == []
    finally:
        server.stop()


def test_restarted_inprocess_site_keeps_dataset_accounts_and_requests(tmp_path, specs, network_home):
    spec = specs[2]
    home = tmp_path / "home"
    shutil.copytree(network_home / spec.name / "data", home / spec.name / "data")
    first = start_site(spec, home)
    ds = first.researcher()
    rid = submit_request(ds, _summary(_assets(ds, spec)))
    deny_request(first.officer(), rid, reason="not now")
    first.stop()
    again = start_site(spec, home)
    try:
        ds = again.researcher()
        assert spec.dataset_name in [d.name for d in ds.datasets]
        assert len(_assets(ds, spec)["patients"].mock) == 150
        assert request_status(ds, "sepsis_summary_t").reason == "not now"
        assert [d.name for d in again.admin().datasets] == [spec.dataset_name]  # not uploaded twice
    finally:
        again.stop()

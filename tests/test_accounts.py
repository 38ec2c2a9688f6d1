"""Researcher onboarding through a real in-process datasite: the admin adds an account and
hands over a one-time password, rotates it, and every change is audited without it."""

from __future__ import annotations

import json

import pytest

from datasites.accounts import AccountError, add_researcher, list_accounts, rotate_password, show_account
from syft_policies.quiet import quiet

NEW = "grace.hopper@navy-research.example"


def _logs_in(site, email: str, password: str) -> bool:
    try:
        with quiet():
            site.login(email, password)
        return True
    except Exception:  # noqa: BLE001 - Syft raises SyftException on a refused login
        return False


@pytest.fixture(scope="module")
def added(site):
    password = add_researcher(site.admin(), email=NEW.upper(), name="Grace Hopper", institution="Navy research",
                              audit=site.audit())
    return password


def test_added_researcher_logs_in_and_sees_the_mocks(site, added):
    assert len(added) >= 20 and added.isalnum()
    researcher = site.login(NEW, added)
    cohort = {a.name: a for a in researcher.datasets[site.spec.dataset_name].assets}["sepsis_cohort"]
    assert len(cohort.mock) > 0 and "label" in cohort.mock.columns
    with quiet():
        private = cohort.data
    assert private is None or type(private).__name__ == "SyftError"  # approved code only


def test_show_and_list_never_return_a_password(site, added):
    shown = show_account(site.admin(), NEW)  # the in-process site's audit log is found without audit=
    assert shown["email"] == NEW and shown["name"] == "Grace Hopper" and shown["institution"] == "Navy research"
    assert shown["role"] == "data_scientist" and shown["added_by"] == site.spec.admin.email and shown["added"]
    listed = {r["email"]: r for r in list_accounts(site.admin())}
    assert listed[site.spec.admin.email]["role"] == "admin"
    assert listed[site.spec.compliance_officer.email]["role"] == "data_owner"
    assert [r["email"] for r in list_accounts(site.admin(), role="data_scientist")].count(NEW) == 1
    for record in [shown, *listed.values()]:
        assert set(record) <= {"email", "name", "institution", "website", "role", "id", "added", "added_by",
                               "password_changed", "password_changes"}
        assert added not in json.dumps(record)


def test_rotation_retires_the_old_password(site, added):
    new = rotate_password(site.admin(), NEW, audit=site.audit())
    assert new != added
    assert not _logs_in(site, NEW, added)
    assert _logs_in(site, NEW, new)
    assert show_account(site.admin(), NEW)["password_changes"] == 1
    log = site.audit().path.read_text()
    assert added not in log and new not in log
    events = [(e["event"], e.get("action")) for e in site.audit().entries() if e.get("account") == NEW]
    assert events[:2] == [("account-changing", "add"), ("account-added", None)]
    assert ("account-changing", "rotate-password") in events and ("password-rotated", None) in events
    assert site.audit().verify().ok


@pytest.mark.parametrize("email, message", [
    ("not-an-address", "is not an e-mail address"),
    ("a b@x.example", "is not an e-mail address"),
])
def test_bad_email(site, email, message):
    with pytest.raises(AccountError, match=message):
        add_researcher(site.admin(), email=email, name="X", institution="Y", audit=site.audit())


def test_duplicate_unknown_and_staff_accounts_are_refused(site, added):
    admin, audit = site.admin(), site.audit()
    with pytest.raises(AccountError, match="already exists"):
        add_researcher(admin, email=NEW, name="Grace Hopper", institution="Navy research", audit=audit)
    with pytest.raises(AccountError, match="already exists"):  # the spec's officer is not re-added as a researcher
        add_researcher(admin, email=site.spec.compliance_officer.email, name="X", institution="", audit=audit)
    for call in (lambda e: rotate_password(admin, e, audit=audit), lambda e: show_account(admin, e)):
        with pytest.raises(AccountError, match="no account nobody@nowhere.example"):
            call("nobody@nowhere.example")
    for staff in (site.spec.admin.email, site.spec.compliance_officer.email):
        with pytest.raises(AccountError, match="only researcher accounts change here"):
            rotate_password(admin, staff, audit=audit)
    assert _logs_in(site, site.spec.compliance_officer.email, _officer_password(site))  # untouched


def test_only_the_admin_manages_accounts(site):
    with pytest.raises(AccountError, match="is not this site's admin"):
        add_researcher(site.officer(), email="eve@x.example", name="Eve", institution="", audit=site.audit())
    with pytest.raises(AccountError, match="is not this site's admin"):
        rotate_password(site.researcher(), site.spec.researchers[0].email, audit=site.audit())


def _officer_password(site) -> str:
    from datasites.credentials import site_passwords

    return site_passwords(site.spec, site.site_dir)[site.spec.compliance_officer.email]

"""Attack: make a request carry more than its code (the red team's first finding).

Syft lets a client submit a request with any list of changes, and an officer's approve
applies them all. Hidden behind a byte-identical template (rated low, approved by one
officer), changes granting READ on every private asset, or the role ADMIN, used to go
through unreviewed.
"""

from __future__ import annotations

import pytest
import syft as sy

from syft_policies import ReviewError, list_requests
from syft_policies.quiet import quiet
from syft_policies.release import ReleasePolicy
from syft_policies.review import review_request
from syft_policies.templates import medsyft_cohort_summary


def _template_plus(attacker, extra_changes, name):
    from syft.service.code.user_code import UserCodeStatus
    from syft.service.request.request import SubmitRequest, UserCodeStatusChange
    from syft.store.linked_obj import LinkedObject

    ds, assets = attacker.ds, attacker.assets
    with quiet():
        fn = sy.syft_function(input_policy=sy.MixedInputPolicy(client=ds, patients=assets["patients"],
                                                               encounters=assets["encounters"],
                                                               conditions=assets["conditions"]),
                              output_policy=ReleasePolicy(limit=1), name=name)(medsyft_cohort_summary)
        ds.api.services.code.submit(fn)
        code = [c for c in ds.api.services.code.get_all() if c.service_func_name == name][0]
    changes = [UserCodeStatusChange(value=UserCodeStatus.APPROVED, linked_obj=code.status_link,
                                    linked_user_code=LinkedObject.from_obj(code, server_uid=ds.api.server_uid))]
    return SubmitRequest(changes=changes + extra_changes, requesting_user_verify_key=ds.credentials.verify_key)


def _read_grants(attacker):
    from syft.service.action.action_object import ActionObject
    from syft.service.action.action_permissions import ActionPermission
    from syft.service.action.action_service import ActionService
    from syft.service.request.request import ActionStoreChange
    from syft.store.linked_obj import LinkedObject

    return [ActionStoreChange(linked_obj=LinkedObject.from_uid(asset.action_id, ActionObject, ActionService,
                                                               attacker.ds.api.server_uid),
                              apply_permission_type=ActionPermission.READ) for asset in attacker.assets.values()]


def _make_me_admin(attacker):
    from syft.service.request.request import ObjectMutation
    from syft.service.user.user import User
    from syft.service.user.user_roles import ServiceRole
    from syft.service.user.user_service import UserService
    from syft.store.linked_obj import LinkedObject

    me = attacker.ds.api.services.user.get_current_user()
    return [ObjectMutation(linked_obj=LinkedObject.from_uid(me.id, User, UserService, attacker.ds.api.server_uid),
                           attr_name="role", value=ServiceRole.ADMIN, match_type=True)]


@pytest.mark.parametrize("smuggle", [_read_grants, _make_me_admin], ids=["read-private-assets", "become-admin"])
def test_a_request_cannot_smuggle_changes_behind_a_template(attacker, smuggle):
    from syft.service.action.action_object import TwinMode

    request = _template_plus(attacker, smuggle(attacker), f"hidden_changes_{smuggle.__name__.strip('_')}")
    with quiet(), pytest.raises(Exception, match="cannot carry other changes"):
        attacker.ds.api.services.request.submit(request)
    with quiet(), pytest.raises(Exception):  # and nothing was granted
        attacker.ds.api.services.action.get(attacker.assets["patients"].action_id, twin_mode=TwinMode.PRIVATE)
    assert str(attacker.ds.api.services.user.get_current_user().role).endswith("DATA_SCIENTIST")


def test_a_request_with_foreign_changes_is_high_risk_and_cannot_be_approved(attacker):
    """Staff may still build such requests (a migration); the review shows them and refuses to approve."""
    site = attacker.site
    admin = site.admin()
    from syft.service.request.request import SubmitRequest

    with quiet():
        admin.api.services.request.submit(SubmitRequest(changes=_read_grants(attacker)[:1],
                                                        requesting_user_verify_key=admin.credentials.verify_key))
    officer = site.officer()
    (odd,) = [r for r in list_requests(officer, status="pending") if r.function == "<no code>"]  # the queue lists it
    report = review_request(officer, odd.id)
    assert report.risk == "high" and report.findings[0].rule == "R014"
    from syft_policies import approve_request, deny_request

    with pytest.raises(ReviewError, match="carries more than its code"):
        approve_request(officer, odd.id, accept_high_risk=True)
    deny_request(officer, odd.id, reason="not a code request")


def test_a_researcher_cannot_change_who_they_are(attacker):
    ds = attacker.ds
    me = ds.api.services.user.get_current_user()
    for change in ({"email": "someone-else@example.org"}, {"name": "Dr. Someone Else"},
                   {"institution": "the hospital itself"}):
        with quiet(), pytest.raises(Exception, match="are fixed by the hospital"):
            ds.api.services.user.update(uid=me.id, **change)
    now = ds.api.services.user.get_current_user()
    assert (now.email, now.name, now.institution) == (me.email, me.name, me.institution)


def test_a_researcher_cannot_overwrite_the_published_mocks(attacker):
    """Syft checks only that a writer may *read* a blob, and every mock is readable by all."""
    import syft as sy

    ds = attacker.ds
    asset = attacker.assets["sepsis_cohort"]
    before = asset.mock.copy()
    blob = ds.api.services.action.get_mock(asset.action_id).syft_blob_storage_entry_id
    poisoned = before.copy()
    poisoned["TAMPERED"] = "by a researcher"
    with quiet(), pytest.raises(Exception, match="only the uploader"):
        ds.api.services.blob_storage.write_to_disk(uid=blob, data=sy.serialize(poisoned, to_bytes=True))
    fresh = {a.name: a for a in attacker.site.researcher().datasets[attacker.site.spec.dataset_name].assets}
    assert list(fresh["sepsis_cohort"].mock.columns) == list(before.columns)


def test_a_hand_built_code_request_cannot_approve_someone_elses_code(attacker):
    """One code-status change, but pointing the review at a template and the approval at other code."""
    from syft.service.code.user_code import UserCodeStatus
    from syft.service.request.request import SubmitRequest, UserCodeStatusChange
    from syft.store.linked_obj import LinkedObject

    ds = attacker.ds
    with quiet():
        fn = sy.syft_function(input_policy=sy.MixedInputPolicy(client=ds, patients=attacker.assets["patients"],
                                                               encounters=attacker.assets["encounters"],
                                                               conditions=attacker.assets["conditions"]),
                              output_policy=ReleasePolicy(limit=1), name="laundering_template")(medsyft_cohort_summary)
        ds.api.services.code.submit(fn)
        codes = {c.service_func_name: c for c in ds.api.services.code.get_all()}
    shown = codes["laundering_template"]
    other = next(c for name, c in codes.items() if name != "laundering_template")
    change = UserCodeStatusChange(value=UserCodeStatus.APPROVED, linked_obj=other.status_link,
                                  linked_user_code=LinkedObject.from_obj(shown, server_uid=ds.api.server_uid))
    with quiet(), pytest.raises(Exception, match="code.request_code_execution"):
        ds.api.services.request.submit(SubmitRequest(changes=[change],
                                                     requesting_user_verify_key=ds.credentials.verify_key))


def test_password_resets_reveal_no_one(attacker):
    from syft.service.context import UnauthedServiceContext

    site = attacker.site
    service = site.server.services.user  # what the /forgot_password route calls, unauthenticated
    answers = {str(service.forgot_password(context=UnauthedServiceContext(server=site.server), email=email))
               for email in (site.spec.admin.email, site.spec.compliance_officer.email, "nobody@example.org")}
    assert len(answers) == 1 and "admin" in answers.pop()

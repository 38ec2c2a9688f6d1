"""Four changes to Syft 0.9.5 on a medsyft datasite, applied when a datasite opens.

- Speed: Syft walks every service result element by element to attach attributes to
  Syft objects inside it, including ``bytes`` (each blob read: a Python-level loop over
  every byte of a serialised asset, seconds per job call). Bytes and strings cannot hold
  Syft objects, so skipping them changes nothing but the time.
- Release policy inputs: the tables user code was given are remembered for the release
  policy, which blocks outputs that copy their values (``syft_policies.release_rules``).
- Expiry: before any approved code runs for a researcher, the site's governance store is
  asked whether the approval has expired; if so Syft refuses with the reason.
- Refusals: when a vetted job is refused by the site's rules (``syft_policies.Refused``:
  budget spent, approval expired, rounds used up) the researcher gets that reason instead
  of Syft's generic "Exception encountered while running ...".
"""

from __future__ import annotations

__all__ = ["apply"]


def _skip_walking_bytes() -> None:
    import syft.service.service as service
    import syft.types.syft_object as syft_object

    walk = syft_object.attach_attribute_to_syft_object
    if getattr(walk, "_medsyft", False):
        return

    def attach(result, attr_dict):
        if isinstance(result, (bytes, bytearray, memoryview, str)):
            return None
        return walk(result, attr_dict)

    attach._medsyft = True
    syft_object.attach_attribute_to_syft_object = attach
    service.attach_attribute_to_syft_object = attach


def _remember_release_inputs() -> None:
    import syft.service.action.action_service as action_service

    from syft_policies.refusals import take_refusal
    from syft_policies.release_rules import remember_inputs

    run = action_service.execute_byte_code
    if getattr(run, "_medsyft", False):
        return

    def execute(code_item, kwargs, context):
        remember_inputs({k: getattr(v, "syft_action_data", v) for k, v in kwargs.items()})
        take_refusal()
        output = run(code_item, kwargs, context)
        refusal = take_refusal()
        if output.errored and refusal:
            output.safe_error_message = f"refused by {context.server.name}: {refusal}"
        return output

    execute._medsyft = True
    action_service.execute_byte_code = execute


def _refuse_expired_approvals() -> None:
    from syft.service.code.user_code_service import UserCodeService
    from syft.service.user.user_roles import ServiceRole
    from syft.types.errors import SyftException

    from syft_policies.governance import GOVERNANCE_FILE, ApprovalExpired, GovernanceStore

    from .jobstate import site_directory

    call = UserCodeService._call
    if getattr(call, "_medsyft", False):
        return

    def guarded(self, context, uid, result_id=None, **kwargs):
        site = site_directory(context.server.id.no_dash)
        if site is not None and context.role != ServiceRole.ADMIN:
            try:
                GovernanceStore(site / GOVERNANCE_FILE).check_code(uid.no_dash)
            except ApprovalExpired as exc:
                raise SyftException(public_message=str(exc)) from None
        return call(self, context, uid, result_id=result_id, **kwargs)

    guarded._medsyft = True
    UserCodeService._call = guarded


def apply() -> None:
    """Idempotent; call before a datasite serves requests."""
    _skip_walking_bytes()
    _remember_release_inputs()
    _refuse_expired_approvals()

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


def _replace(owners, name: str, make) -> None:
    """Replace ``name`` on each of ``owners`` by ``make(original)``, once per process."""
    original = getattr(owners[0], name)
    if getattr(original, "_medsyft", False):
        return
    replacement = make(original)
    replacement._medsyft = True
    for owner in owners:
        setattr(owner, name, replacement)


def _skip_walking_bytes() -> None:
    import syft.service.service as service
    import syft.types.syft_object as syft_object

    def make(walk):
        def attach(result, attr_dict):
            if isinstance(result, (bytes, bytearray, memoryview, str)):
                return None
            return walk(result, attr_dict)
        return attach

    _replace([syft_object, service], "attach_attribute_to_syft_object", make)


def _remember_release_inputs() -> None:
    import syft.service.action.action_service as action_service

    from syft_policies.refusals import take_refusal
    from syft_policies.release_rules import remember_inputs

    def make(run):
        def execute(code_item, kwargs, context):
            remember_inputs({k: getattr(v, "syft_action_data", v) for k, v in kwargs.items()})
            take_refusal()
            output = run(code_item, kwargs, context)
            refusal = take_refusal()
            if output.errored and refusal:
                output.safe_error_message = f"refused by {context.server.name}: {refusal}"
            return output
        return execute

    _replace([action_service], "execute_byte_code", make)


def _refuse_expired_approvals() -> None:
    from syft.service.code.user_code_service import UserCodeService
    from syft.service.user.user_roles import ServiceRole
    from syft.types.errors import SyftException

    from syft_policies.governance import GOVERNANCE_FILE, ApprovalExpired, GovernanceStore

    from .jobstate import site_directory

    def make(call):
        def guarded(self, context, uid, result_id=None, **kwargs):
            site = site_directory(context.server.id.no_dash)
            if site is not None and context.role != ServiceRole.ADMIN:
                try:
                    GovernanceStore(site / GOVERNANCE_FILE).check_code(uid.no_dash)
                except ApprovalExpired as exc:
                    raise SyftException(public_message=str(exc)) from None
            return call(self, context, uid, result_id=result_id, **kwargs)
        return guarded

    _replace([UserCodeService], "_call", make)


def apply() -> None:
    """Idempotent; call before a datasite serves requests."""
    _skip_walking_bytes()
    _remember_release_inputs()
    _refuse_expired_approvals()

"""What a medsyft datasite changes in Syft 0.9.5, applied when a datasite opens.

- Isolation: approved code never runs in this process. ``_user_code_execute`` admits,
  runs in a sandboxed worker and audits every attempt; ``execute_byte_code`` is replaced
  by the isolated run; Syft's repeat run on the mock twin runs nothing
  (``datasites.isolation.execution``).
- Policies: Syft ``exec``s a request's custom policy class in the server. Here only the
  site's own ``ReleasePolicy`` is ever loaded, compiled from the site's installed source;
  any other submitted policy class is refused, never executed.
- Action API: researchers may call approved code, not methods, functions or attribute
  access on objects in the store (which would run Python on private data in this process).
- Requests: Syft lets a researcher submit a request with any list of changes, and an
  officer's ``approve`` applies them all (read permissions on private assets, a role of
  ADMIN). Here a researcher's request is exactly one code-status change, checked when
  it is submitted and again when it is applied.
- Accounts: a researcher cannot change their own e-mail, key, name or institution (the
  ledger, the budget caps, the audit log and the review queue know researchers by them);
  password resets go through the hospital's admin (Syft's ``forgot_password`` told who
  the admin is and notified people on anyone's request).
- Blob storage: Syft lets anyone who may *read* a blob overwrite it on disk (every
  researcher could replace the published mocks); here only its uploader or staff may.
- Logins: failed logins are audited and slowed down per account and address.
- Speed: Syft walks every service result element by element, including ``bytes`` (each
  blob read was a Python loop over every byte); bytes and strings hold no Syft objects.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar

__all__ = ["apply"]


def _replace(owners, name: str, make) -> None:
    """Replace ``name`` on each of ``owners`` by ``make(original)``, once per process."""
    original = getattr(owners[0], name)
    if getattr(original, "_medsyft", False):
        return
    replacement = functools.update_wrapper(make(original), original)  # Syft dispatches by __qualname__
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


def _isolate_execution() -> None:
    import syft.service.action.action_service as action_service
    import syft.service.code.user_code as user_code

    from .isolation.execution import admit_and_record, run_isolated

    _replace([action_service.ActionService], "_user_code_execute", admit_and_record)
    _replace([action_service, user_code], "execute_byte_code", lambda _: run_isolated)


def _only_site_policies() -> None:
    import inspect

    import syft.service.code.user_code as user_code
    import syft.service.policy.policy as policy
    from syft.types.errors import SyftException

    def make(_execute):
        def execute_policy_code(user_policy):
            from syft.types.syft_object_registry import SyftObjectRegistry

            from syft_policies.release import ReleasePolicy

            own = inspect.getsource(ReleasePolicy)
            if (user_policy.raw_code or "").strip() != own.strip() or user_policy.class_name != "ReleasePolicy":
                raise SyftException(public_message="this site loads no submitted policy code: only its own "
                                                   "ReleasePolicy (syft_policies.release) may be used")
            name = user_policy.unique_name
            namespace: dict = {}
            try:
                cls = SyftObjectRegistry.get_serde_class(name, version=policy.DEFAULT_USER_POLICY_VERSION)
            except Exception:  # noqa: BLE001 - first use: compile the site's own source, not the request's
                exec(compile(policy.process_class_code(own, name), "<site policy>", "exec"), namespace)  # noqa: S102
                cls = namespace[name]
            cls.model_rebuild(_types_namespace=namespace or None)
            policy.register_policy_class(cls, name)
            return cls
        return execute_policy_code

    _replace([policy], "execute_policy_code", make)
    _replace([policy, user_code], "load_policy_code", lambda _: policy.execute_policy_code)


def _no_actions_on_store_objects() -> None:
    from syft.service.action.action_service import ActionService
    from syft.service.action.action_object import ActionType
    from syft.service.user.user_roles import ServiceRole
    from syft.types.errors import SyftException

    def make(execute):
        def guarded(self, *args, **kwargs):
            context = kwargs.get("context", args[0] if args else None)
            action = kwargs.get("action", args[1] if len(args) > 1 else None)
            if getattr(context, "role", None) not in (ServiceRole.ADMIN, ServiceRole.DATA_OWNER) \
                    and getattr(action, "action_type", None) != ActionType.SYFTFUNCTION:
                raise SyftException(public_message="researchers run approved code here, not actions on "
                                                   "stored objects")
            return execute(self, *args, **kwargs)
        return guarded

    _replace([ActionService], "execute", make)


def _is_staff(context) -> bool:
    from syft.service.user.user_roles import ServiceRole

    return getattr(context, "role", None) in (ServiceRole.ADMIN, ServiceRole.DATA_OWNER)


_REQUESTING_CODE: ContextVar[bool] = ContextVar("medsyft_requesting_code", default=False)


def _only_code_requests() -> None:
    from syft.service.code.user_code_service import UserCodeService
    from syft.service.request.request_service import RequestService
    from syft.types.errors import SyftException

    def code_only(changes) -> bool:
        changes = list(changes or [])
        return len(changes) == 1 and type(changes[0]).__name__ == "UserCodeStatusChange"

    def make_request_code(request_code):  # Syft builds the request itself, from the submitted code
        def marked(self, *args, **kwargs):
            token = _REQUESTING_CODE.set(True)
            try:
                return request_code(self, *args, **kwargs)
            finally:
                _REQUESTING_CODE.reset(token)
        return marked

    def make_submit(submit):
        def guarded(self, *args, **kwargs):
            context = kwargs.get("context", args[0] if args else None)
            request = kwargs.get("request", args[1] if len(args) > 1 else None)
            if not _is_staff(context) and not (_REQUESTING_CODE.get() and code_only(getattr(request, "changes", None))):
                raise SyftException(public_message="a request asks to run one piece of code: it cannot carry "
                                                   "other changes (permissions, roles, objects); submit code "
                                                   "with code.request_code_execution")
            return submit(self, *args, **kwargs)
        return guarded

    def make_apply(apply):
        def guarded(self, *args, **kwargs):
            from syft.service.user.user_roles import ServiceRole

            context = kwargs.get("context", args[0] if args else None)
            uid = kwargs.get("uid", args[1] if len(args) > 1 else None)
            request = self.stash.get_by_uid(context.server.verify_key, uid).unwrap()
            try:
                role = context.server.services.user.get_role_for_credentials(
                    request.requesting_user_verify_key).unwrap()
            except Exception:  # noqa: BLE001 - an unknown requester is not staff
                role = ServiceRole.GUEST
            if role not in (ServiceRole.ADMIN, ServiceRole.DATA_OWNER) and not consistent(context, request):
                raise SyftException(public_message="this request carries changes other than running its own "
                                                   "code; it cannot be approved here (deny it)")
            return apply(self, *args, **kwargs)
        return guarded

    def consistent(context, request) -> bool:
        """One code change, whose status object is its own code's, and the code the requester's."""
        if not code_only(request.changes):
            return False
        change = request.changes[0]
        try:
            code = change.linked_user_code.resolve_with_context(context.as_root_context()).unwrap()
        except Exception:  # noqa: BLE001 - unresolvable: not approvable
            return False
        return code.status_link.object_uid == change.linked_obj.object_uid \
            and code.user_verify_key == request.requesting_user_verify_key

    _replace([UserCodeService], "_request_code_execution", make_request_code)
    _replace([RequestService], "submit", make_submit)
    _replace([RequestService], "apply", make_apply)


def _fixed_identities() -> None:
    from syft.service.user.user_service import UserService
    from syft.types.errors import SyftException

    def make(update):
        def guarded(self, *args, **kwargs):
            context = kwargs.get("context", args[0] if args else None)
            if not _is_staff(context):
                values = [kwargs.get("user_update")] + [a for a in args[1:]] + [kwargs]
                for value in values:
                    fields = value if isinstance(value, dict) else getattr(value, "__dict__", {})
                    for key in ("email", "verify_key", "name", "institution", "website"):
                        if key in fields and type(fields[key]).__name__ != "EmptyType" and fields[key] is not None:
                            raise SyftException(public_message="a researcher's e-mail, key, name and institution "
                                                               "are fixed by the hospital; ask its admin")
            return update(self, *args, **kwargs)
        return guarded

    def make_forgot(_forgot):
        def forgot_password(self, *args, **kwargs):
            from syft.service.response import SyftSuccess

            return SyftSuccess(message="at this hospital password resets go through its admin; ask them")
        return forgot_password

    _replace([UserService], "update", make)
    _replace([UserService], "forgot_password", make_forgot)


def _blob_writes_by_uploader() -> None:
    from syft.service.blob_storage.service import BlobStorageService
    from syft.types.errors import SyftException

    def make(write):
        def guarded(self, *args, **kwargs):
            context = kwargs.get("context", args[0] if args else None)
            uid = kwargs.get("uid", args[1] if len(args) > 1 else None)
            if not _is_staff(context):
                entry = self.stash.get_by_uid(credentials=context.server.verify_key, uid=uid).unwrap(
                    public_message="no such blob")
                if entry.uploaded_by != context.credentials:
                    raise SyftException(public_message="only the uploader of a blob may write it")
            return write(self, *args, **kwargs)
        return guarded

    _replace([BlobStorageService], "write_to_disk", make)
    _replace([BlobStorageService], "mark_write_complete", make)


def _guard_logins() -> None:
    from syft.service.user.user_service import UserService

    from .logins import guarded_login

    _replace([UserService], "exchange_credentials", guarded_login)


def apply() -> None:
    """Idempotent; call before a datasite serves requests."""
    _skip_walking_bytes()
    _isolate_execution()
    _only_site_policies()
    _no_actions_on_store_objects()
    _only_code_requests()
    _fixed_identities()
    _blob_writes_by_uploader()
    _guard_logins()

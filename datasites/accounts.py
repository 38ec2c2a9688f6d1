"""Researcher accounts, managed by the hospital's admin through an admin Syft client.

How a researcher gets credentials: the admin adds the account and is shown a fresh random
password once, to hand over out of band; medsyft never writes it anywhere (Syft keeps only
its salted hash). Rotating gives a new one-time password and the old one stops working.
Every add and rotation is in the site's hash-chained audit log, without the password.
Only researcher (data scientist) accounts change here: the admin and the compliance
officers are the spec's accounts (``datasites.credentials``).

A password change does not end sessions already open: a Syft client signs its calls with
the account's key, which it received at login, and Syft 0.9.5 has no call to replace it.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string

from syft_policies.quiet import quiet

__all__ = ["AccountError", "add_researcher", "show_account", "list_accounts", "rotate_password"]

PASSWORD_LENGTH = 24  # letters and digits: about 143 bits
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
_RESEARCHER = "data_scientist"  # Syft's role of a researcher


class AccountError(ValueError):
    """An account change that cannot be made as asked; one line, never a password."""


def _password() -> str:
    """Strong and random, with a lower-case letter, a capital and a digit (Syft's own rule)."""
    alphabet = string.ascii_letters + string.digits
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(PASSWORD_LENGTH))
        if any(c.islower() for c in password) and any(c.isupper() for c in password) \
                and any(c.isdigit() for c in password):
            return password


def _email(email: str) -> str:
    value = str(email or "").strip().lower()
    if len(value) > 254 or not _EMAIL.match(value):
        raise AccountError(f"{str(email)[:80]!r} is not an e-mail address")
    return value


def _text(label: str, value: str, *, required: bool) -> str:
    value = str(value or "").strip()
    if required and not value:
        raise AccountError(f"a researcher account needs a {label}")
    if len(value) > 200 or any(not c.isprintable() for c in value):
        raise AccountError(f"the {label} must be printable text of at most 200 characters")
    return value


def _one_line(exc: BaseException, *secret: str) -> str:
    """Syft's public message, first line, with anything secret taken out."""
    text = (str(getattr(exc, "public_message", "") or exc).splitlines() or [type(exc).__name__])[0]
    for s in secret:
        text = text.replace(s, "<password>")
    return text[:200]


def _call(what: str, call, *secret: str):
    try:
        with quiet():
            result = call()
    except Exception as exc:  # noqa: BLE001 - Syft raises SyftException for refusals
        raise AccountError(f"{what}: {_one_line(exc, *secret)}") from None
    if type(result).__name__ == "SyftError":
        raise AccountError(f"{what}: {_one_line(Exception(str(result)), *secret)}")
    return result


def _role(view) -> str:
    return str(getattr(view.role, "name", view.role)).lower()


def _admin_email(admin) -> str:
    """The caller's e-mail, after checking the client is the site's admin."""
    me = _call("cannot tell who this client is", lambda: admin.api.services.user.get_current_user())
    if _role(me) != "admin":
        raise AccountError(f"{me.email} is not this site's admin; log in as its admin to manage accounts")
    return str(me.email)


def _users(admin) -> list:
    return list(_call("cannot list the site's accounts", lambda: admin.api.services.user.get_all()))


def _find(admin, email: str):
    """The account with this e-mail (case does not matter), or None."""
    return next((u for u in _users(admin) if str(u.email).lower() == email), None)


def _audit(admin, audit):
    """The site's audit log: the one given, else the one of a site this process serves."""
    if audit is not None:
        return audit
    from .registry import site_of

    site = site_of(admin.id) if getattr(admin, "metadata", None) is not None else None
    if site is None:
        raise AccountError("the site's audit log is not known here; pass audit= (SiteHandle.audit())")
    return site.audit()


def _researcher(admin, email: str):
    user = _find(admin, email)
    if user is None:
        raise AccountError(f"no account {email} at this site")
    if _role(user) != _RESEARCHER:
        raise AccountError(f"{email} is a {_role(user)} account (the admin or a compliance officer); "
                           "only researcher accounts change here")
    return user


def _changing(log, action: str, email: str, by: str, call, what: str, password: str) -> None:
    """Write-ahead, as the review does: the intent is logged before Syft changes anything
    (a log that cannot be written stops the change), and a refusal is logged too."""
    log.append("account-changing", action=action, account=email, by=by)
    try:
        _call(what, call, password)
    except AccountError as exc:
        log.append("account-change-failed", action=action, account=email, by=by, reason=str(exc))
        raise


def _when(at) -> str:
    return dt.datetime.fromtimestamp(float(at), dt.timezone.utc).isoformat(timespec="seconds")


def add_researcher(admin, *, email: str, name: str, institution: str, audit=None) -> str:
    """Create a researcher (Syft DATA_SCIENTIST) account; returns its one-time password.

    Show the password once to the admin, who hands it over; it is not stored anywhere but
    as Syft's hash. ``audit``: the site's ``AuditLog`` (default: that of an in-process site).
    """
    email = _email(email)
    name = _text("name", name, required=True)
    institution = _text("institution", institution, required=False)
    log = _audit(admin, audit)
    by = _admin_email(admin)
    if _find(admin, email) is not None:
        raise AccountError(f"an account {email} already exists at this site")
    from syft.service.user.user_roles import ServiceRole

    password = _password()
    _changing(log, "add", email, by, lambda: admin.api.services.user.create(
        email=email, name=name, institution=institution, password=password, password_verify=password,
        role=ServiceRole.DATA_SCIENTIST), f"could not add {email}", password)
    log.append("account-added", account=email, role=_RESEARCHER, name=name, institution=institution, by=by)
    return password


def rotate_password(admin, email: str, *, audit=None) -> str:
    """Give a researcher account a new one-time password; the old one stops working at once."""
    email = _email(email)
    log = _audit(admin, audit)
    by = _admin_email(admin)
    user = _researcher(admin, email)
    password = _password()
    _changing(log, "rotate-password", email, by, lambda: admin.api.services.user.update(uid=user.id, password=password),
              f"could not change the password of {email}", password)
    log.append("password-rotated", account=email, by=by)
    return password


def _describe(user) -> dict:
    return {"email": str(user.email), "name": user.name or "", "institution": user.institution or "",
            "website": user.website or "", "role": _role(user), "id": str(user.id.no_dash)}


def show_account(admin, email: str, *, audit=None) -> dict:
    """What the site records of an account (never a password): e-mail, name, institution,
    role, Syft id, and from the audit log when it is known here, when and by whom it was
    added and when its password last changed (Syft 0.9.5 does not report these)."""
    email = _email(email)
    _admin_email(admin)
    user = _find(admin, email)
    if user is None:
        raise AccountError(f"no account {email} at this site")
    out = _describe(user)
    try:
        log = _audit(admin, audit)
    except AccountError:
        return out
    mine = [e for e in log.entries() if e.get("account") == email]
    added = next((e for e in mine if e["event"] == "account-added"), None)
    rotated = [e for e in mine if e["event"] == "password-rotated"]
    if added is not None:
        out.update(added=_when(added["at"]), added_by=added.get("by", ""))
    if rotated:
        out.update(password_changed=_when(rotated[-1]["at"]), password_changes=len(rotated))
    return out


def list_accounts(admin, *, role: str | None = None) -> list[dict]:
    """Every account at the site (or those of one Syft ``role``, e.g. ``"data_scientist"``),
    by e-mail; never a password."""
    _admin_email(admin)
    rows = sorted((_describe(u) for u in _users(admin)), key=lambda r: r["email"])
    return [r for r in rows if role is None or r["role"] == role.lower()]

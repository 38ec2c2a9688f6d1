"""Failed logins are audited and slowed down, per account and per network address.

After 3 failed logins for an account each further attempt must wait twice as long as the
previous (2 s, 4 s, ... up to 15 minutes). An address is slowed down after 20 failures,
up to a minute at a time, and any successful login from it resets its count: everyone
behind one proxy (or on loopback) shares an address, so one guesser must not lock them
all out for long. Unknown accounts and wrong passwords get the same answer. Every
failure and every refusal is in the site's audit log. The HTTP app passes the client's
address in (``client_address``); in-process logins count per account.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar

__all__ = ["LoginGuard", "guard", "client_address"]

client_address: ContextVar[str] = ContextVar("medsyft_client_address", default="in-process")
ACCOUNT_FREE, ADDRESS_FREE = 3, 20
ACCOUNT_MAX_WAIT, ADDRESS_MAX_WAIT = 900.0, 60.0
FAILED = "Invalid credentials: wrong e-mail or password."


class LoginGuard:
    def __init__(self):
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}  # key -> (count, last failure)
        self._lock = threading.Lock()

    def _wait(self, key, free: int, cap: float, now: float) -> float:
        count, last = self._failures.get(key, (0, 0.0))
        if count < free:
            return 0.0
        return max(0.0, last + min(cap, 2.0 ** (count - free + 1)) - now)

    def check(self, site: str, account: str, address: str, now: float | None = None) -> float:
        """Seconds to wait before this login may be tried (0: go ahead)."""
        now = time.time() if now is None else now
        with self._lock:
            return max(self._wait((site, "account:" + account.lower()), ACCOUNT_FREE, ACCOUNT_MAX_WAIT, now),
                       self._wait((site, "address:" + address), ADDRESS_FREE, ADDRESS_MAX_WAIT, now))

    def failed(self, site: str, account: str, address: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            for key in ((site, "account:" + account.lower()), (site, "address:" + address)):
                count, _ = self._failures.get(key, (0, 0.0))
                self._failures[key] = (count + 1, now)

    def succeeded(self, site: str, account: str, address: str) -> None:
        with self._lock:
            self._failures.pop((site, "account:" + account.lower()), None)
            self._failures.pop((site, "address:" + address), None)


_GUARD = LoginGuard()


def guard() -> LoginGuard:
    return _GUARD


_DUMMY_HASH: list[str] = []


def _dummy_check(password: str) -> None:
    """Hash ``password`` as a real login would, so unknown accounts take as long to refuse."""
    from syft.service.user.user import check_pwd, salt_and_hash_password

    if not _DUMMY_HASH:
        _DUMMY_HASH.append(salt_and_hash_password("medsyft-no-such-account", 12)[1])
    check_pwd(str(password or ""), _DUMMY_HASH[0])


def guarded_login(original):
    """Wraps Syft's ``UserService.exchange_credentials``."""

    def exchange_credentials(self, context):
        from syft.types.errors import SyftException

        from .registry import site_of

        site = site_of(context.server.id)
        credentials = getattr(context, "login_credentials", None)
        account = str(getattr(credentials, "email", "") or "")
        address = client_address.get()
        if site is None or not account:
            return original(self, context)
        name = site.spec.name
        wait = _GUARD.check(name, account, address)
        if wait > 0:
            site.audit().append("login-refused", account=account, address=address, wait_seconds=round(wait, 1))
            raise SyftException(public_message=f"too many failed logins; try again in {wait:.0f} s")
        try:
            if self.stash.get_by_email(credentials=self.root_verify_key, email=account).is_err():
                _dummy_check(getattr(credentials, "password", ""))  # as slow as a real account's check
                raise SyftException(public_message=FAILED)
            result = original(self, context)
        except SyftException:
            _GUARD.failed(name, account, address)
            site.audit().append("login-failed", account=account, address=address)
            raise SyftException(public_message=FAILED) from None  # the same for unknown accounts
        _GUARD.succeeded(name, account, address)
        return result

    return exchange_credentials

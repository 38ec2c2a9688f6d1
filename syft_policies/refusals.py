"""Refusals by the hospital's own rules, and how their reason reaches the researcher.

Syft hides every exception raised inside approved code behind "Exception encountered
while running ..." (an error message could carry data). A refusal by the site's rules
(budget spent, approval expired, rounds used up) is different: the researcher needs the
reason to act on it. A :class:`Refused` created by medsyft's own site code records its
message; the datasite passes that message on (``datasites.syft_patches``). One raised
by submitted code is not recorded, so it cannot be used to smuggle data out.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar

__all__ = ["Refused", "take_refusal"]

_LAST: ContextVar[str | None] = ContextVar("medsyft_refusal", default=None)
_SITE_CODE = ("syft_policies.", "datasites.")


class Refused(PermissionError):
    """The site's rules refuse this execution; the message says why and what to do."""

    def __init__(self, message: str):
        super().__init__(message)
        caller = sys._getframe(1)
        while caller is not None and caller.f_globals.get("__name__", "").endswith("refusals"):
            caller = caller.f_back
        name = caller.f_globals.get("__name__", "") if caller is not None else ""
        if name.startswith(_SITE_CODE):
            _LAST.set(message[:500])


def take_refusal() -> str | None:
    """The last recorded refusal in this context, cleared."""
    message = _LAST.get()
    _LAST.set(None)
    return message

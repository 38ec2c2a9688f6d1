"""Refusals by the hospital's own rules: budget spent, approval expired, attempts used up.

Raised by the datasite's own code (never by researcher code, which runs in an isolated
worker), so the message is the site's and reaches the researcher as it is.
"""

from __future__ import annotations

__all__ = ["Refused"]


class Refused(PermissionError):
    """The site's rules refuse this; the message says why and what to do."""

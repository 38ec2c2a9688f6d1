"""Officer sessions of the console: random tokens, idle and absolute expiry, CSRF tokens.

Only a hash of each token is kept, so a memory dump of the console holds no usable
cookie. A session holds the officer's own Syft client: every decision is made as that
officer, and the audit log names them. Browser sessions (cookie + CSRF token) and API
sessions (bearer token, used by the ``medsyft`` CLI) live in separate stores, so neither
kind of token opens the other door.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Session", "Sessions", "IDLE_SECONDS", "MAX_SECONDS"]

IDLE_SECONDS = 15 * 60
MAX_SECONDS = 8 * 3600


@dataclass
class Session:
    email: str
    role: str
    client: Any
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)
    flash: str = ""


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    def __init__(self, *, idle_seconds: float = IDLE_SECONDS, max_seconds: float = MAX_SECONDS):
        self.idle_seconds, self.max_seconds = float(idle_seconds), float(max_seconds)
        self._live: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, email: str, role: str, client) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(email=email, role=role, client=client)
        with self._lock:
            self._live[_key(token)] = session
        return token, session

    def lookup(self, token: str | None) -> tuple[Session | None, str]:
        """(session, "ok") or (None, "expired" / "none"); an expired session is dropped."""
        if not token:
            return None, "none"
        now = time.monotonic()
        with self._lock:
            session = self._live.get(_key(token))
            if session is None:
                return None, "none"
            if now - session.last > self.idle_seconds or now - session.created > self.max_seconds:
                del self._live[_key(token)]
                return None, "expired"
            session.last = now
            return session, "ok"

    def drop(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            return self._live.pop(_key(token), None)

    @staticmethod
    def csrf_ok(session: Session, submitted: str | None) -> bool:
        return bool(submitted) and secrets.compare_digest(session.csrf, str(submitted))

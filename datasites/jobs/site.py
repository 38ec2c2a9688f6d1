"""The hospital as a vetted job sees it: ask to spend epsilon, read and write the study's state.

Inside the isolated worker a job cannot touch the site's files. Everything it needs from
the hospital goes through a :class:`Hospital`: the datasite checks each request and does
the writing (the ledger debit, the study's accountant and local layers, a signature), and
refuses what its rules forbid. Run on a laptop (a dry run on a mock, a lab experiment) a
job gets a :class:`LocalHospital`: state in memory, no budget, nothing signed.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from typing import Any

__all__ = ["Refused", "Hospital", "LocalHospital", "hospital", "use_hospital"]

_DOC = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


class Refused(PermissionError):
    """The hospital's rules refuse this job; the message says why and what to do."""


class Hospital(ABC):
    """What a vetted job may ask of the hospital it runs at."""

    name: str = "dry-run"
    dry_run: bool = True

    @abstractmethod
    def debit(self, epsilon: float, *, reference: str, once: bool = False) -> float | None:
        """Pay ``epsilon`` from the budget of the data this job reads, before reading it;
        returns what is left (None on a dry run). Raises :class:`Refused` if it does not fit.
        ``once``: ``reference`` names one release (a round): paid at most once, however often
        an execution cut short is repeated."""

    @abstractmethod
    def load(self, study: str, name: str) -> Any | None:
        """The study's document ``name`` (accountant, local layers, protocol state), or None."""

    @abstractmethod
    def save(self, study: str, name: str, value: Any) -> None:
        """Replace the study's document ``name``; written by the datasite when the job succeeds."""

    @abstractmethod
    def sign(self, message: bytes) -> bytes:
        """The hospital's Ed25519 signature of ``message`` (its HE contributions, its secure-
        aggregation keys and survivor sets)."""

    @abstractmethod
    def peers(self) -> dict[str, bytes]:
        """The federation's sites and their Ed25519 public keys, as the datasite trusts them
        (published by each hospital, never taken from a researcher's message)."""

    @abstractmethod
    def researcher(self) -> str:
        """An opaque id of the researcher this execution runs for, the same at every site (a
        hash of the account's e-mail): what the secure-aggregation signatures are bound to."""

    @staticmethod
    def check_name(study: str, name: str) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$", study or "") or ".." in study:
            raise ValueError(f"study id {study!r} must be 1-80 letters, digits, '.', '_' or '-'")
        if not _DOC.match(name or ""):
            raise ValueError(f"document name {name!r} must be lowercase letters, digits and '-'")


class LocalHospital(Hospital):
    """A hospital in memory: for dry runs on mocks and for experiments without a datasite."""

    def __init__(self, name: str = "dry-run", *, dry_run: bool = True, peers: dict[str, bytes] | None = None,
                 researcher: str = "local"):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.name, self.dry_run = name, dry_run
        self.debits: list[tuple[float, str]] = []
        self._docs: dict[tuple[str, str], Any] = {}
        self._key = Ed25519PrivateKey.generate()
        self._peers = dict(peers or {})
        self._researcher = str(researcher)

    def debit(self, epsilon: float, *, reference: str, once: bool = False) -> float | None:
        if not (once and any(r == reference for _, r in self.debits)):
            self.debits.append((float(epsilon), reference))
        return None

    def load(self, study: str, name: str) -> Any | None:
        self.check_name(study, name)
        return self._docs.get((study, name))

    def save(self, study: str, name: str, value: Any) -> None:
        self.check_name(study, name)
        self._docs[(study, name)] = value

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    @property
    def public_key(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def peers(self) -> dict[str, bytes]:
        return {**self._peers, self.name: self.public_key}

    def researcher(self) -> str:
        return self._researcher

    def trust(self, others: dict[str, bytes]) -> None:
        """Experiments: the federation's keys (e.g. ``{h.name: h.public_key for h in hospitals}``)."""
        self._peers.update(others)


_CURRENT: Hospital | None = None


def hospital() -> Hospital:
    """The hospital this job runs at (inside a worker), else a fresh dry-run one."""
    return _CURRENT if _CURRENT is not None else LocalHospital()


@contextlib.contextmanager
def use_hospital(value: Hospital):
    """Run jobs against ``value`` (the worker installs its channel; experiments a LocalHospital)."""
    global _CURRENT
    previous, _CURRENT = _CURRENT, value
    try:
        yield value
    finally:
        _CURRENT = previous

"""What a hospital remembers between the rounds of a study: its own privacy accountant
and the layers that never leave it (FedBN). Kept at the site, never sent to the researcher.

A vetted job finds its site through the ``site_uid`` column of the cohort asset; each
datasite registers its directory here when it starts (in this process or in the
``datasites.serve`` process). A cohort with an unregistered uid (a mock, dry-run on a
laptop) gets a throw-away state, so nothing a dry run does is mistaken for real spend.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["register_site", "site_directory", "site_ledger", "site_audit", "output_digest", "check_approval", "study_state", "StudyState", "LEDGER_FILE"]

LEDGER_FILE = "ledger.sqlite"

_SITES: dict[str, Path] = {}
_STUDY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


def register_site(uid: str, site_dir: Path) -> None:
    _SITES[str(uid)] = Path(site_dir)


def site_directory(uid: str) -> Path | None:
    return _SITES.get(str(uid))


def site_audit(uid: str):
    """The site's audit log, or None for an unregistered (mock / dry-run) cohort."""
    from syft_policies.audit import AUDIT_FILE, AuditLog

    directory = site_directory(uid)
    return None if directory is None else AuditLog(directory / AUDIT_FILE)


def output_digest(value) -> str:
    """SHA-256 of a job's output (arrays by their bytes), for the audit log."""
    import hashlib

    h = hashlib.sha256()

    def feed(v):
        if isinstance(v, dict):
            for k in sorted(v):
                h.update(str(k).encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            for item in v:
                feed(item)
        elif isinstance(v, np.ndarray):
            h.update(np.ascontiguousarray(v).tobytes())
        else:
            h.update(repr(v).encode())

    feed(value)
    return h.hexdigest()


def check_approval(uid: str, study: str) -> None:
    """Refuse to run a study whose approval at this site has expired (governance metadata)."""
    from syft_policies.governance import GOVERNANCE_FILE, GovernanceStore

    directory = site_directory(uid)
    if directory is not None:
        GovernanceStore(directory / GOVERNANCE_FILE).check_study(study)


def site_ledger(uid: str):
    """The site's privacy-budget ledger, or None for an unregistered (mock / dry-run) cohort."""
    from syft_policies.ledger import BudgetLedger

    directory = site_directory(uid)
    return None if directory is None else BudgetLedger(directory / LEDGER_FILE)


class StudyState:
    """Rounds done, the accountant's history ``[(noise_multiplier, sample_rate, steps)]``,
    epsilon spent, and the site-local layers, for one study at one site."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._file = directory / "state.json"
        data = json.loads(self._file.read_text()) if self._file.exists() else {}
        self.rounds_done: int = data.get("rounds_done", 0)
        self.accountant: list[tuple[float, float, int]] = [tuple(h) for h in data.get("accountant", [])]
        self.epsilon: float = data.get("epsilon", 0.0)
        local = directory / "local.npz"
        self.local_layers: dict[str, np.ndarray] = dict(np.load(local)) if local.exists() else {}

    def save(self) -> None:
        """Write atomically: a crash leaves the previous round's state, never half of one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.local_layers:
            tmp = self.directory / "local.tmp.npz"
            np.savez(tmp, **self.local_layers)
            os.replace(tmp, self.directory / "local.npz")
        payload = {"rounds_done": self.rounds_done, "accountant": [list(h) for h in self.accountant],
                   "epsilon": self.epsilon}
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, self._file)


@contextmanager
def study_state(site_uid: str, study: str):
    """Lock and load the state of ``study`` at the site; saved by the caller via ``.save()``."""
    if not _STUDY_ID.match(study or ""):
        raise ValueError(f"study id {study!r} must be 1-80 letters, digits, '.', '_' or '-'")
    base = site_directory(site_uid)
    scratch = None
    if base is None:
        scratch = tempfile.TemporaryDirectory(prefix="medsyft-dryrun-")
        base = Path(scratch.name)
    directory = base / "jobs" / study
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield StudyState(directory)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if scratch is not None:
                scratch.cleanup()

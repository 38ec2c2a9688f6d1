"""The datasite's side of an execution: what a worker may ask, and who decides.

A worker never writes the site's files. It asks; the :class:`Mediator` checks and acts:

- ``debit(epsilon, reference)``: an atomic check-and-debit of the ledger of every dataset
  the execution actually reads (found from its inputs, never from the plan), in the
  requesting researcher's name, so per-researcher caps hold; refused when it does not fit;
- ``load`` / ``save`` of a study document (accountant, local layers, secure-aggregation
  state), kept per researcher under ``<site>/jobs/<researcher>/<study>/`` and locked for
  the whole execution, so one researcher's plan cannot name another's study;
- ``sign(message)`` with the site's Ed25519 signing key;
- ``peers()``: the federation's sites and their public signing keys, from the directory
  where each hospital publishes its own (``<home>/federation-keys/<site>.pub``), never
  from anything a researcher sends;
- ``researcher()``: a hash of the requesting researcher's e-mail, which secure-aggregation
  signatures name (a signature made for one researcher's study is worthless in another's).

Everything here is for the site's own templates only. Custom code gets a refusal: it can
neither read nor rewind a study's accountant, nor debit (a debit it chose would be a
channel: the spent budget is visible to researchers), and it releases exact results
under the two-person rule instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import signal
from pathlib import Path

from syft_policies.files import private_file, write_private

from ..jobs import wire
from ..jobs.site import Hospital

__all__ = ["Mediator", "StudyStore", "publish_key", "federation_keys"]

KEYS_DIR = "federation-keys"
# Set in a datasite's environment by the operator (the fault tests): "crash-after-debit" kills
# the server right after a debit commits, before its audit entry, as a power cut would.
FAULT_ENV = "MEDSYFT_FAULT"


def publish_key(site) -> None:
    """Publish this hospital's public signing key where the federation's datasites read it."""
    from ..credentials import site_signer

    directory = Path(site.site_dir).parent / KEYS_DIR
    directory.mkdir(mode=0o755, exist_ok=True)
    path = directory / f"{site.spec.name}.pub"
    key = site_signer(site.site_dir, site.spec.name).public_key
    if not path.exists() or path.read_bytes() != key:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(key)
        tmp.replace(path)


def federation_keys(home: Path) -> dict[str, bytes]:
    """``{site: Ed25519 public key}`` of every hospital that published one under ``home``."""
    directory = Path(home) / KEYS_DIR
    if not directory.is_dir():
        return {}
    return {p.stem: p.read_bytes() for p in sorted(directory.glob("*.pub")) if len(p.read_bytes()) == 32}


class StudyStore:
    """One researcher's study documents at a site (``<site>/jobs/<owner>/<study>/<name>.bin``,
    wire format, mode 0600; ``<owner>`` is a hash of the researcher's e-mail)."""

    def __init__(self, site_dir: Path, owner: str):
        self.root = Path(site_dir) / "jobs" / hashlib.sha256(owner.lower().encode()).hexdigest()[:16]

    def path(self, study: str, name: str) -> Path:
        Hospital.check_name(study, name)
        return self.root / study / f"{name}.bin"

    def load(self, study: str, name: str):
        path = self.path(study, name)
        return wire.loads(path.read_bytes()) if path.exists() else None

    def save(self, study: str, name: str, value) -> None:
        path = self.path(study, name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(path, wire.dumps(value))

    def lock(self, study: str):
        """An exclusive lock on the study (held by one execution at a time)."""
        Hospital.check_name(study, "state")
        directory = self.root / study
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = open(private_file(directory / ".lock"), "w")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle


class Mediator:
    """Answers one execution's requests. ``trusted``: the code is one of the site's templates."""

    def __init__(self, site, *, researcher: str, datasets: tuple[str, ...], request: str, trusted: bool):
        self.site, self.researcher, self.datasets = site, researcher, datasets
        self.request, self.trusted = request, trusted
        self.store = StudyStore(site.site_dir, researcher)
        self.debited = 0.0
        self.refusal: str | None = None  # the site's own last refusal, safe to show the researcher
        self._locks: dict[str, object] = {}

    def __call__(self, op: str, message: dict) -> dict:
        if not self.trusted:
            return self._refuse(f"{op} is for the site's vetted templates only")
        if op == "debit":
            return self._debit(message.get("epsilon"), message.get("reference"), message.get("once") is True)
        if op in ("load", "save"):
            if not self.datasets:  # a study's accountant moves only with a run on this site's own data
                return self._refuse("a study's state is kept only for executions that read this site's data")
            study, name = str(message.get("study", "")), str(message.get("name", ""))
            try:
                self.store.path(study, name)
            except ValueError as exc:
                return self._refuse(str(exc))
            if study not in self._locks:
                self._locks[study] = self.store.lock(study)
            if op == "load":
                return {"value": self.store.load(study, name)}
            self.store.save(study, name, message.get("value"))
            return {"value": None}
        if op == "sign":
            from ..credentials import site_signer

            payload = message.get("message")
            if not isinstance(payload, bytes) or len(payload) > 4096:
                return self._refuse("sign takes at most 4096 bytes")
            return {"value": site_signer(self.site.site_dir, self.site.spec.name).sign(payload)}
        if op == "peers":
            return {"value": federation_keys(Path(self.site.site_dir).parent)}
        if op == "researcher":  # what secure-aggregation signatures name, so they count for one researcher only
            return {"value": hashlib.sha256(self.researcher.lower().encode()).hexdigest()}
        return self._refuse(f"unknown request {op!r}")

    def _refuse(self, message: str) -> dict:
        self.refusal = message
        return {"refused": message}

    def _debit(self, epsilon, reference, once: bool = False) -> dict:
        from syft_policies.ledger import BudgetExceeded

        ceiling = float(self.site.spec.plan_bounds.max_epsilon)  # a whole study at this site, at most
        if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not math.isfinite(epsilon) \
                or not 0 <= epsilon <= ceiling:
            return self._refuse(f"a debit needs a finite epsilon between 0 and the site's maximum {ceiling:g}")
        if not self.datasets:
            return {"value": None}  # reads no private asset here: nothing to pay for
        reference = f"{str(reference or '')[:120]} (request {self.request[:8]})"
        ledger = self.site.ledger()
        try:
            left = ledger.debit_all(self.datasets, float(epsilon), reference=reference, researcher=self.researcher,
                                    once=once)
        except BudgetExceeded as exc:
            return self._refuse(str(exc))
        if ledger.debit_ids and os.environ.get(FAULT_ENV) == "crash-after-debit":  # fault tests only
            os.kill(os.getpid(), signal.SIGKILL)
        if ledger.debit_ids:  # a crash before this line is repaired at start-up (reconcile_debits)
            self.debited += float(epsilon)
            self.site.audit().append("debited", request=self.request, datasets=list(self.datasets),
                                     researcher=self.researcher, epsilon=float(epsilon), reference=reference,
                                     debits=ledger.debit_ids)
        else:
            self.site.audit().append("debit-repeated", request=self.request, researcher=self.researcher,
                                     reference=reference, note="paid once already: not debited again")
        return {"value": left}

    def close(self) -> None:
        for handle in self._locks.values():
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._locks = {}

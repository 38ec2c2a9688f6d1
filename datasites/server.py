"""Run a hospital as a Syft datasite: in-process, or as its own HTTP server process.

A site keeps everything under ``<home>/<site>/`` (mode 0700, files 0600): its Syft
database and blob store, a random root signing key (Syft's ``orchestra`` derives it from
the site name, which any client could recompute), data, ledger, approvals, audit log, and
- while served over HTTP - ``server.json`` with pid and port. Generated passwords live
beside the tree (``<home>/.credentials``). The same directory on restart gives the same
datasite back. Researcher code never runs in this process: see ``datasites.isolation``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .credentials import site_passwords
from .spec import HospitalSpec

__all__ = ["SiteHandle", "start_site", "stop_site", "site_status", "connect", "open_datasite"]

LOOPBACK = "127.0.0.1"


def _silence_syft() -> None:
    if not os.environ.get("MEDSYFT_VERBOSE"):
        for name in ("syft", "uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 10)


def open_datasite(spec: HospitalSpec, site_dir: Path):
    """Construct the Syft ``Datasite`` for this spec, persisted in ``site_dir``."""
    import syft  # noqa: F401  (registers serialisers)
    from syft.server.credentials import SyftSigningKey
    from syft.server.datasite import Datasite
    from syft.store.blob_storage.on_disk import OnDiskBlobStorageClientConfig, OnDiskBlobStorageConfig
    from syft.store.db.sqlite import SQLiteDBConfig
    from syft.types.uid import UID

    from syft_policies.files import write_private

    _silence_syft()
    from .syft_patches import apply as patch_syft

    patch_syft()
    site_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ident = site_dir / "site.json"
    key_file = site_dir / "signing_key"
    if ident.exists() and key_file.exists():
        uid = UID.from_string(json.loads(ident.read_text())["uid"])
        key = SyftSigningKey.from_string(key_file.read_text().strip())
    else:
        uid, key = UID(), SyftSigningKey.generate()
        write_private(key_file, str(key))
        write_private(ident, json.dumps({"uid": uid.no_dash, "name": spec.name}))
    for sub in ("db", "blob"):
        (site_dir / sub).mkdir(mode=0o700, exist_ok=True)
    passwords = site_passwords(spec, site_dir)
    from .isolation import prepare_site
    from syft_policies.quiet import quiet
    from .registry import register_site

    with quiet():
        server = Datasite(
            name=spec.name,
            id=uid,
            signing_key=key,
            root_email=spec.admin.email,
            root_username=spec.admin.name,
            root_password=passwords[spec.admin.email],
            db_config=SQLiteDBConfig(filename="syft.db", path=site_dir / "db"),
            blob_storage_config=OnDiskBlobStorageConfig(
                client_config=OnDiskBlobStorageClientConfig(base_directory=site_dir / "blob")),
            reset=False,
            in_memory_workers=True,
        )
    prepare_site(register_site(uid.no_dash, spec, site_dir))  # isolation, execution record, file modes
    return server


@dataclass
class SiteHandle:
    """A running hospital datasite and how to log in to it."""

    spec: HospitalSpec
    site_dir: Path
    mode: str  # "inprocess" or "http"
    server: Any = None  # the Datasite, in-process mode
    port: int | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str | None:
        return f"http://{LOOPBACK}:{self.port}" if self.port else None

    def login(self, email: str, password: str | None = None):
        """A Syft client for ``email`` (password from the site's secrets if not given)."""
        import syft as sy

        from syft_policies.quiet import quiet

        password = password or site_passwords(self.spec, self.site_dir)[email]
        with quiet():
            if self.mode == "http":
                return sy.login(url=f"http://{LOOPBACK}", port=self.port, email=email, password=password)
            guest = self.server.get_guest_client(verbose=False)
            return guest.login(email=email, password=password)

    def admin(self):
        return self.login(self.spec.admin.email)

    def officer(self):
        return self.login(self.spec.compliance_officer.email)

    def researcher(self, email: str | None = None):
        return self.login(email or self.spec.researchers[0].email)

    @property
    def context(self):
        from .registry import SiteContext

        return SiteContext("", self.spec, self.site_dir)

    def ledger(self):
        """This site's privacy-budget ledger (``syft_policies.ledger.BudgetLedger``)."""
        return self.context.ledger()

    def audit(self):
        """This site's hash-chained audit log (``syft_policies.audit.AuditLog``)."""
        return self.context.audit()

    def governance(self):
        """This site's approval metadata (``syft_policies.governance.GovernanceStore``)."""
        return self.context.governance()

    def executions(self):
        """Every execution attempt at this site (``datasites.isolation.attempts.ExecutionStore``)."""
        return self.context.executions()

    def stop(self) -> None:
        if self.mode == "http":
            stop_site(self.spec, self.site_dir.parent)
        elif self.server is not None:
            self.server.stop()
            self.server = None


def _wait_http(port: int, proc: subprocess.Popen | None, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"datasite process exited with code {proc.returncode}; last log lines:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/api/v2/metadata", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"datasite on port {port} did not answer within {timeout:.0f}s; see {log}")


def start_site(spec: HospitalSpec, home: str | Path, *, mode: str = "inprocess", port: int | None = None,
               timeout: float = 180.0, icu_dataset: bool = True) -> SiteHandle:
    """Start (and provision, idempotently) one hospital datasite.

    ``mode="inprocess"`` runs it in this Python process; ``mode="http"`` starts its own
    process serving on loopback (``port`` or the spec's port) that outlives this one.
    Site data must exist (see :func:`datasites.ensure_site_data`) unless ``icu_dataset=False``
    (a site that serves other datasets only, e.g. the cross-border scenario's; in-process).
    """
    home = Path(home).resolve()
    site_dir = home / spec.name
    if mode == "inprocess":
        from .provision import provision

        from .isolation import harden

        server = open_datasite(spec, site_dir)
        provision(server, spec, site_dir, icu_dataset=icu_dataset)
        harden(site_dir)
        return SiteHandle(spec, site_dir, mode, server=server)
    if mode != "http":
        raise ValueError(f"mode must be 'inprocess' or 'http', got {mode!r}")
    running = site_status(spec, home)
    if running["state"] == "running":
        return SiteHandle(spec, site_dir, mode, port=running["port"])
    port = port or spec.port
    log = site_dir / "server.log"
    site_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "datasites.serve", "--spec", str(spec.path), "--home", str(home), "--port", str(port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        _wait_http(port, proc, timeout, log)
    except Exception:
        proc.kill()
        raise
    (site_dir / "server.json").write_text(json.dumps({"pid": proc.pid, "port": port, "started": time.time()}))
    return SiteHandle(spec, site_dir, mode, port=port, process=proc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        pid_done, _ = os.waitpid(pid, os.WNOHANG)
        return pid_done == 0
    except ChildProcessError:
        return True


def site_status(spec: HospitalSpec, home: str | Path) -> dict:
    """``state`` is running / stopped / stale (process gone or not answering)."""
    info_file = Path(home) / spec.name / "server.json"
    if not info_file.exists():
        return {"site": spec.name, "state": "stopped", "port": None, "pid": None}
    info = json.loads(info_file.read_text())
    state = "stale"
    if _alive(info["pid"]):
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{info['port']}/api/v2/metadata", timeout=3) as r:
                state = "running" if r.status == 200 else "stale"
        except OSError:
            state = "stale"
    return {"site": spec.name, "state": state, "port": info["port"], "pid": info["pid"]}


def stop_site(spec: HospitalSpec, home: str | Path, timeout: float = 20.0) -> bool:
    """Stop a site's HTTP server process. True if one was running."""
    info_file = Path(home) / spec.name / "server.json"
    if not info_file.exists():
        return False
    pid = json.loads(info_file.read_text())["pid"]
    was_running = _alive(pid)
    if was_running:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    info_file.unlink(missing_ok=True)
    return was_running


def connect(spec: HospitalSpec, home: str | Path) -> SiteHandle:
    """A handle on a site already served over HTTP (``medsyft sites up``)."""
    status = site_status(spec, home)
    if status["state"] != "running":
        raise RuntimeError(f"site {spec.name} is not running ({status['state']}); start it with "
                           f"`medsyft sites up --site {spec.name}`")
    return SiteHandle(spec, Path(home).resolve() / spec.name, "http", port=status["port"])

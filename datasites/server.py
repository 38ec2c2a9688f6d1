"""Run a hospital as a Syft datasite: in-process, or as its own HTTP server process.

A site keeps everything under ``<home>/<site>/`` (mode 0700, files 0600): its Syft
database and blob store, a random root signing key (Syft's ``orchestra`` derives it from
the site name, which any client could recompute), data, ledger, approvals, audit log, and
- while served over HTTP - ``server.lock`` (held by the one server process of the site for
its whole life) and ``server.json`` (its pid, port and state). Generated passwords live
beside the tree (``<home>/.credentials``). The same directory on restart gives the same
datasite back. Researcher code never runs in this process: see ``datasites.isolation``.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .credentials import site_passwords
from .spec import HospitalSpec

__all__ = ["SiteHandle", "start_site", "stop_site", "stop_site_report", "site_status", "connect", "open_datasite",
           "SiteLock", "lock_holder"]

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
    process: subprocess.Popen | None = None  # the server process, if this call started it
    pid: int | None = None  # the server's pid (http)
    started: bool = False  # False: it was already running (or a racing call started it)

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


# --- one server per site: the lock, server.json, identity --------------------------------

LOCK_FILE = "server.lock"  # flock'ed by the site's server process for its whole life; holds its pid
INFO_FILE = "server.json"  # written by that process only: pid, port, started, state (starting / serving)
EXIT_LOCKED = 3  # datasites.serve: another process already serves this site
EXIT_PORT_TAKEN = 4  # datasites.serve: the port is used by another process
STATUS_TIMEOUT = 3.0  # seconds a serving site has to answer before it is called unresponsive


class SiteLock:
    """The exclusive lock of a site's folder, held by the one server process serving it.

    ``fcntl.flock`` on ``<site>/server.lock``: the kernel drops it when the process dies,
    however it dies, so a lock that is held means a live server. The file holds the pid.
    """

    def __init__(self, site_dir: Path):
        self.path = Path(site_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, wait: float = 3.0) -> int | None:
        """Take the lock (None), or the pid of the process holding it. ``wait`` covers a
        status probe that holds it for an instant."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return _read_pid(self.path) or -1
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _proc_args(pid: int) -> list[str] | None:
    """The command line of ``pid`` (None if it is gone; [] if this system has no /proc)."""
    if not Path("/proc/self").exists():
        return [] if _alive(pid) else None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _serves(pid: int, site_dir: Path) -> bool:
    """Is ``pid`` a ``datasites.serve`` process for this site's home?"""
    args = _proc_args(pid)
    if args is None:
        return False
    if not args:  # no /proc: alive is all we can tell
        return True
    if "datasites.serve" not in args or "--home" not in args[:-1]:
        return False
    home = Path(args[args.index("--home") + 1])
    if not home.is_absolute():
        try:
            home = Path(os.readlink(f"/proc/{pid}/cwd")) / home
        except OSError:
            return False
    return os.path.realpath(home) == os.path.realpath(site_dir.parent)


def lock_holder(site_dir: Path) -> tuple[int | None, bool]:
    """``(pid, verified)`` of the process holding the site's lock, ``(None, False)`` if none does.

    ``verified``: that pid is this site's ``datasites.serve`` process (its command line says so)."""
    path = Path(site_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, False
    try:
        pid = None
        for _ in range(20):  # a server that just took it writes its pid; another probe lets go at once
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(path)
                if pid and _serves(pid, Path(site_dir)):
                    return pid, True
                time.sleep(0.05)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None, False
        return (pid or -1), False
    finally:
        os.close(fd)


def write_server_info(site_dir: Path, port: int, state: str, started: float, console_port: int | None = None) -> None:
    """server.json, by the process holding the lock only."""
    from syft_policies.files import write_private

    write_private(Path(site_dir) / INFO_FILE,
                  json.dumps({"pid": os.getpid(), "port": port, "started": started, "state": state,
                              "console_port": console_port}))


def _read_info(site_dir: Path) -> dict:
    try:
        info = json.loads((Path(site_dir) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else {}


def _remove_info(site_dir: Path, pid: int | None) -> None:
    """Remove server.json if it still names ``pid`` (a new server may just have written its own)."""
    if pid is not None and _read_info(site_dir).get("pid") == pid:
        (Path(site_dir) / INFO_FILE).unlink(missing_ok=True)


def _identity(site_dir: Path) -> dict:
    try:
        return json.loads((Path(site_dir) / "site.json").read_text())
    except (OSError, ValueError):
        return {}


def _ask(port: int, timeout: float) -> tuple[str, Any]:
    """What answers on ``127.0.0.1:port``: ("nothing" | "silent" | "broken" | "other" | "datasite", detail)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", "/api/v2/metadata")
        response = conn.getresponse()
        body = response.read(1 << 16)
    except ConnectionRefusedError:
        return "nothing", None
    except (socket.timeout, TimeoutError):
        return "silent", None
    except (OSError, http.client.HTTPException) as exc:
        return "broken", type(exc).__name__
    finally:
        conn.close()
    if response.status != 200:
        return "other", f"a web server that is not a Syft datasite: HTTP {response.status}"
    try:
        meta = json.loads(body)
        return "datasite", {"name": str(meta["name"]), "id": str(meta["id"]).replace("-", "").lower()}
    except (ValueError, KeyError, TypeError):
        return "other", "a server that is not a Syft datasite"


def _describe(kind: str, detail: Any) -> str:
    if kind == "datasite":
        return f"datasite {detail['name']} (id {detail['id'][:8]})"
    if kind == "other":
        return detail
    return "a process that does not answer HTTP"


def _port_taken(port: int, who: str) -> str:
    return (f"port {port} is used by another server ({who}); free it or give the site another port "
            f"(`port` in its spec)")


_WORDS = {"running": "running", "starting": "starting", "unresponsive": "unresponsive", "port-taken": "port taken",
          "stopped": "not running"}


def site_status(spec: HospitalSpec, home: str | Path, *, timeout: float = STATUS_TIMEOUT) -> dict:
    """Where a site's HTTP server stands. ``state`` is one of

    - ``running``: its server holds the site's lock and answers as this site (name and id
      of ``<site>/site.json``);
    - ``starting``: its server holds the lock and is still provisioning;
    - ``unresponsive``: a process holds the lock but does not answer within ``timeout``
      (frozen, overloaded): never start another one, stop it first;
    - ``port-taken``: no server of this site, and something else answers on its port;
    - ``stopped``: none (a ``server.json`` left by a dead one is removed: ``cleaned`` is its pid).

    With ``pid``, ``port``, ``label`` (the state in words), ``detail`` (what is known and
    what to do) and ``message`` (both, one line).
    """
    site_dir = Path(home).resolve() / spec.name
    info = _read_info(site_dir)
    pid, verified = lock_holder(site_dir)
    state, port, detail, cleaned = "stopped", None, "", None
    if pid is None:
        if info:  # its server died (killed, crashed) without cleaning up
            _remove_info(site_dir, info["pid"])
            cleaned = info["pid"]
            detail = f"(removed the server.json left by pid {cleaned})"
        probe = info.get("port") or spec.port
        kind, who = _ask(probe, timeout)
        if kind != "nothing":
            state, port, detail = "port-taken", probe, _port_taken(probe, _describe(kind, who))
    else:
        port = (info.get("port") if info.get("pid") == pid else None) or spec.port
        if not verified:
            state, detail = "unresponsive", (f"(pid {pid} holds the site's lock but is not its server): stop that "
                                             f"process, then `medsyft sites up --site {spec.name}`")
        elif info.get("pid") != pid or info.get("state") == "starting":
            waited = f", {time.time() - info['started']:.0f} s" if info.get("pid") == pid else ""
            state, detail = "starting", f"http://{LOOPBACK}:{port} (pid {pid}{waited})"
        else:
            kind, who = _ask(port, timeout)
            ident = _identity(site_dir)
            if kind == "datasite" and who["name"] == spec.name and who["id"] == str(ident.get("uid", "")).lower():
                state, detail = "running", f"http://{LOOPBACK}:{port} (pid {pid})"
            elif kind in ("datasite", "other"):
                state, detail = "port-taken", _port_taken(port, _describe(kind, who))
            else:
                state, detail = "unresponsive", (f"(pid {pid}; no answer on port {port} within {timeout:g} s): "
                                                 f"`medsyft sites down --site {spec.name}` then "
                                                 f"`medsyft sites up --site {spec.name}`")
    return {"site": spec.name, "state": state, "pid": pid, "port": port, "cleaned": cleaned, "label": _WORDS[state],
            "detail": detail, "message": detail if state == "port-taken" else f"{_WORDS[state]} {detail}".strip()}


def _wait_ready(spec: HospitalSpec, home: Path, proc: subprocess.Popen | None, port: int, timeout: float,
                log: Path) -> dict:
    """Wait until the site runs (ours or a racing ``sites up``'s server); raise if it cannot."""
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = site_status(spec, home)
        if status["state"] == "running":
            if proc is not None and status["pid"] != proc.pid:
                try:  # ours lost the race for the lock and exits
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            return status
        code = proc.poll() if proc is not None else None
        if code is not None:
            if code == EXIT_PORT_TAKEN or status["state"] == "port-taken":
                kind, detail = _ask(port, STATUS_TIMEOUT)
                raise RuntimeError(f"{spec.name}: " + _port_taken(port, _describe(kind, detail)))
            if code != EXIT_LOCKED:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"{spec.name}: its server exited with code {code}; last log lines:\n{tail}")
            proc = None  # another `sites up` won the site's lock: wait for its server instead
            continue
        if proc is None and status["state"] == "stopped":
            raise RuntimeError(f"{spec.name}: the server another `sites up` started has exited; see {log}")
        time.sleep(0.3)
    if proc is not None and status.get("pid") in (None, proc.pid):
        _terminate(proc.pid, grace=5.0)
    state = status.get("state", "stopped")
    raise TimeoutError(f"{spec.name} did not answer on port {port} within {timeout:.0f}s ({state}); see {log}")


def start_site(spec: HospitalSpec, home: str | Path, *, mode: str = "inprocess", port: int | None = None,
               timeout: float = 180.0, icu_dataset: bool = True) -> SiteHandle:
    """Start (and provision, idempotently) one hospital datasite.

    ``mode="inprocess"`` runs it in this Python process; ``mode="http"`` starts its own
    process serving on loopback (``port`` or the spec's port) that outlives this one.
    Site data must exist (see :func:`datasites.ensure_site_data`) unless ``icu_dataset=False``
    (a site that serves other datasets only, e.g. the cross-border scenario's; in-process).

    Over HTTP there is one server per site folder (it holds the folder's lock): a site
    already running (or started by a racing call) is returned with ``started=False``; an
    unresponsive one, or its port used by another server, raises with what to do.
    """
    home = Path(home).resolve()
    site_dir = home / spec.name
    if mode == "inprocess":
        from .provision import provision

        from .isolation import harden

        holder, _ = lock_holder(site_dir)
        if holder is not None:
            raise RuntimeError(f"{spec.name} is served over HTTP by pid {holder}; connect to it, or stop it first "
                               f"(`medsyft sites down --site {spec.name}`)")
        server = open_datasite(spec, site_dir)
        provision(server, spec, site_dir, icu_dataset=icu_dataset)
        harden(site_dir)
        return SiteHandle(spec, site_dir, mode, server=server, started=True)
    if mode != "http":
        raise ValueError(f"mode must be 'inprocess' or 'http', got {mode!r}")
    log = site_dir / "server.log"
    status = site_status(spec, home)
    if status["state"] in ("running", "starting"):
        status = _wait_ready(spec, home, None, status["port"], timeout, log)
        return SiteHandle(spec, site_dir, mode, port=status["port"], pid=status["pid"], started=False)
    if status["state"] in ("unresponsive", "port-taken"):
        raise RuntimeError(f"{spec.name}: {status['message']}")
    port = port or spec.port
    site_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "datasites.serve", "--spec", str(spec.path), "--home", str(home), "--port", str(port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=Path(__file__).resolve().parent.parent)
    status = _wait_ready(spec, home, proc, port, timeout, log)
    ours = status["pid"] == proc.pid
    return SiteHandle(spec, site_dir, mode, port=status["port"], process=proc if ours else None, pid=status["pid"],
                      started=ours)


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
        pass
    try:  # so does anyone's zombie
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _signal(pid: int, sig: int) -> None:
    """``sig`` to the server's process group (it leads one when started by ``start_site``), else to it."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _terminate(pid: int, grace: float) -> bool:
    """SIGTERM (and SIGCONT, so a frozen server can act on it), then SIGKILL after ``grace``
    seconds. True if SIGKILL was needed."""
    _signal(pid, signal.SIGTERM)
    _signal(pid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _alive(pid):
        return False
    _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        try:
            s.connect((LOOPBACK, port))
            return True
        except ConnectionRefusedError:
            return False
        except OSError:
            return True


def stop_site_report(spec: HospitalSpec, home: str | Path, timeout: float = 20.0) -> dict:
    """Stop a site's HTTP server, only if it is verifiably this site's server (it holds the
    site's lock and its command line is ``datasites.serve`` for this home), and check that
    its port is free afterwards.

    Returns ``was`` (running / not running), ``pid``, ``port``, ``killed`` (SIGKILL was
    needed), ``port_free``, ``cleaned`` (pid of a dead server whose server.json was removed)
    and a one-line ``message``. Raises if the lock's holder is not this site's server or if
    the process cannot be stopped.
    """
    site_dir = Path(home).resolve() / spec.name
    info = _read_info(site_dir)
    pid, verified = lock_holder(site_dir)
    if pid is None:
        cleaned = info.get("pid")
        _remove_info(site_dir, cleaned)
        note = f" (removed the server.json left by pid {cleaned})" if cleaned else ""
        return {"was": "not running", "pid": None, "port": info.get("port"), "killed": False, "port_free": None,
                "cleaned": cleaned, "message": "was not running" + note}
    if not verified:
        raise RuntimeError(f"{spec.name}: pid {pid} holds the site's lock but is not its server; "
                           f"nothing was stopped, stop that process yourself")
    port = info.get("port") if info.get("pid") == pid else spec.port
    started = time.monotonic()
    killed = _terminate(pid, grace=timeout)
    if _alive(pid):
        raise RuntimeError(f"{spec.name}: pid {pid} did not exit even after SIGKILL; check it with `ps -p {pid}`")
    _remove_info(site_dir, pid)
    deadline = time.monotonic() + 5
    while _listening(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    free = not _listening(port)
    how = f", killed after {time.monotonic() - started:.0f} s" if killed else ""
    message = f"stopped (pid {pid}{how}); " + (f"port {port} is free" if free else
                                                f"but port {port} still answers: another process uses it")
    return {"was": "running", "pid": pid, "port": port, "killed": killed, "port_free": free, "cleaned": None,
            "message": message}


def stop_site(spec: HospitalSpec, home: str | Path, timeout: float = 20.0) -> bool:
    """Stop a site's HTTP server process (see :func:`stop_site_report`). True if one was running."""
    return stop_site_report(spec, home, timeout)["was"] == "running"


def connect(spec: HospitalSpec, home: str | Path) -> SiteHandle:
    """A handle on a site already served over HTTP (``medsyft sites up``)."""
    status = site_status(spec, home)
    if status["state"] == "starting":
        status = _wait_ready(spec, Path(home).resolve(), None, status["port"], 180.0,
                             Path(home) / spec.name / "server.log")
    if status["state"] == "stopped":
        raise RuntimeError(f"site {spec.name} is not running; start it with `medsyft sites up --site {spec.name}`")
    if status["state"] != "running":
        raise RuntimeError(f"site {spec.name}: {status['message']}")
    return SiteHandle(spec, Path(home).resolve() / spec.name, "http", port=status["port"], pid=status["pid"])

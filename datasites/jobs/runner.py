"""The isolated worker: a pre-started Python that runs each execution in a fresh child.

The datasite's supervisor (``datasites.isolation``) starts this inside a bubblewrap
sandbox. It drops to an unprivileged uid, imports the libraries the vetted jobs use
once, and then, for every execution, forks a child that:

- gets its resource limits (memory, CPU time, processes, file size) before anything else;
- receives the job over its own socket: the code to run (a vetted template's source or
  the approved request's), the inputs, and the name of the hospital;
- runs it with a :class:`Channel` as its hospital, so every debit, state document or
  signature is a request the datasite checks and carries out;
- sends back only data (``wire``): the result, a refusal by the job, or an error whose
  detail the datasite keeps in its own log.

After each child the worker kills every process left in its sandbox and wipes its
scratch space (everything else in the sandbox is read-only):
no execution sees what an earlier one did, and a monkeypatched module dies with its child.

Control protocol (``SOCK_SEQPACKET``, one message per packet): worker -> datasite
``{"op": "ready"}``; datasite -> worker ``{"op": "run", "limits": {...}}`` plus the
execution's socket; worker -> datasite ``{"op": "done", "status": ...}``.
"""

from __future__ import annotations

import argparse
import builtins
import ctypes
import gc
import importlib
import os
import pickle
import resource
import signal
import socket
import sys
import time
import traceback

from . import wire
from .site import Hospital, Refused, use_hospital

__all__ = ["main", "Channel"]

PRELOAD = ("numpy", "pandas", "torch", "torch.optim", "torch._dynamo", "opacus", "opacus.layers",
           "opacus.data_loader", "opacus.accountants", "tenseal", "opendp.prelude",
           "cryptography.hazmat.primitives.asymmetric.x25519", "cryptography.hazmat.primitives.ciphers.aead",
           "privacy.accounting", "secagg", "he", "datasites.jobs.training", "datasites.jobs.evaluation",
           "datasites.jobs.secure_round", "datasites.jobs.analytics", "datasites.jobs.query", "datasites.jobs.summary",
           "datasites.jobs.rwe", "datasites.jobs.segmentation")
DEFAULT_LIMITS = {"memory_mb": 2048, "cpu_seconds": 600, "processes": 64, "file_mb": 256, "open_files": 256}


class Channel(Hospital):
    """The hospital, reached over the execution's socket: every request is the datasite's to grant."""

    dry_run = False

    def __init__(self, sock: socket.socket, name: str):
        self.sock, self.name = sock, name

    def _ask(self, op: str, **fields):
        wire.send(self.sock, wire.dumps({"op": op, **fields}))
        data = wire.recv(self.sock)
        if data is None:
            raise ConnectionError("the datasite closed the connection")
        reply = wire.loads(data)
        if isinstance(reply, dict) and reply.get("refused"):
            raise Refused(str(reply["refused"]))
        return reply.get("value") if isinstance(reply, dict) else None

    def debit(self, epsilon: float, *, reference: str, once: bool = False) -> float | None:
        return self._ask("debit", epsilon=float(epsilon), reference=str(reference), once=bool(once))

    def load(self, study: str, name: str):
        self.check_name(study, name)
        return self._ask("load", study=study, name=name)

    def save(self, study: str, name: str, value) -> None:
        self.check_name(study, name)
        self._ask("save", study=study, name=name, value=value)

    def sign(self, message: bytes) -> bytes:
        return self._ask("sign", message=bytes(message))

    def peers(self) -> dict[str, bytes]:
        return {str(k): bytes(v) for k, v in (self._ask("peers") or {}).items()}

    def researcher(self) -> str:
        return str(self._ask("researcher"))


def _drop_privileges(uid: int | None) -> None:
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if os.geteuid() == 0 or os.getuid() == 0:
        raise SystemExit("the worker refuses to run as root")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no other process of this uid may trace or read us
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS


def _vm_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _apply_limits(limits: dict) -> None:
    merged = {**DEFAULT_LIMITS, **{k: int(v) for k, v in limits.items() if k in DEFAULT_LIMITS}}
    memory = _vm_bytes() + merged["memory_mb"] * 2**20  # on top of the preloaded libraries
    cpu = merged["cpu_seconds"]
    for kind, value in ((resource.RLIMIT_AS, (memory, memory)), (resource.RLIMIT_CPU, (cpu, cpu + 5)),
                        (resource.RLIMIT_NPROC, (merged["processes"],) * 2),
                        (resource.RLIMIT_FSIZE, (merged["file_mb"] * 2**20,) * 2),
                        (resource.RLIMIT_NOFILE, (merged["open_files"],) * 2), (resource.RLIMIT_CORE, (0, 0))):
        resource.setrlimit(kind, value)


def _run_job(job: dict):
    namespace = {"__name__": "medsyft_request", "__builtins__": builtins}
    exec(compile(job["source"], "<request>", "exec"), namespace)  # noqa: S102 - we are the sandbox
    return namespace[job["function"]](**job["kwargs"])


def _child(job_fd: int, limits: dict) -> None:
    sock = socket.socket(fileno=job_fd)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    _apply_limits(limits)
    raw = wire.recv(sock)
    if raw is None:
        return
    job = pickle.loads(raw)  # noqa: S301 - written by the datasite, the trusted side
    try:
        with use_hospital(Channel(sock, job["site"])):
            reply = {"op": "result", "value": _run_job(job)}
    except Refused as exc:
        reply = {"op": "refused", "message": str(exc)[:500]}
    except MemoryError:
        reply = {"op": "error", "kind": "memory"}
    except BaseException:  # noqa: BLE001 - every failure is reported, the detail stays at the site
        reply = {"op": "error", "kind": "exception", "detail": traceback.format_exc()[-20000:]}
    try:
        data = wire.dumps(reply)
    except (wire.WireError, MemoryError, ValueError) as exc:
        data = wire.dumps({"op": "error", "kind": "output", "detail": f"{type(exc).__name__}: {exc}"[:2000]})
    wire.send(sock, data)


def _others() -> list[int]:
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]


def _remove(path: str) -> None:
    """Delete ``path``; a directory the execution made unreadable (mode 000) is still ours to open."""
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
        for entry in os.listdir(path):
            _remove(os.path.join(path, entry))
        os.rmdir(path)
    else:
        os.unlink(path)


def _sweep() -> bool:
    """Kill whatever the execution left running and wipe the scratch space; True when clean."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)  # every process of ours in this sandbox, except this one
        except ProcessLookupError:
            pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if not _others():
            break
        time.sleep(0.01)
    scratches = (os.environ.get("TMPDIR", "/scratch"), "/dev/shm")
    for scratch in scratches:
        for entry in os.listdir(scratch):
            try:
                _remove(os.path.join(scratch, entry))
            except (OSError, RecursionError):
                pass
    return not _others() and not any(os.listdir(scratch) for scratch in scratches)


def _status(status: int) -> dict:
    if os.WIFSIGNALED(status):
        return {"signal": signal.Signals(os.WTERMSIG(status)).name}
    return {"exit": os.WEXITSTATUS(status)}


def _serve(control: socket.socket) -> None:
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, 1 << 16, 1)
        except OSError:
            return
        if not data:
            return
        message = wire.loads(data)
        if not isinstance(message, dict) or message.get("op") != "run" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            try:
                control.close()
                _child(fds[0], message.get("limits") or {})
            finally:
                os._exit(0)
        os.close(fds[0])
        _, status = os.waitpid(pid, 0)
        clean = _sweep()
        control.send(wire.dumps({"op": "done", "status": _status(status)}))
        if not clean:  # something survived the sweep: this worker is retired, a fresh one replaces it
            return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="medsyft isolated worker (started by the datasite)")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--uid", type=int, default=None)
    args = parser.parse_args(argv)
    _drop_privileges(args.uid)
    sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]
    os.nice(5)
    for name in PRELOAD:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()  # the preloaded heap stays shared with every child
    control = socket.socket(fileno=args.fd)
    control.send(wire.dumps({"op": "ready", "pid": os.getpid()}))
    _serve(control)


if __name__ == "__main__":
    main()

"""Pre-started sandboxed workers, one execution at a time on each.

A worker (``datasites.jobs.runner``) takes a few seconds to start: it imports PyTorch,
Opacus and TenSEAL once. Each execution then costs a fork inside the sandbox. The pool
keeps ``MEDSYFT_WORKERS`` workers (default 2) per datasite process; an execution that
overruns its wall-time limit, or a worker that dies, is replaced by a fresh one.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import pickle
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..jobs import wire
from .sandbox import IsolationUnavailable, bwrap_command, check, seccomp_fd

__all__ = ["Limits", "Outcome", "WorkerPool", "pool"]

log = logging.getLogger("medsyft.isolation")
START_TIMEOUT = 180.0
# bwrap --die-with-parent ties a sandbox to the *thread* that started it: start them all
# from one thread that lives as long as the process.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="medsyft-spawner")
REQUESTS = ("debit", "load", "save", "sign", "peers", "researcher")


@dataclass(frozen=True)
class Limits:
    """What one execution may use; the site's ``[isolation]`` table overrides these."""

    wall_seconds: float = 600.0
    cpu_seconds: int = 900
    memory_mb: int = 3072
    processes: int = 64

    def for_worker(self) -> dict:
        return {"cpu_seconds": self.cpu_seconds, "memory_mb": self.memory_mb, "processes": self.processes}


@dataclass
class Outcome:
    """How an execution ended: ``result`` (``value``), ``refused`` (by the job: ``message``),
    ``error`` / ``crashed`` (``detail``, for the site's log only), ``timeout`` or ``limit``."""

    kind: str
    value: Any = None
    message: str = ""
    detail: str = ""
    seconds: float = 0.0
    status: dict = field(default_factory=dict)


class _Worker:
    def __init__(self, slot: int):
        self.slot = slot
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log = tempfile.TemporaryFile()
        seccomp = seccomp_fd()
        try:
            cmd = bwrap_command(slot=slot, control_fd=theirs.fileno(), seccomp=seccomp)
            self.proc = _SPAWNER.submit(subprocess.Popen, cmd, pass_fds=[theirs.fileno(), seccomp],
                                        stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                        start_new_session=True).result()
        finally:
            theirs.close()
            os.close(seccomp)
        self.control.settimeout(START_TIMEOUT)
        try:
            ready = wire.loads(self.control.recv(1 << 16))
        except (OSError, wire.WireError):
            ready = None
        if not isinstance(ready, dict) or ready.get("op") != "ready":
            self.kill()
            self.log.seek(0)
            tail = self.log.read()[-1500:].decode(errors="replace").strip()
            raise IsolationUnavailable(f"an isolated worker did not start: {tail or 'no output'}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.error("worker %s did not die", self.proc.pid)
        self.control.close()
        self.log.close()

    def execute(self, job: dict, limits: Limits, handle: Callable[[str, dict], dict]) -> Outcome:
        started = time.monotonic()
        deadline = started + limits.wall_seconds
        mine, theirs = socket.socketpair()
        try:
            socket.send_fds(self.control, [wire.dumps({"op": "run", "limits": limits.for_worker()})],
                            [theirs.fileno()])
            theirs.close()
            outcome = self._converse(mine, job, deadline, handle)
        except (OSError, wire.WireError) as exc:
            outcome = Outcome("crashed", detail=f"{type(exc).__name__}: {exc}")
        finally:
            mine.close()
        if outcome.kind == "timeout":
            self.kill()
        else:
            outcome.status = self._done(deadline)
            if outcome.kind == "crashed" and outcome.status.get("signal") in ("SIGXCPU", "SIGKILL", "SIGSEGV"):
                outcome.kind = "limit"
        outcome.seconds = time.monotonic() - started
        return outcome

    def _converse(self, sock, job, deadline, handle) -> Outcome:
        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            return remaining

        try:
            sock.settimeout(left())
            wire.send(sock, pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
            while True:
                sock.settimeout(left())
                data = wire.recv(sock)
                if data is None:
                    return Outcome("crashed", detail="the execution ended without a reply")
                message = wire.loads(data)
                op = message.get("op") if isinstance(message, dict) else None
                if op in REQUESTS:
                    try:
                        reply = handle(op, message)
                    except Exception as exc:  # noqa: BLE001 - a datasite bug must not hang the job
                        log.exception("handling %s failed", op)
                        reply = {"refused": f"the datasite could not carry out {op} ({type(exc).__name__})"}
                    wire.send(sock, wire.dumps(reply))
                elif op == "result":
                    return Outcome("result", value=message.get("value"))
                elif op == "refused":
                    return Outcome("refused", message=str(message.get("message", ""))[:500])
                elif op == "error":
                    kind = "limit" if message.get("kind") == "memory" else "error"
                    return Outcome(kind, detail=str(message.get("detail", message.get("kind", "")))[:20000])
                else:
                    return Outcome("crashed", detail="the execution sent a message outside the protocol")
        except (TimeoutError, socket.timeout):
            return Outcome("timeout")

    def _done(self, deadline: float) -> dict:
        """The worker's report that the child is gone and the sandbox swept; else it is killed."""
        self.control.settimeout(max(5.0, min(30.0, deadline - time.monotonic())))
        try:
            message = wire.loads(self.control.recv(1 << 16))
            if isinstance(message, dict) and message.get("op") == "done":
                return dict(message.get("status") or {})
        except (OSError, wire.WireError):
            pass
        self.kill()
        return {"worker": "killed"}


class WorkerPool:
    """Up to ``size`` workers; :meth:`run` takes an idle one (or starts one) per execution."""

    def __init__(self, size: int | None = None):
        self.size = max(1, int(size or os.environ.get("MEDSYFT_WORKERS", "2")))
        self._idle: list[_Worker] = []
        self._count = 0  # started or starting
        self._slots = set(range(self.size))
        self._cond = threading.Condition()

    def _start(self, slot: int) -> _Worker:
        try:
            return _Worker(slot)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._slots.add(slot)
                self._cond.notify_all()
            raise

    def prewarm(self) -> None:
        """Start the missing workers in the background (a datasite calls this when it opens)."""
        check()
        while True:
            with self._cond:
                if self._count >= self.size:
                    return
                self._count += 1
                slot = self._slots.pop()
            threading.Thread(target=self._warm, args=(slot,), daemon=True, name="medsyft-worker-start").start()

    def _warm(self, slot: int) -> None:
        try:
            worker = self._start(slot)
        except IsolationUnavailable as exc:
            log.error("%s", exc)
            return
        self._release(worker)

    def _acquire(self, timeout: float) -> _Worker:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive:
                        return worker
                    self._retire(worker)
                if self._count < self.size:
                    self._count += 1
                    slot = self._slots.pop()
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("every isolated worker of this datasite is busy")
                self._cond.wait(remaining)
        return self._start(slot)

    def _retire(self, worker: _Worker) -> None:  # caller holds the lock
        self._count -= 1
        self._slots.add(worker.slot)
        self._cond.notify_all()

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if worker.alive:
                self._idle.append(worker)
                self._cond.notify_all()
            else:
                self._retire(worker)

    def run(self, job: dict, *, limits: Limits, handle: Callable[[str, dict], dict],
            queue_seconds: float = 600.0) -> Outcome:
        """Run ``job`` (``source``, ``function``, ``kwargs``, ``site``) in a fresh child of a worker."""
        check()
        worker = self._acquire(queue_seconds)
        try:
            return worker.execute(job, limits, handle)
        finally:
            self._release(worker)
            if not worker.alive:
                worker.kill()
                self.prewarm()  # a fresh worker for the next execution

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


_POOL: WorkerPool | None = None
_LOCK = threading.Lock()


def pool() -> WorkerPool:
    """This process's worker pool (shared by the datasites it serves)."""
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = WorkerPool()
            atexit.register(_POOL.close)
        return _POOL

"""The sandbox a worker runs in: bubblewrap namespaces, a seccomp filter, an unprivileged uid.

A worker sees a read-only root made of the system libraries (``/usr``), the Python
installation and virtual environment, and the source of the packages the vetted jobs
import (``datasites.jobs``, ``privacy``, ``secagg``, ``he``, ``synthetic_data``). Nothing
else: not the hospital's directory (``MEDSYFT_HOME``), its secrets, Syft's database and
blobs, the raw exports, ``/root``, ``/home`` or ``/etc``. Everything is read-only but a
private scratch space of limited size (``/scratch``, also ``TMPDIR``; ``/tmp`` points to
it). It has its own network (no interface but its own loopback), process, IPC and UTS
namespaces, an empty environment, and runs as an unprivileged uid with a seccomp filter
that refuses ptrace, keyrings, namespaces, mounts, kernel modules, BPF and SysV IPC.

Fail closed: :func:`check` says what is missing, and the datasite then runs no code.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["IsolationUnavailable", "check", "bwrap_command", "seccomp_fd", "WORKER_PACKAGES", "worker_uid"]

WORKER_PACKAGES = ("privacy", "secagg", "he", "synthetic_data")  # whole packages the jobs import
TMP_BYTES = 256 * 2**20
SCRATCH = "/scratch"
FIRST_UID = 61000  # as root each worker gets its own uid from here (no login, no files)

# Refused with EPERM inside the sandbox: no debugging of other processes, no kernel keyrings
# (a store that outlives a process), no new namespaces or mounts, no module or BPF loading,
# no SysV IPC (shared memory that outlives an execution), no io_uring (it bypasses this filter).
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "keyctl", "add_key", "request_key",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
    "fsmount", "fsconfig", "fspick", "mount_setattr",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf", "perf_event_open",
    "userfaultfd", "acct", "swapon", "swapoff", "reboot", "syslog", "quotactl", "lookup_dcookie",
    "shmget", "shmat", "msgget", "msgsnd", "semget", "semop",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)
CLONE_NAMESPACE_FLAGS = (0x10000000, 0x00020000, 0x40000000, 0x20000000, 0x04000000, 0x08000000,
                         0x02000000, 0x00000080)  # NEWUSER NEWNS NEWNET NEWPID NEWUTS NEWIPC NEWCGROUP NEWTIME


class IsolationUnavailable(RuntimeError):
    """This host cannot isolate workers; the message says what to install or enable."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


@functools.lru_cache(maxsize=1)
def _libseccomp():
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise IsolationUnavailable("libseccomp is missing: install Debian's libseccomp2") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


@functools.lru_cache(maxsize=1)
def _filter_bytes() -> bytes:
    """The compiled BPF filter (libseccomp builds it for this architecture)."""
    lib = _libseccomp()
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    ctx = lib.seccomp_init(allow)
    if not ctx:
        raise IsolationUnavailable("libseccomp could not start a filter")
    try:
        rule = lib.seccomp_rule_add
        rule.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
        for name in DENIED_SYSCALLS:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number >= 0 and rule(ctx, eperm, number, 0) != 0:
                raise IsolationUnavailable(f"libseccomp refused a rule for {name}")
        rule(ctx, enosys, lib.seccomp_syscall_resolve_name(b"clone3"), 0)  # glibc falls back to clone
        clone = lib.seccomp_syscall_resolve_name(b"clone")
        ruled = lib.seccomp_rule_add_array
        ruled.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
        for flag in CLONE_NAMESPACE_FLAGS:  # threads and forks yes, new namespaces no
            if ruled(ctx, eperm, clone, 1, ctypes.byref(_ArgCmp(0, 7, flag, flag))) != 0:  # 7: MASKED_EQ
                raise IsolationUnavailable("libseccomp refused the clone rule")
        fd = os.memfd_create("medsyft-seccomp")
        try:
            if lib.seccomp_export_bpf(ctx, fd) != 0:
                raise IsolationUnavailable("libseccomp could not export the filter")
            os.lseek(fd, 0, os.SEEK_SET)
            return os.read(fd, 1 << 20)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def seccomp_fd() -> int:
    """A fresh file descriptor holding the filter, for bwrap's ``--seccomp`` (it reads it once)."""
    fd = os.memfd_create("medsyft-seccomp")
    os.write(fd, _filter_bytes())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise IsolationUnavailable(f"package {name} is not importable here")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def _binds() -> list[tuple[str, Path]]:
    """(kind, path) pairs the worker needs, mounted read-only at their own paths."""
    datasites = _package_dir("datasites")
    out = [("dir", Path(sys.base_prefix).resolve()), ("dir", Path(sys.prefix).resolve()),
           ("file", datasites / "__init__.py"), ("dir", datasites / "jobs")]
    out += [("dir", _package_dir(name)) for name in WORKER_PACKAGES]
    return out


def _parents(path: Path) -> list[Path]:
    return [p for p in reversed(path.parents) if str(p) != "/"]


def worker_uid(slot: int) -> int | None:
    """The uid a worker drops to: its own as root; None (a user namespace) otherwise."""
    return FIRST_UID + slot if os.geteuid() == 0 else None


def bwrap_command(*, slot: int, control_fd: int, seccomp: int) -> list[str]:
    """The command line that starts worker ``slot`` inside its sandbox."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise IsolationUnavailable("bubblewrap is not installed: apt-get install -y bubblewrap")
    cmd = [bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
           "--new-session", "--die-with-parent", "--clearenv", "--hostname", "medsyft-worker",
           "--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/" + link)
        if target.is_symlink():
            cmd += ["--symlink", os.readlink(target), str(target)]
        elif target.is_dir():
            cmd += ["--ro-bind", str(target), str(target)]
    made: set[str] = set()
    binds = _binds()
    # scratch first: the worker's only writable place (TMPDIR), wiped after every execution
    cmd += ["--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", SCRATCH,
            "--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/dev/shm"]
    for kind, path in binds:
        for parent in _parents(path):
            if str(parent) not in made and not str(parent).startswith("/usr"):
                made.add(str(parent))
                cmd += ["--perms", "0755", "--dir", str(parent)]
        cmd += ["--ro-bind", str(path), str(path)]
        made.add(str(path))
    if "/tmp" not in made:  # code that writes to /tmp by name lands in the scratch space too
        cmd += ["--symlink", SCRATCH, "/tmp"]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/",
            "--chdir", SCRATCH, "--setenv", "PATH", "/usr/bin", "--setenv", "HOME", SCRATCH,
            "--setenv", "TMPDIR", SCRATCH,
            "--seccomp", str(seccomp)]
    uid = worker_uid(slot)
    if uid is None:
        cmd += ["--unshare-user", "--uid", "65534", "--gid", "65534"]
    else:
        cmd += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    cmd += ["--", str(Path(sys.executable)), "-P", "-s", "-B", "-m", "datasites.jobs.runner",
            "--fd", str(control_fd)] + (["--uid", str(uid)] if uid is not None else [])
    return cmd


@functools.lru_cache(maxsize=1)
def check() -> str:
    """Raise :class:`IsolationUnavailable` unless workers can be sandboxed here; says how."""
    if sys.platform != "linux":
        raise IsolationUnavailable("isolated execution needs Linux (namespaces, seccomp)")
    if shutil.which("bwrap") is None:
        raise IsolationUnavailable("bubblewrap is not installed: apt-get install -y bubblewrap "
                                   "(the datasite runs no researcher code without it)")
    _filter_bytes()
    fd = seccomp_fd()
    try:
        probe = [a for a in bwrap_command(slot=0, control_fd=0, seccomp=fd)]
        probe = probe[:probe.index("--")] + ["--", "/usr/bin/true"]
        done = subprocess.run(probe, pass_fds=[fd], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IsolationUnavailable(f"bubblewrap could not start a sandbox: {exc}") from None
    finally:
        os.close(fd)
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise IsolationUnavailable(f"bubblewrap could not start a sandbox ({detail[0]}); it needs user "
                                   "namespaces (sysctl kernel.unprivileged_userns_clone=1) or root")
    mode = "per-worker uids" if os.geteuid() == 0 else "a user namespace"
    return f"bubblewrap {_bwrap_version()}, seccomp, {mode}"


def _bwrap_version() -> str:
    try:
        return subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=10).stdout.split()[-1]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"

"""Serve one hospital datasite over HTTP on loopback: ``python -m datasites.serve``.

Started by ``medsyft sites up`` (each hospital its own process). Before anything else it
takes the site folder's lock (``<site>/server.lock``, held until the process ends: a
second server on the same folder exits at once with code 3, naming the pid that holds
it) and binds its port (used by another process: exit code 4). Then it provisions the
site in-process and serves Syft's API with uvicorn until SIGTERM. ``<site>/server.json``
says ``starting`` while it provisions and ``serving`` once it answers.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

from .server import EXIT_LOCKED, EXIT_PORT_TAKEN, INFO_FILE, LOOPBACK, SiteLock, write_server_info
from .spec import load_spec


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` (OSError if another process uses it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # our own TIME_WAITs, never a listener
        sock.bind((LOOPBACK, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args(argv)

    os.umask(0o077)  # everything this hospital's process writes is its own
    spec = load_spec(args.spec)
    site_dir = args.home.resolve() / spec.name
    lock = SiteLock(site_dir)
    holder = lock.acquire()
    if holder is not None:
        who = f"pid {holder}" if holder > 0 else "another process"
        print(f"error: {spec.name} is already served by {who} (it holds {lock.path}); "
              f"stop it with `medsyft sites down --site {spec.name}`", file=sys.stderr, flush=True)
        sys.exit(EXIT_LOCKED)
    try:
        sock = bind(args.port)
    except OSError as exc:
        print(f"error: {spec.name} cannot listen on port {args.port}: {exc.strerror or exc}; free the port or "
              f"give the site another one (`port` in its spec)", file=sys.stderr, flush=True)
        sys.exit(EXIT_PORT_TAKEN)
    started = time.time()
    write_server_info(site_dir, args.port, "starting", started)
    try:
        serve(spec, site_dir, sock, started)
    finally:
        info = site_dir / INFO_FILE
        try:
            import json

            if json.loads(info.read_text()).get("pid") == os.getpid():
                info.unlink()
        except (OSError, ValueError):
            pass
        lock.release()


def serve(spec, site_dir: Path, sock: socket.socket, started: float) -> None:
    import uvicorn
    from fastapi import APIRouter, FastAPI
    from syft.server.routes import make_routes

    from .isolation import harden
    from .logins import client_address
    from .provision import provision
    from .server import open_datasite

    server = open_datasite(spec, site_dir)
    provision(server, spec, site_dir)
    harden(site_dir)
    app = FastAPI(title=spec.name)

    @app.middleware("http")
    async def remember_client(request, call_next):  # logins are slowed down per address too
        token = client_address.set(request.client.host if request.client else "unknown")
        try:
            return await call_next(request)
        finally:
            client_address.reset(token)

    router = APIRouter()
    router.include_router(make_routes(worker=server))
    app.include_router(router, prefix="/api/v2")
    port = sock.getsockname()[1]
    console = _console(spec, site_dir, server)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if not self.should_exit:
                write_server_info(site_dir, port, "serving", started, console.port)
                print(f"{spec.name}: serving on http://{LOOPBACK}:{port} (pid {os.getpid()}); compliance console "
                      f"on {console.url}", flush=True)

    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    try:
        Server(config).run(sockets=[sock])
    finally:
        console.stop()


def _console(spec, site_dir: Path, server):
    """The compliance console, in this process: it checks officers' passwords with the
    datasite itself, and the ``medsyft review`` commands talk to it (no Syft import there)."""
    from compliance_console import start_console

    from . import accounts
    from .server import SiteHandle

    return start_console(SiteHandle(spec, site_dir, "inprocess", server=server), spec.console_port,
                         accounts=accounts)


if __name__ == "__main__":
    main()

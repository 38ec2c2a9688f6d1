"""Serve a console on loopback from a thread, beside the datasite in the same process.

The console needs the datasite's own login check (and nothing from a researcher's
process), so it lives with the site; a port already in use falls back to a free one,
which ``server.json`` records for the CLI.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

__all__ = ["start_console", "RunningConsole", "LOOPBACK"]

LOOPBACK = "127.0.0.1"


@dataclass
class RunningConsole:
    server: object
    thread: threading.Thread
    port: int
    app: object

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
    except OSError:
        sock.bind((LOOPBACK, 0))  # taken: any free port (server.json says which)
    sock.listen(128)
    return sock


def start_console(site, port: int = 0, **options) -> RunningConsole:
    """Build the console for ``site`` and serve it; returns once it accepts connections."""
    import uvicorn

    from .app import create_app

    app = create_app(site, **options)
    sock = _socket(port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3))
    server.install_signal_handlers = lambda: None  # the site's own server handles signals
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"console-{site.spec.name}")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError(f"the compliance console of {site.spec.name} did not start")
    return RunningConsole(server, thread, sock.getsockname()[1], app)

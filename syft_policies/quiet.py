"""Keep Syft's console chatter (success banners, progress bars) out of our output."""

from __future__ import annotations

import contextlib
import os
import sys
import threading

__all__ = ["quiet"]

_LOCAL = threading.local()
_LOCK = threading.Lock()
_ACTIVE = [0]


class _Router:
    """Stands in for stdout/stderr while any thread is quiet: drops the writes of quiet
    threads only (a study calls its hospitals from several threads at once, and swapping
    ``sys.stdout`` per thread would leave it swapped when the exits interleave)."""

    def __init__(self, real):
        self.real = real

    def write(self, text):
        return len(text) if getattr(_LOCAL, "depth", 0) else self.real.write(text)

    def flush(self):
        return self.real.flush()

    def __getattr__(self, name):
        return getattr(self.real, name)


@contextlib.contextmanager
def quiet():
    """Swallow stdout/stderr printed by Syft in this thread inside the block (unless
    MEDSYFT_VERBOSE is set)."""
    if os.environ.get("MEDSYFT_VERBOSE"):
        yield
        return
    with _LOCK:
        if _ACTIVE[0] == 0:
            sys.stdout, sys.stderr = _Router(sys.stdout), _Router(sys.stderr)
        _ACTIVE[0] += 1
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.depth -= 1
        with _LOCK:
            _ACTIVE[0] -= 1
            if _ACTIVE[0] == 0:
                for name in ("stdout", "stderr"):
                    stream = getattr(sys, name)
                    if isinstance(stream, _Router):
                        setattr(sys, name, stream.real)

"""Keep Syft's console chatter (success banners, progress bars) out of our output."""

from __future__ import annotations

import contextlib
import io
import os

__all__ = ["quiet"]


@contextlib.contextmanager
def quiet():
    """Swallow stdout/stderr printed by Syft inside the block (unless MEDSYFT_VERBOSE is set)."""
    if os.environ.get("MEDSYFT_VERBOSE"):
        yield
        return
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield

"""HTML to PDF with headless Chromium, so the PDF report is the web report, printed.

One renderer for both formats keeps them from drifting apart (the PDF used to be a
separate, poorer text dump). Chromium lays out A4 pages from the page's own CSS
(``@page`` size, margins, page-number margin boxes), needs no network (the report's
images are data: URIs), and runs with a throwaway profile that is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["html_to_pdf", "find_chromium", "PdfError", "ChromiumMissing", "EXECUTABLES", "TIMEOUT_S"]

EXECUTABLES = ("chromium", "chromium-browser")  # Debian's package, then Ubuntu's name
TIMEOUT_S = 60.0
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-crash-reporter", "--no-pdf-header-footer")


class PdfError(RuntimeError):
    """The PDF could not be rendered (one line: what to do about it)."""


class ChromiumMissing(PdfError, FileNotFoundError):
    """No Chromium executable; the HTML report is still there."""


def find_chromium() -> str | None:
    """The first of ``EXECUTABLES`` on PATH (or given as a path), else None."""
    for name in EXECUTABLES:
        found = shutil.which(name)
        if found:
            return found
    return None


def html_to_pdf(html_path: Path, pdf_path: Path, *, timeout: float = TIMEOUT_S) -> Path:
    """Print ``html_path`` to ``pdf_path`` with headless Chromium; returns ``pdf_path``.

    Raises :class:`ChromiumMissing` without Chromium and :class:`PdfError` if it fails or
    runs past ``timeout`` seconds (its whole process group is killed then)."""
    html_path, pdf_path = Path(html_path).resolve(), Path(pdf_path)
    if not html_path.is_file():
        raise FileNotFoundError(f"no HTML file to print: {html_path}")
    chromium = find_chromium()
    if chromium is None:
        raise ChromiumMissing(f"Chromium not found (looked for {', '.join(EXECUTABLES)}); the PDF report needs it: "
                              "apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="medsyft-chromium-", ignore_cleanup_errors=True) as scratch:
        out = Path(scratch) / "report.pdf"
        command = [chromium, *_FLAGS, f"--user-data-dir={Path(scratch) / 'profile'}",
                   f"--print-to-pdf={out}", html_path.as_uri()]
        env = {**os.environ, "HOME": scratch}  # Chromium writes its caches under HOME too
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # its own group: a timeout kills the renderers too
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise PdfError(f"Chromium did not print {html_path.name} within {timeout:.0f} s") from None
        finally:
            _reap(proc.pid)
        if proc.returncode != 0 or not out.is_file() or out.read_bytes()[:5] != b"%PDF-":
            last = (log or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise PdfError(f"Chromium failed to print {html_path.name} (exit {proc.returncode}): {last[0][:200]}")
        pdf_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), pdf_path)
    return pdf_path


def _reap(group: int) -> None:
    """Chromium's helpers (zygote, crashpad) may outlive the browser; end the group we started."""
    for _ in range(20):
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass

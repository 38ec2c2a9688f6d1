"""Isolated execution: researcher code never runs in the hospital's server process.

``sandbox`` builds the bubblewrap + seccomp sandbox, ``pool`` keeps pre-started workers
(``datasites.jobs.runner``) and runs each execution in a fresh child, ``mediator`` answers
what a worker may ask (debits, study documents, signatures), ``attempts`` counts every
attempt with limits and back-off, and ``execution`` plugs all of it into Syft and writes
the audit entry of each attempt.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .pool import Limits, Outcome, pool
from .sandbox import IsolationUnavailable, check

__all__ = ["check", "IsolationUnavailable", "pool", "Limits", "Outcome", "prepare_site", "harden"]

log = logging.getLogger("medsyft.isolation")


def harden(site_dir: Path) -> None:
    """The site's tree is its own: directories 0700, files 0600 (Syft creates some 0644)."""
    site_dir = Path(site_dir)
    for root, dirs, files in os.walk(site_dir):
        os.chmod(root, 0o700)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o600)


def prepare_site(site) -> None:
    """At open: close the attempts a crash left running, tighten file modes, warm workers.

    Without isolation the datasite still opens (officers can review, owners can read the
    ledger) but every execution is refused with the reason."""
    from .mediator import publish_key

    site.executions().recover()
    harden(site.site_dir)
    publish_key(site)
    try:
        check()
    except IsolationUnavailable as exc:
        log.error("%s: %s", site.spec.name, exc)
        return
    pool().prewarm()

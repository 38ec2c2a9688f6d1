"""Start, use and stop a throw-away network of hospital datasites."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Network", "open_network", "fast_mode", "sizes"]


def fast_mode() -> bool:
    """True when ``MEDSYFT_FAST`` is set (CI): small cohorts, few rounds."""
    return os.environ.get("MEDSYFT_FAST", "") not in ("", "0", "false")


def sizes() -> dict:
    """Population and rounds for a notebook: small in fast mode, teaching-sized otherwise."""
    return {"patients": 600, "rounds": 2} if fast_mode() else {"patients": 3000, "rounds": 6}


@dataclass
class Network:
    home: Path
    sites: dict = field(default_factory=dict)  # name -> datasites.SiteHandle

    def researchers(self) -> dict:
        """One researcher session per hospital (the shipped researcher account)."""
        return {name: site.researcher() for name, site in self.sites.items()}

    def officer(self, name: str):
        return self.sites[name].officer()

    def stop(self) -> None:
        for site in self.sites.values():
            site.stop()
        self.sites = {}

    def __enter__(self) -> "Network":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def open_network(*, sites: list[str] | None = None, patients: int | None = None, seed: int = 7,
                 home: str | Path | None = None) -> Network:
    """Generate Synthea-format data and start hospitals in this process (default: all three).

    ``home`` defaults to a fresh scratch directory, so a notebook never touches real sites.
    """
    from datasites import ensure_site_data, shipped_specs, start_site
    from syft_policies.quiet import quiet

    specs = shipped_specs()
    if sites:
        unknown = sorted(set(sites) - {s.name for s in specs})
        if unknown:
            raise ValueError(f"unknown hospital(s) {unknown}; choose from {[s.name for s in specs]}")
    home = Path(home) if home else Path(tempfile.mkdtemp(prefix="medsyft-sandbox-"))
    ensure_site_data(specs, home, n_patients=patients or sizes()["patients"], seed=seed)
    with quiet():
        started = {s.name: start_site(s, home) for s in specs if not sites or s.name in sites}
    return Network(home, started)



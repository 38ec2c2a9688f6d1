"""Account passwords: from the environment, else generated once into the site directory.

``MEDSYFT_<SITE>_ADMIN_PASSWORD`` and ``MEDSYFT_<SITE>_COMPLIANCE_OFFICER_PASSWORD``
(site name upper-cased, '-' -> '_') and ``MEDSYFT_RESEARCHER_PASSWORD`` win; otherwise a
random password is generated and kept in ``<site dir>/secrets.json`` (mode 0600).
Syft's default root password is refused everywhere.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from .spec import HospitalSpec

__all__ = ["site_passwords", "WeakPasswordError"]

SYFT_DEFAULT_PASSWORD = "changethis"
MIN_LENGTH = 12


class WeakPasswordError(ValueError):
    """A configured password is Syft's default or too short."""


def _check(label: str, password: str) -> str:
    if password == SYFT_DEFAULT_PASSWORD:
        raise WeakPasswordError(f"{label} is Syft's default password; set a real one")
    if len(password) < MIN_LENGTH:
        raise WeakPasswordError(f"{label} must have at least {MIN_LENGTH} characters")
    return password


def site_passwords(spec: HospitalSpec, site_dir: Path) -> dict[str, str]:
    """email -> password for every account of this site (admin, officer, researchers)."""
    site_dir.mkdir(parents=True, exist_ok=True)
    path = site_dir / "secrets.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    env = {
        spec.admin.email: os.environ.get(f"{spec.env_prefix}_ADMIN_PASSWORD"),
        spec.compliance_officer.email: os.environ.get(f"{spec.env_prefix}_COMPLIANCE_OFFICER_PASSWORD"),
        **{r.email: os.environ.get("MEDSYFT_RESEARCHER_PASSWORD") for r in spec.researchers},
    }
    out, changed = {}, False
    for email, from_env in env.items():
        if from_env:
            out[email] = _check(f"the password for {email} (from the environment)", from_env)
        elif email in stored:
            out[email] = stored[email]
        else:
            out[email] = secrets.token_urlsafe(18)
            changed = True
    if changed or any(stored.get(e) != p for e, p in out.items() if not env[e]):
        to_store = {e: p for e, p in out.items() if not env[e]}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**stored, **to_store}, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)
    return out

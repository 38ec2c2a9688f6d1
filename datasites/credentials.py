"""Account passwords and the site's signing key.

``MEDSYFT_<SITE>_ADMIN_PASSWORD`` and ``MEDSYFT_<SITE>_COMPLIANCE_OFFICER_PASSWORD``
(site name upper-cased, '-' -> '_') and ``MEDSYFT_RESEARCHER_PASSWORD`` win; otherwise a
random password is generated once and kept *outside* the site's tree, in
``<home>/.credentials/<site>.json`` (directory 0700, file 0600), next to nothing a job or
a datasite backup touches. Syft's default root password is refused everywhere.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from .spec import HospitalSpec

__all__ = ["site_passwords", "credentials_file", "site_signer", "WeakPasswordError"]

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


def credentials_file(site_dir: Path) -> Path:
    """Where a site's generated passwords live: beside its tree, never inside it."""
    return Path(site_dir).parent / ".credentials" / f"{Path(site_dir).name}.json"


def site_passwords(spec: HospitalSpec, site_dir: Path) -> dict[str, str]:
    """email -> password for every account of this site (admin, officer, researchers)."""
    path = credentials_file(site_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    legacy = Path(site_dir) / "secrets.json"
    if legacy.exists() and not path.exists():  # an older layout kept them inside the site tree
        os.replace(legacy, path)
    legacy.unlink(missing_ok=True)
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
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({**stored, **to_store}, indent=2))
        tmp.replace(path)
    return out


SIGNING_KEY = "he_signing_key"


def site_signer(site_dir: Path, name: str):
    """The site's Ed25519 key for signing its encrypted statistics (made once, mode 0600).

    Kept by the datasite: a job asks the datasite to sign, the key never enters a worker."""
    from he import Signer

    path = Path(site_dir) / SIGNING_KEY
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Signer(name).private_bytes())
    return Signer.from_private_bytes(name, path.read_bytes())

"""Attack: read the hospital's own files from approved code (secrets, raw export, Syft's database)."""

from __future__ import annotations

from datasites.credentials import credentials_file
from datasites.data import private_dir


def steal_files(cohort, targets):
    """Try every way a hostile researcher knows to read files at the site."""
    import os

    found = {}
    for label, path in targets.items():
        try:
            with open(path, "rb") as fh:
                found[label] = fh.read(64).hex()
        except Exception as exc:  # noqa: BLE001
            found[label] = type(exc).__name__
    try:
        found["home listing"] = sorted(os.listdir(targets["home"]))
    except OSError as exc:
        found["home listing"] = type(exc).__name__
    found["mounted"] = sorted(os.listdir("/"))
    found["env"] = sorted(os.environ)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                found[f"environ {pid}"] = open(f"/proc/{pid}/environ", "rb").read(64).hex()
            except Exception as exc:  # noqa: BLE001
                found[f"environ {pid}"] = type(exc).__name__
    return found


def test_approved_code_cannot_read_the_sites_files(attacker, monkeypatch):
    monkeypatch.setenv("MEDSYFT_LYON_CHU_ADMIN_PASSWORD_PROBE", "in the server's environment only")
    site = attacker.site
    home = site.site_dir.parent
    targets = {
        "home": str(home),
        "credentials": str(credentials_file(site.site_dir)),
        "syft database": str(site.site_dir / "db" / "syft.db"),
        "signing key": str(site.site_dir / "signing_key"),
        "ledger": str(site.site_dir / "ledger.sqlite"),
        "raw export": str(private_dir(home, site.spec.name) / "patients.csv"),
        "host passwd": "/etc/passwd",
        "root home": "/root/.bashrc",
    }
    for path in list(targets.values())[1:6]:
        assert __import__("os").path.exists(path), path  # they exist, on the host
    outcome, found = attacker.attack(steal_files, targets=targets)
    assert outcome == "released", found
    for label in targets:
        if label != "home":
            assert found[label] in ("FileNotFoundError", "PermissionError"), (label, found[label])
    assert found["home listing"] == "FileNotFoundError"
    assert not {"home", "etc", "var", "srv", "mnt", "opt"} & set(found["mounted"])
    # an empty environment: no MEDSYFT_* passwords, nothing of the server's (torch adds its cache dir)
    assert set(found["env"]) <= {"PATH", "HOME", "PWD", "TMPDIR", "LC_CTYPE", "TORCHINDUCTOR_CACHE_DIR",
                                  "RUST_BACKTRACE"}  # set by OpenDP when it is imported
    environs = {k: v for k, v in found.items() if k.startswith("environ")}
    assert all(v in ("PermissionError", "FileNotFoundError") or len(v) < 130 for v in environs.values())
    assert len(environs) <= 3  # only the sandbox's own processes exist in its /proc


def test_secrets_are_not_inside_the_site_tree_and_the_tree_is_private(attacker):
    import stat

    site = attacker.site
    assert not (site.site_dir / "secrets.json").exists()
    assert stat.S_IMODE(site.site_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(credentials_file(site.site_dir).stat().st_mode) == 0o600

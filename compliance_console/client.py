"""The ``medsyft review`` / ``accounts`` commands' way to a running site: its console's
JSON API over loopback. Standard library only, so a command answers in about a second
(importing Syft alone takes longer than that)."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

__all__ = ["ConsoleClient", "ConsoleError", "ConsoleRefused", "console_url"]

TIMEOUT = 120.0  # an approval waits on the datasite; a study of many requests takes a while


class ConsoleError(RuntimeError):
    """The site cannot be reached or refused the call; the message is one line."""


class ConsoleRefused(ConsoleError):
    """The site refused the action as asked (unknown id, budget, policy...): a usage problem."""


def _server_info(site_dir: Path) -> dict:
    try:
        info = json.loads((Path(site_dir) / "server.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def console_url(spec, home: str | Path) -> str:
    """Where the site's console answers, from the ``server.json`` its server process wrote."""
    info = _server_info(Path(home).resolve() / spec.name)
    if not info:
        raise ConsoleError(f"site {spec.name} is not running; start it with `medsyft sites up --site {spec.name}`")
    if info.get("state") != "serving" or not info.get("console_port"):
        raise ConsoleError(f"site {spec.name} is still starting (or older than its console); "
                           f"`medsyft sites status --site {spec.name}` says which")
    return f"http://127.0.0.1:{int(info['console_port'])}"


def _check_running(spec, home) -> None:
    """The site's own status first (3 s at most): a stopped, starting, frozen or displaced
    server is named with what to do, instead of a call that waits on it."""
    from datasites.server import site_status

    status = site_status(spec, home)
    if status["state"] == "stopped":
        raise ConsoleError(f"site {spec.name} is not running; start it with `medsyft sites up --site {spec.name}`")
    if status["state"] != "running":
        raise ConsoleError(f"site {spec.name}: {status['message']}")


class ConsoleClient:
    def __init__(self, url: str, token: str, site: str, relogin=None):
        self.url, self.token, self.site = url, token, site
        self._relogin = relogin  # a fresh token when the kept one has expired

    @classmethod
    def login(cls, spec, home: str | Path, *, as_admin: bool = False) -> "ConsoleClient":
        """Log in as the site's compliance officer (or admin), with the password the site
        keeps for it (``MEDSYFT_<SITE>_..._PASSWORD`` or ``<home>/.credentials``).

        The session token is kept beside those passwords (same 0700 folder, file 0600)
        and reused until the console lets it expire (15 idle minutes): each command then
        skips the password check, which costs the site most of a second."""
        from datasites.credentials import credentials_file, site_passwords

        _check_running(spec, home)
        url = console_url(spec, home)
        site_dir = Path(home).resolve() / spec.name
        email = spec.admin.email if as_admin else spec.compliance_officer.email
        kept = credentials_file(site_dir).with_suffix(f".{'admin' if as_admin else 'officer'}-session")

        password = site_passwords(spec, site_dir)[email]
        # the kept token is for this password only: a changed password means a new login
        salt = hashlib.sha256(f"{url} {email}".encode()).digest()
        check = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 1000).hex()

        def relogin() -> str:
            from syft_policies.files import write_private

            token = cls(url, "", spec.name)._call("POST", "/api/session", {"email": email, "password": password})["token"]
            write_private(kept, json.dumps({"url": url, "token": token, "check": check}))
            return token

        try:
            saved = json.loads(kept.read_text())
        except (OSError, ValueError):
            saved = {}
        if isinstance(saved, dict) and saved.get("url") == url and saved.get("check") == check and saved.get("token"):
            return cls(url, str(saved["token"]), spec.name, relogin)
        return cls(url, relogin(), spec.name, relogin)

    def _call(self, method: str, path: str, body: dict | None = None, *, retry: bool = True):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and retry and self._relogin is not None and path != "/api/session":
                self.token = self._relogin()  # the kept session expired (or the site restarted)
                return self._call(method, path, body, retry=False)
            try:
                message = json.loads(exc.read()).get("error") or exc.reason
            except (ValueError, AttributeError):
                message = f"HTTP {exc.code}"
            raise (ConsoleRefused if exc.code == 400 else ConsoleError)(f"{self.site}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConsoleError(f"site {self.site} does not answer at {self.url} ({reason}); "
                               f"`medsyft sites status --site {self.site}` says what to do") from None

    def get(self, path: str, **query):
        query = {k: v for k, v in query.items() if v is not None}
        return self._call("GET", path + (("?" + urllib.parse.urlencode(query)) if query else ""))

    def post(self, path: str, body: dict | None = None):
        return self._call("POST", path, body or {})

    @staticmethod
    def quote(part: str) -> str:
        return urllib.parse.quote(part, safe="")

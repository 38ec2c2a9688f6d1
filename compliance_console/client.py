"""The ``medsyft review`` / ``accounts`` commands' way to a running site: its console's
JSON API over loopback. Standard library only, so a command answers in about a second
(importing Syft alone takes longer than that)."""

from __future__ import annotations

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


class ConsoleClient:
    def __init__(self, url: str, token: str, site: str):
        self.url, self.token, self.site = url, token, site

    @classmethod
    def login(cls, spec, home: str | Path, *, as_admin: bool = False) -> "ConsoleClient":
        """Log in as the site's compliance officer (or admin), with the password the site
        keeps for it (``MEDSYFT_<SITE>_..._PASSWORD`` or ``<home>/.credentials``)."""
        from datasites.credentials import site_passwords

        url = console_url(spec, home)
        email = spec.admin.email if as_admin else spec.compliance_officer.email
        password = site_passwords(spec, Path(home).resolve() / spec.name)[email]
        answer = cls(url, "", spec.name)._call("POST", "/api/session", {"email": email, "password": password})
        return cls(url, answer["token"], spec.name)

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
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

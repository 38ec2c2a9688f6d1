"""The compliance console of one hospital: server-rendered pages and a small JSON API.

Loopback only. Officers log in with their Syft account (Syft checks the password, with
the site's login throttling and audit); a session cookie is HttpOnly and SameSite=Strict,
every form carries a per-session CSRF token, sessions expire when idle, and pages allow
no script at all (Content-Security-Policy). Researcher-written text (code, names, plans,
reasons) is only ever rendered escaped. The API (``/api/...``, bearer tokens) is what the
``medsyft review`` commands use; both call ``compliance_console.operations``.
"""


import secrets
from pathlib import Path
from urllib.parse import quote

from . import operations as ops
from .charts import spend_svg
from .sessions import IDLE_SECONDS, Session, Sessions

__all__ = ["create_app", "COOKIE", "OFFICER_ROLES"]

COOKIE = "medsyft_console"
LOGIN_COOKIE = "medsyft_login"  # double-submit CSRF token of the login form
OFFICER_ROLES = ("ADMIN", "DATA_OWNER")
HERE = Path(__file__).parent
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _templates():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.filters["eps"] = lambda v: "-" if v is None else f"{v:.3f}"
    return env


def _stylesheet() -> str:
    from pygments.formatters import HtmlFormatter

    return (HERE / "static" / "console.css").read_text() + "\n" + HtmlFormatter().get_style_defs(".code")


def _highlight(code: str, lines: list[int]) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return highlight(code, PythonLexer(), HtmlFormatter(cssclass="code", linenos="inline", hl_lines=lines,
                                                        lineanchors="line"))


def _public(exc: Exception) -> str:
    """What a failed login says: Syft's public message (wrong credentials / wait), one line."""
    text = str(getattr(exc, "public_message", None) or "")
    return text.splitlines()[0][:200] if text else "Invalid credentials: wrong e-mail or password."


def create_app(site, *, idle_seconds: float = IDLE_SECONDS, accounts=None):
    """A FastAPI app for ``site`` (a ``datasites.SiteHandle`` whose ``login`` checks
    passwords against the datasite). ``accounts`` (``datasites.accounts``) adds the
    admin's researcher-onboarding API."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

    from datasites.logins import client_address
    from syft_policies import ReviewError

    app = FastAPI(title=f"{site.spec.name} compliance console", docs_url=None, redoc_url=None, openapi_url=None)
    browser, api = Sessions(idle_seconds=idle_seconds), Sessions(idle_seconds=idle_seconds)
    app.state.browser_sessions, app.state.api_sessions = browser, api
    env, css = _templates(), _stylesheet()
    spec = site.spec

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = (request.headers.get("host") or "").split(":")[0]
        if host not in ("127.0.0.1", "localhost"):  # DNS rebinding: only loopback names
            return Response("unknown host", status_code=421)
        response = await call_next(request)
        for k, v in HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    def page(name: str, session: Session | None, status: int = 200, **values) -> HTMLResponse:
        flash = ""
        if session is not None:
            flash, session.flash = session.flash, ""
        html = env.get_template(name).render(site=spec, session=session, flash=flash, **values)
        return HTMLResponse(html, status_code=status)

    def login_with(email: str, password: str, address: str):
        """(client, role) or raise with Syft's public message; throttled and audited by the site."""
        token = client_address.set(f"console:{address}")
        try:
            client = site.login(email.strip(), password)
        finally:
            client_address.reset(token)
        if type(client).__name__ == "SyftError":
            raise PermissionError(str(client))
        role = str(getattr(client.user_role, "name", client.user_role))
        return client, role

    def audit(event: str, **fields) -> None:
        site.audit().append(event, **fields)

    # -- browser ------------------------------------------------------------------------
    def current(request: Request) -> tuple[Session | None, str]:
        return browser.lookup(request.cookies.get(COOKIE))

    def to_login(why: str = "") -> RedirectResponse:
        """To the login page; a cookie is cleared only when it came with the request (a
        cross-site request arrives without it, and must not log the officer out)."""
        response = RedirectResponse("/login" + (f"?why={why}" if why else ""), status_code=303)
        if why in ("expired", "out"):
            response.delete_cookie(COOKIE, path="/")
        return response

    def signed_in(request: Request):
        session, state = current(request)
        return session, (None if session else to_login("expired" if state == "expired" else ""))

    def forbidden(session: Session | None) -> HTMLResponse:
        return page("error.html", session, 403, title="Request refused",
                    message="This form was not sent from your console session (missing or wrong CSRF token). "
                            "Nothing was changed. Reload the page and try again.")

    async def form_of(request: Request, session: Session) -> dict | None:
        form = dict(await request.form())
        return form if Sessions.csrf_ok(session, form.get("csrf")) else None

    @app.get("/static/console.css")
    def stylesheet():
        return Response(css, media_type="text/css")

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, why: str = ""):
        token = secrets.token_urlsafe(24)
        notes = {"expired": "Your session expired; log in again.", "out": "You are logged out."}
        response = page("login.html", None, login_csrf=token, error="", note=notes.get(why, ""))
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", path="/login")
        return response

    @app.post("/login")
    async def login(request: Request):
        form = dict(await request.form())
        email, password = str(form.get("email", "")), str(form.get("password", ""))
        expected = request.cookies.get(LOGIN_COOKIE)
        if not expected or not secrets.compare_digest(expected, str(form.get("csrf", ""))):
            return page("error.html", None, 403, title="Request refused",
                        message="The login form was not sent from this console. Open the login page again.")
        address = request.client.host if request.client else "unknown"
        try:
            client, role = login_with(email, password, address)
        except Exception as exc:  # noqa: BLE001 - every failure is the site's one public message
            token = secrets.token_urlsafe(24)
            response = page("login.html", None, 401, login_csrf=token, error=_public(exc), note="")
            response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", path="/login")
            return response
        if role not in OFFICER_ROLES:
            audit("console-refused", account=email.strip(), role=role, address=address)
            return page("error.html", None, 403, title="Not a compliance officer",
                        message="This console is for the hospital's compliance officers and admin.")
        token, _ = browser.create(email.strip(), role, client)
        audit("console-login", account=email.strip(), address=address)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    @app.post("/logout")
    async def logout(request: Request):
        session, redirect = signed_in(request)
        if redirect:
            return redirect
        if await form_of(request, session) is None:
            return forbidden(session)
        browser.drop(request.cookies.get(COOKIE))
        audit("console-logout", account=session.email)
        return to_login("out")

    @app.get("/", response_class=HTMLResponse)
    def queue_page(request: Request, all: int = 0):  # noqa: A002 - the query parameter's name
        session, redirect = signed_in(request)
        if redirect:
            return redirect
        rows = ops.queue(session.client, site, status=None if all else "pending")
        studies: dict[tuple[str, str], list[dict]] = {}  # a study name is the researcher's: group by both
        for row in rows:
            studies.setdefault((row["study"], row["researcher"]), []).append(row)
        return page("queue.html", session, studies=studies, show_all=bool(all), no_study=ops.NO_STUDY,
                    remaining=ops._remaining(site))

    @app.get("/requests/{request_id}", response_class=HTMLResponse)
    def request_page(request: Request, request_id: str):
        session, redirect = signed_in(request)
        if redirect:
            return redirect
        try:
            detail = ops.request_detail(session.client, site, request_id)
        except ReviewError as exc:
            return page("error.html", session, 404, title="No such request", message=str(exc))
        lines = sorted({f["line"] for f in detail["findings"] if f["line"]})
        return page("request.html", session, r=detail, code_html=_highlight(detail["code"], lines))

    def governance(form: dict) -> dict:
        return {"purpose": str(form.get("purpose", "")), "irb": str(form.get("irb", "")),
                "dua": str(form.get("dua", "")), "expires": str(form.get("expires", "")),
                "two_person": form.get("two_person") == "on", "accept_high_risk": form.get("accept_high_risk") == "on"}

    async def decision(request: Request, work, *, refused: str, back: str = "/"):
        """A posted decision: a live session and its CSRF token, then ``work(session, form)``,
        which returns the message to show; a refusal is shown on ``back`` instead."""
        session, redirect = signed_in(request)
        if redirect:
            return redirect
        form = await form_of(request, session)
        if form is None:
            return forbidden(session)
        try:
            session.flash = work(session, form)
        except ReviewError as exc:
            session.flash = f"{refused}: {exc}"
            return RedirectResponse(back, status_code=303)
        return RedirectResponse("/", status_code=303)

    @app.post("/requests/{request_id}/approve")
    async def approve_form(request: Request, request_id: str):
        def work(session, form):
            done = ops.approve(session.client, site, request_id, **governance(form))
            return (f"Approved {done['function']} ({done['short']})." if done["status"] == "approved" else
                    f"First approval of {done['function']} recorded: a second officer must co-sign.")
        return await decision(request, work, refused="Not approved", back=f"/requests/{quote(request_id)}")

    @app.post("/studies/approve")
    async def approve_study_form(request: Request):
        """The study travels in the form, never in the URL: its name is the researcher's text."""
        def work(session, form):
            study = str(form.get("study", ""))
            expected = [i for i in str(form.get("requests", "")).split(",") if i]
            done = ops.approve_study(session.client, site, study, researcher=str(form.get("researcher", "")),
                                     expected=expected, **governance(form))
            waiting = [d["function"] for d in done if d["status"] != "approved"]
            return (f"Approved study {study}: {len(done)} request(s)." if not waiting else
                    f"Study {study}: first approval recorded; a second officer must co-sign {', '.join(waiting)}.")
        return await decision(request, work, refused="Study not approved")

    @app.post("/requests/{request_id}/deny")
    async def deny_form(request: Request, request_id: str):
        def work(session, form):
            done = ops.deny(session.client, site, request_id, reason=str(form.get("reason", "")))
            return f"Denied {done['function']} ({done['short']}): {done['reason']}"
        return await decision(request, work, refused="Not denied", back=f"/requests/{quote(request_id)}")

    @app.get("/ledger", response_class=HTMLResponse)
    def ledger_page(request: Request):
        session, redirect = signed_in(request)
        if redirect:
            return redirect
        view = ops.ledger_view(site)
        budgets = {d["dataset"]: d["budget"] for d in view["datasets"]}
        return page("ledger.html", session, ledger=view, chart=spend_svg(view["debits"], budgets))

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request, last: int = 200):
        session, redirect = signed_in(request)
        if redirect:
            return redirect
        return page("audit.html", session, log=ops.audit_view(site, last=max(1, min(last, 5000))))

    # -- JSON API (the CLI) -------------------------------------------------------------
    def bearer(request: Request) -> tuple[Session | None, JSONResponse | None]:
        header = request.headers.get("authorization", "")
        session, state = api.lookup(header[7:] if header.lower().startswith("bearer ") else None)
        if session is None:
            return None, JSONResponse({"error": "session expired; log in again" if state == "expired"
                                       else "not logged in"}, status_code=401)
        return session, None

    def answer(work, session: Session):
        try:
            return JSONResponse(work(session))
        except ReviewError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except PermissionError as exc:
            return JSONResponse({"error": str(exc)}, status_code=403)
        except ValueError as exc:  # bad input the caller can fix (accounts: e-mail, duplicates)
            return JSONResponse({"error": str(exc).splitlines()[0][:300]}, status_code=400)

    @app.post("/api/session")
    async def api_login(request: Request):
        try:
            body = await request.json()
            email, password = str(body["email"]), str(body["password"])
        except Exception:  # noqa: BLE001
            return JSONResponse({"error": "send JSON with email and password"}, status_code=400)
        address = request.client.host if request.client else "unknown"
        try:
            client, role = login_with(email, password, address)
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"error": _public(exc)}, status_code=401)
        if role not in OFFICER_ROLES:
            audit("console-refused", account=email.strip(), role=role, address=address)
            return JSONResponse({"error": "only compliance officers and the admin may use this API"},
                                status_code=403)
        token, _ = api.create(email.strip(), role, client)
        return {"token": token, "role": role, "idle_seconds": idle_seconds}

    @app.delete("/api/session")
    def api_logout(request: Request):
        header = request.headers.get("authorization", "")
        api.drop(header[7:] if header.lower().startswith("bearer ") else None)
        return {"ok": True}

    @app.get("/api/requests")
    def api_queue(request: Request, status: str = "pending"):
        session, error = bearer(request)
        return error or answer(lambda s: ops.queue(s.client, site, status=None if status == "all" else status),
                               session)

    @app.get("/api/requests/{request_id}")
    def api_request(request: Request, request_id: str):
        session, error = bearer(request)
        return error or answer(lambda s: ops.request_detail(s.client, site, request_id), session)

    async def posted(request: Request, work):
        """A JSON call that changes something: a live bearer session, a JSON object, then
        ``work(session, body)``."""
        session, error = bearer(request)
        if error:
            return error
        try:
            body = await request.json()
        except Exception:  # noqa: BLE001
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": "send a JSON object"}, status_code=400)
        return answer(lambda s: work(s, body), session)

    def flags(body: dict) -> dict:
        return governance({k: ("on" if v is True else v) for k, v in body.items()})

    @app.post("/api/requests/{request_id}/approve")
    async def api_approve(request: Request, request_id: str):
        return await posted(request, lambda s, body: ops.approve(s.client, site, request_id, **flags(body)))

    @app.post("/api/studies/approve")
    async def api_approve_study(request: Request):
        def work(s, body):
            who = body.get("researcher")
            return ops.approve_study(s.client, site, str(body.get("study", "")),
                                     researcher=None if who is None else str(who), **flags(body))
        return await posted(request, work)

    @app.post("/api/requests/{request_id}/deny")
    async def api_deny(request: Request, request_id: str):
        return await posted(request, lambda s, body: ops.deny(s.client, site, request_id,
                                                              reason=str(body.get("reason", ""))))

    if accounts is not None:
        def admin_only(s: Session):
            if s.role != "ADMIN":
                raise PermissionError("only the hospital's admin manages accounts")
            return s.client

        @app.get("/api/accounts")
        def api_accounts(request: Request):
            session, error = bearer(request)
            return error or answer(lambda s: accounts.list_accounts(admin_only(s)), session)

        @app.get("/api/accounts/{email}")
        def api_account(request: Request, email: str):
            session, error = bearer(request)
            return error or answer(lambda s: accounts.show_account(admin_only(s), email, audit=site.audit()),
                                   session)

        @app.post("/api/accounts")
        async def api_add_account(request: Request):
            def work(s, body):
                email = str(body.get("email", ""))
                return {"email": email, "password": accounts.add_researcher(
                    admin_only(s), email=email, name=str(body.get("name", "")),
                    institution=str(body.get("institution", "")), audit=site.audit())}
            return await posted(request, work)

        @app.post("/api/accounts/{email}/rotate")
        def api_rotate(request: Request, email: str):
            session, error = bearer(request)
            return error or answer(lambda s: {"email": email, "password": accounts.rotate_password(
                admin_only(s), email, audit=site.audit())}, session)

    return app

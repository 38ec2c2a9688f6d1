"""The compliance console in a real browser (Debian's headless Chromium via Selenium),
against a real in-process datasite: login and lockout, approve a whole study, deny with a
reason, the two-person co-sign, an expired session, forged forms (CSRF), researcher text
rendered inert, and the ledger and audit pages against the site's own stores."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
import syft as sy
from selenium.webdriver.common.by import By

from compliance_console import start_console
from compliance_console.browser import open_browser
from compliance_console.client import ConsoleClient, ConsoleRefused
from datasites.credentials import site_passwords
from federation import Study, StudyPlan, request_status, submit_request
from syft_policies import deny_request
from syft_policies.quiet import quiet
from syft_policies.release import ReleasePolicy

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module")
def console(site):
    running = start_console(site)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    driver = open_browser()
    driver.implicitly_wait(5)  # a click that submits a form returns before the next page has loaded
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def fresh_cookies(browser):
    browser.delete_all_cookies()


def _password(site, email):
    return site_passwords(site.spec, site.site_dir)[email]


def _login(browser, console, email, password):
    browser.get(console.url + "/login")
    browser.find_element(By.ID, "email").send_keys(email)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.ID, "login").click()


def _as_officer(browser, console, site):
    email = site.spec.compliance_officer.email
    _login(browser, console, email, _password(site, email))
    _landed(browser, lambda url: url.rstrip("/") == console.url)


def _landed(browser, check) -> str:
    """The URL once ``check(url)`` holds (a click that navigates returns before the load)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10).until(lambda d: check(d.current_url))
    return browser.current_url


def _absent(browser, by, what) -> bool:
    """No such element on the page (asked without the implicit wait)."""
    browser.implicitly_wait(0)
    try:
        return not browser.find_elements(by, what)
    finally:
        browser.implicitly_wait(5)


def _flash(browser) -> str:
    return browser.find_element(By.ID, "flash").text


def _submit(site, make):
    """Submit, as the site's researcher, the custom-code request ``make(patients)`` builds."""
    ds = site.researcher()
    patients = ds.datasets[site.spec.dataset_name].assets["patients"]
    with quiet():
        code = make(patients)
    return ds, submit_request(ds, code), code.func_name


def console_rows(patients):
    return patients.head(5)


def console_count(patients):
    return {"n": 1}


def console_probe(patients):
    return {"n": 2}


def console_victim(patients):
    return {"max_age": 1}


def console_xss(patients):
    return {"note": "</pre><script>document.title='owned'</script><img src=x onerror=alert(1)>"}


def _custom(fn):
    """``make(patients_asset)`` for ``fn`` as custom code on the patients table, under the
    site's release policy (what ``_submit`` sends)."""
    def make(patients_asset):
        return sy.syft_function(input_policy=sy.ExactMatch(patients=patients_asset),
                                output_policy=ReleasePolicy(limit=1))(fn)
    return make


_rows, _count, _probe, _victim, _xss = map(_custom, (console_rows, console_count, console_probe, console_victim,
                                                    console_xss))


def test_login_refuses_wrong_passwords_then_locks_the_account_and_admits_only_officers(site, console, browser):
    nobody = f"nobody-{uuid.uuid4().hex[:6]}@example.org"
    for _ in range(3):
        _login(browser, console, nobody, "wrong-password-123")
        assert "Invalid credentials" in browser.find_element(By.ID, "error").text
    _login(browser, console, nobody, "wrong-password-123")
    assert "too many failed logins" in browser.find_element(By.ID, "error").text
    assert browser.current_url.endswith("/login")
    failed = [e for e in site.audit().entries() if e.get("account") == nobody]
    assert [e["event"] for e in failed].count("login-failed") == 3 and failed[-1]["event"] == "login-refused"
    assert all("wrong-password" not in str(e) for e in failed)

    researcher = site.spec.researchers[0].email
    _login(browser, console, researcher, _password(site, researcher))
    assert "Not a compliance officer" in browser.find_element(By.ID, "error-title").text
    browser.get(console.url + "/")
    assert browser.current_url.endswith("/login")  # no session was made


def test_an_officer_approves_a_whole_study_from_the_queue(site, console, browser, tmp_path):
    name = f"console-{uuid.uuid4().hex[:6]}"
    study = _study(site, tmp_path, name)
    _as_officer(browser, console, site)
    section = browser.find_element(By.CSS_SELECTOR, f'section[data-study="{name}"]')
    rows = section.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 2 and all("LOW" in r.text and "pending" in r.text for r in rows)
    costs = sorted(float(r.find_element(By.CSS_SELECTOR, "td.num").text) for r in rows)
    assert costs[0] > 0 and costs[1] > 0

    section.find_element(By.CSS_SELECTOR, "details summary").click()
    form = section.find_element(By.CSS_SELECTOR, "form.study-approve")
    form.find_element(By.NAME, "purpose").send_keys("console test: sepsis model")
    form.find_element(By.NAME, "irb").send_keys("IRB-CONSOLE-1")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert _flash(browser) == f"Approved study {name}: 2 request(s)."

    statuses = study.approvals()
    assert statuses[site.spec.name].status == "approved"
    officer = site.spec.compliance_officer.email
    approved = [e for e in site.audit().entries() if e["event"] == "approved" and e.get("irb") == "IRB-CONSOLE-1"]
    assert len(approved) == 2 and all(e["by"] == officer and e["approvers"] == [officer] for e in approved)
    assert site.audit().verify().ok


def test_an_officer_denies_a_request_and_the_researcher_reads_the_reason(site, console, browser):
    ds, request_id, function = _submit(site, _rows)
    _as_officer(browser, console, site)
    browser.get(f"{console.url}/requests/{request_id}")
    assert browser.find_element(By.ID, "risk").text == "HIGH risk"
    findings = browser.find_element(By.ID, "findings").text
    assert "R004" in findings
    link = browser.find_element(By.CSS_SELECTOR, "#findings tr.high a[href^='#line-']")  # finding -> its line
    line = int(link.get_attribute("href").rsplit("-", 1)[1])
    highlighted = browser.find_elements(By.CSS_SELECTOR, ".code .hll")
    assert any(".head(" in h.text for h in highlighted)
    assert browser.find_elements(By.ID, f"line-{line}")
    browser.find_element(By.ID, "reason").send_keys("row-level output: ask for a DP count instead")
    browser.find_element(By.ID, "deny").click()
    assert _flash(browser).startswith("Denied ")
    status = request_status(ds, function)
    assert status.status == "denied" and status.reason == "row-level output: ask for a DP count instead"


def test_custom_code_needs_a_second_officer_to_co_sign(site, console, browser):
    ds, request_id, _ = _submit(site, _count)
    _as_officer(browser, console, site)
    browser.get(f"{console.url}/requests/{request_id}")
    assert browser.find_element(By.ID, "risk").text == "MEDIUM risk"
    browser.find_element(By.NAME, "purpose").send_keys("prevalence check")
    browser.find_element(By.NAME, "dua").send_keys("DUA-7")
    browser.find_element(By.ID, "approve").click()
    assert "a second officer must co-sign" in _flash(browser)
    browser.get(f"{console.url}/requests/{request_id}")
    assert browser.find_element(By.ID, "status").text == "pending"
    assert site.spec.compliance_officer.email in browser.find_element(By.ID, "cosign").text

    browser.find_element(By.NAME, "purpose").send_keys("prevalence check")  # the same officer again
    browser.find_element(By.NAME, "dua").send_keys("DUA-7")
    browser.find_element(By.ID, "approve").click()
    assert "already approved" in _flash(browser)

    browser.find_element(By.ID, "logout").click()
    assert "logged out" in browser.find_element(By.ID, "note").text
    admin = site.spec.admin.email
    _login(browser, console, admin, _password(site, admin))
    browser.get(f"{console.url}/requests/{request_id}")
    assert browser.find_element(By.ID, "approve").text == "Co-sign"
    browser.find_element(By.NAME, "purpose").send_keys("prevalence check")
    browser.find_element(By.NAME, "dua").send_keys("DUA-7")
    browser.find_element(By.ID, "approve").click()
    assert _flash(browser).startswith("Approved ")
    done = [e for e in site.audit().entries() if e.get("request") == request_id and e["event"] == "approved"]
    assert done and done[-1]["approvers"] == [site.spec.compliance_officer.email, admin]


def test_an_idle_session_expires(site, browser):
    short = start_console(site, idle_seconds=2)
    try:
        _as_officer(browser, short, site)
        time.sleep(3)
        browser.find_element(By.ID, "nav-ledger").click()
        _landed(browser, lambda url: url.endswith("/login?why=expired"))
        assert "session expired" in browser.find_element(By.ID, "note").text
    finally:
        short.stop()


class _Forger(http.server.BaseHTTPRequestHandler):
    """Another site's page with a form that posts a denial to the console."""

    target = ""

    def do_GET(self):  # noqa: N802
        page = (f'<form method="post" action="{self.target}"><input name="reason" value="forged">'
                '<input name="csrf" value="guess"><button id="go">win a prize</button></form>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args):
        pass


def test_forged_and_cross_site_forms_change_nothing(site, console, browser):
    _, request_id, _ = _submit(site, _probe)
    _as_officer(browser, console, site)
    browser.get(f"{console.url}/requests/{request_id}")
    browser.execute_script("document.querySelector('#deny-form input[name=csrf]').value = 'forged'")
    browser.find_element(By.ID, "reason").send_keys("forged")
    browser.find_element(By.ID, "deny").click()
    assert browser.find_element(By.ID, "error-title").text == "Request refused"

    _Forger.target = f"{console.url}/requests/{request_id}/deny"
    server = http.server.HTTPServer(("127.0.0.1", 0), _Forger)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://localhost:{server.server_address[1]}/")  # another site than 127.0.0.1
        browser.find_element(By.ID, "go").click()
        _landed(browser, lambda url: url.startswith(console.url + "/login"))  # SameSite=Strict: no cookie sent
    finally:
        server.shutdown()
    browser.get(f"{console.url}/requests/{request_id}")
    assert browser.find_element(By.ID, "status").text == "pending"
    assert not [e for e in site.audit().entries() if e.get("request") == request_id and e["event"] == "denied"]


def test_researcher_text_is_shown_inert(site, console, browser):
    _, request_id, _ = _submit(site, _xss)
    _as_officer(browser, console, site)
    for path in ("/", f"/requests/{request_id}"):
        browser.get(console.url + path)
        assert browser.title != "owned"
        assert _absent(browser, By.TAG_NAME, "script")
        assert _absent(browser, By.CSS_SELECTOR, "img[src=x]")
    assert "<script>document.title" in browser.find_element(By.CSS_SELECTOR, ".codebox").text
    with urllib.request.urlopen(console.url + "/login") as response:
        assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'none' covers it
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    forged_host = urllib.request.Request(console.url + "/login", headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged_host)
    assert refused.value.code == 421  # DNS rebinding: only loopback names are served


def test_ledger_and_audit_pages_show_the_sites_own_records(site, console, browser):
    ledger = site.ledger()
    ledger.debit(site.spec.dataset_name, 0.125, reference=f"console-test-{uuid.uuid4().hex[:6]}",
                 researcher=site.spec.researchers[0].email)
    _as_officer(browser, console, site)
    browser.find_element(By.ID, "nav-ledger").click()
    row = next(r for r in ledger.statement() if r["dataset"] == site.spec.dataset_name)
    shown = browser.find_element(By.ID, "budgets").text
    assert f"{row['spent']:.3f}" in shown and f"{row['remaining']:.3f}" in shown
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart polyline")
    assert "0.1250" in browser.find_element(By.ID, "debits").text

    browser.find_element(By.ID, "nav-audit").click()
    verified = site.audit().verify()
    assert browser.find_element(By.ID, "chain").text == str(verified) and verified.ok
    assert "console-login" in browser.find_element(By.ID, "entries").text

    log = site.audit().path
    original = log.read_bytes()
    try:  # an edited line is reported, with its number
        lines = original.decode().splitlines(keepends=True)
        lines[1] = lines[1].replace('"event": "', '"event": "x', 1) if '"event": "' in lines[1] \
            else lines[1].replace('"event":"', '"event":"x', 1)
        log.write_text("".join(lines))
        browser.refresh()
        assert browser.find_element(By.ID, "chain").text.startswith("audit log TAMPERED at line 2")
    finally:
        log.write_bytes(original)
    browser.refresh()
    assert "hash chain verified" in browser.find_element(By.ID, "chain").text


def _study(site, tmp_path, name: str) -> Study:
    plan = StudyPlan(study=name, sites=[site.spec.name], rounds=1, epsilon=1.0, model="mlp")
    study = Study(plan, {site.spec.name: site.researcher()}, directory=tmp_path / name, echo=lambda *_: None,
                  progress=False)
    study.submit()
    return study


def _rider(site, study_name: str):
    def make(patients_asset):
        @sy.syft_function(input_policy=sy.MixedInputPolicy(client=site.researcher(), patients=patients_asset,
                                                           plan=sy.Constant(val={"study": study_name,
                                                                                 "epsilon": 1.0})),
                          output_policy=ReleasePolicy(limit=1))
        def console_rider(patients, plan):
            return {"n": 3}
        return console_rider
    return make


def test_custom_code_filed_under_a_studys_name_cannot_ride_its_bulk_approval(site, console, browser, tmp_path):
    name = f"ride-{uuid.uuid4().hex[:6]}"
    study = _study(site, tmp_path, name)
    _, rider_id, _ = _submit(site, _rider(site, name))
    _as_officer(browser, console, site)
    section = browser.find_element(By.CSS_SELECTOR, f'section[data-study="{name}"]')
    assert len(section.find_elements(By.CSS_SELECTOR, "tbody tr")) == 3
    assert "approve them one by one" in section.text
    assert _absent(browser, By.CSS_SELECTOR, f'section[data-study="{name}"] form')

    officer = site.spec.compliance_officer.email
    api = ConsoleClient(console.url, "", site.spec.name)
    api = ConsoleClient(console.url, api.post("/api/session", {"email": officer, "password": _password(site, officer)})
                        ["token"], site.spec.name)
    with pytest.raises(ConsoleRefused, match="request by request"):
        api.post("/api/studies/approve", {"study": name, "purpose": "p", "irb": "IRB-1"})
    assert study.approvals()[site.spec.name].status == "pending"
    api.post(f"/api/requests/{rider_id}/deny", {"reason": "custom code under a study's name"})


def test_a_study_that_changed_after_the_page_loaded_is_not_approved(site, console, browser, tmp_path):
    name = f"moved-{uuid.uuid4().hex[:6]}"
    study = _study(site, tmp_path, name)
    _as_officer(browser, console, site)
    section = browser.find_element(By.CSS_SELECTOR, f'section[data-study="{name}"]')
    section.find_element(By.CSS_SELECTOR, "details summary").click()
    form = section.find_element(By.CSS_SELECTOR, "form.study-approve")
    form.find_element(By.NAME, "purpose").send_keys("p")
    form.find_element(By.NAME, "irb").send_keys("IRB-2")
    first = next(iter(study.request_ids()[site.spec.name].values()))
    deny_request(site.officer(), first, reason="decided elsewhere meanwhile")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert "changed since the page was loaded" in _flash(browser)
    assert not [e for e in site.audit().entries() if e["event"] == "approved" and e.get("irb") == "IRB-2"]


def _prevalence(site, study_name: str):
    from syft_policies.templates import medsyft_dp_prevalence

    def make(cohort_asset):
        plan = {"study": study_name, "dataset": site.spec.dataset_name, "epsilon": 0.01}
        return sy.syft_function(input_policy=sy.MixedInputPolicy(client=site.researcher(), cohort=cohort_asset,
                                                                 plan=sy.Constant(val=plan)),
                                output_policy=ReleasePolicy(limit=1), name=f"p_{uuid.uuid4().hex[:6]}")(
            medsyft_dp_prevalence)
    return make


def test_a_study_name_cannot_steer_the_bulk_approval_to_another_request(site, console, browser):
    """Red team round 5: a LOW template filed under the study ``x/../../requests/<victim>``
    made the officer's "approve the whole study" click post to the victim's approve URL.
    Now the study travels in the form (never in a URL), and a study name the vetted jobs
    would refuse makes the request HIGH risk, so no bulk form is offered for it."""
    _, victim, _ = _submit(site, _victim)
    ds = site.researcher()
    cohort = ds.datasets[site.spec.dataset_name].assets["sepsis_cohort"]
    name = f"x/../../requests/{victim}"
    with quiet():
        submit_request(ds, _prevalence(site, name)(cohort))
        submit_request(ds, _prevalence(site, "plain-prevalence")(cohort))
    _as_officer(browser, console, site)
    section = browser.find_element(By.CSS_SELECTOR, f'section[data-study="{name}"]')
    assert "HIGH" in section.text and "approve them one by one" in section.text
    assert _absent(browser, By.CSS_SELECTOR, f'section[data-study="{name}"] form')
    plain = browser.find_element(By.CSS_SELECTOR, 'section[data-study="plain-prevalence"] form.study-approve')
    assert plain.get_attribute("action") == console.url + "/studies/approve"  # a fixed URL, the study a field
    browser.execute_script("arguments[0].querySelector('input[name=study]').value = arguments[1]", plain, name)
    browser.find_element(By.CSS_SELECTOR, 'section[data-study="plain-prevalence"] details summary').click()
    plain.find_element(By.NAME, "purpose").send_keys("p")
    plain.find_element(By.NAME, "irb").send_keys("IRB-5")
    plain.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert _flash(browser).startswith("Study not approved")
    assert site.governance().get(victim) is None  # not even a first approval of the victim
    assert not [e for e in site.audit().entries() if e.get("request") == victim and e["event"] != "submitted"]

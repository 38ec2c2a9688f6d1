"""The ``medsyft`` command. Heavy imports (Syft, torch) happen inside commands, so
``medsyft --help`` answers at once."""

from __future__ import annotations

import contextlib
import functools
import math
import os
from pathlib import Path
from typing import Optional

import typer


class _Commands(typer.Typer):
    """Typer without tracebacks: an expected failure is one line on stderr and exit code 1.

    Tracebacks never show local variables (they held patient rows and passwords); set
    ``MEDSYFT_DEBUG=1`` to see the traceback of an unexpected failure.
    """

    def __init__(self, **kwargs):
        super().__init__(pretty_exceptions_show_locals=False, **kwargs)

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(fn):
            @functools.wraps(fn)
            def wrapped(*a, **k):
                try:
                    return fn(*a, **k)
                except (typer.Exit, typer.Abort, KeyboardInterrupt):
                    raise
                except typer.BadParameter as exc:  # a usage problem found while running: one line too
                    hint = f" ({exc.param_hint})" if exc.param_hint else ""
                    typer.echo(f"error{hint}: {_one_line(exc)}", err=True)
                    raise typer.Exit(2) from None
                except Exception as exc:  # noqa: BLE001 - the CLI's one place to turn failures into a line
                    if os.environ.get("MEDSYFT_DEBUG"):
                        raise
                    typer.echo(f"error: {_one_line(exc)}", err=True)
                    raise typer.Exit(1) from None
            register(wrapped)
            return fn
        return decorator


def _one_line(exc: Exception) -> str:
    """The message of ``exc`` as one line (Syft's errors carry their text in public_message)."""
    text = str(getattr(exc, "public_message", None) or exc or type(exc).__name__)
    lines = [line.strip(" -") for line in text.strip().splitlines() if line.strip()]
    summary = "; ".join(lines[:4]) + (f" (and {len(lines) - 4} more)" if len(lines) > 4 else "")
    known = ("SyntheaValidationError", "SpecError", "ReviewError", "PlanError", "WeakPasswordError",
             "BudgetExceeded", "IsolationUnavailable")
    prefix = "" if type(exc).__name__ in known or isinstance(exc, (RuntimeError, ValueError)) \
        else f"{type(exc).__name__}: "
    return (prefix + summary)[:600]


app = _Commands(
    help="medsyft: private multi-hospital data science on PySyft datasites.\n\n"
         "Each simulated hospital is a Syft datasite with private and mock assets; researchers "
         "submit code, compliance officers approve or deny it, and only aggregates leave.",
    no_args_is_help=True, add_completion=False)
data_app = _Commands(help="Synthea-format hospital data.", no_args_is_help=True)
sites_app = _Commands(help="Start, stop and inspect the hospital datasites (HTTP on loopback).",
                        no_args_is_help=True)
review_app = _Commands(help="The compliance officer's review queue on one hospital.", no_args_is_help=True)
budget_app = _Commands(help="The privacy-budget ledger of one hospital.", no_args_is_help=True)
audit_app = _Commands(help="The tamper-evident audit log of one hospital.", no_args_is_help=True)
accounts_app = _Commands(help="Researcher accounts of one hospital (its admin onboards researchers here).",
                         no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(sites_app, name="sites")
app.add_typer(review_app, name="review")
app.add_typer(budget_app, name="budget")
app.add_typer(audit_app, name="audit")
app.add_typer(accounts_app, name="accounts")

HomeOpt = typer.Option(Path(".medsyft"), "--home", envvar="MEDSYFT_HOME",
                       help="Where sites keep their data, databases and secrets (env MEDSYFT_HOME).")
SiteOpt = typer.Option(None, "--site", "-s", help="Hospital name (repeatable); default: all shipped hospitals.")


def _specs(names: Optional[list[str]]):
    from datasites import shipped_specs

    specs = shipped_specs()
    if not names:
        return specs
    known = {s.name: s for s in specs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise typer.BadParameter(f"unknown site(s) {', '.join(unknown)}; known: {', '.join(known)}", param_hint="--site")
    return [known[n] for n in names]


def _one(name: str):
    return _specs([name])[0]


@app.command()
def demo(
    home: Path = HomeOpt,
    scenario: str = typer.Option("sepsis", help="sepsis: federated DP-SGD across three ICUs, with baselines; "
                                               "cross-border: EU + US oncology RWE study with HE analytics, "
                                               "regional secure aggregation and the report; imaging: DP U-Net "
                                               "brain-tumour segmentation across two MRI centres, Dice against "
                                               "epsilon."),
    patients: Optional[int] = typer.Option(None, help="sepsis: patients in the population (default 4000); "
                                                      "cross-border: oncology patients per hospital (default 600); "
                                                      "imaging: cases per centre (default 300, the specs')."),
    seed: int = typer.Option(7, help="Seed for the data generator and the study."),
    rounds: Optional[int] = typer.Option(None, min=1, help="Federated rounds (default 8; cross-border 4)."),
    servers: bool = typer.Option(False, "--servers", help="Run every hospital as its own HTTP server process."),
    results: Optional[Path] = typer.Option(None, help="Where summary.json, plots and reports go "
                                                      "(default results/ or results/cross-border/)."),
    deadline: float = typer.Option(900.0, min=1, max=86400, help="sepsis: seconds one hospital call may take "
                                                                 "before that hospital is left out of the round."),
    retries: int = typer.Option(2, min=0, max=10, help="sepsis: further attempts when a hospital cannot be "
                                                       "reached (backoff 2 s, 4 s, ...)."),
    fedbn: bool = typer.Option(False, "--fedbn", help="imaging: FedBN, each centre keeps its own normalisation "
                                                      "layers (its scanner's intensities) instead of FedAvg."),
    warm_epochs: Optional[int] = typer.Option(None, min=0, max=1000,
                                              help="imaging: epochs of training on the centres' public mocks "
                                                   "before the DP studies (no epsilon; default 100, 0 for none)."),
):
    """Run a demo study end to end on simulated hospitals."""
    if scenario == "cross-border":
        from federation.crossborder import run_cross_border

        if servers:
            raise typer.BadParameter("the cross-border scenario runs in-process only", param_hint="--servers")
        if patients is not None and patients < 200:
            raise typer.BadParameter("use at least 200 oncology patients per hospital", param_hint="--patients")
        summary = run_cross_border(home, n_patients=patients or 600, rounds=rounds or 4, seed=seed,
                                   results=results or Path("results/cross-border"), echo=typer.echo)
        typer.echo(f"pooled AUROC {summary['model']['auroc']:.3f}; report: {', '.join(summary['report'])} "
                   f"({summary['wall_seconds']:.0f}s)")
        return
    if scenario == "imaging":
        from federation.imaging import format_imaging, run_imaging

        if servers:
            raise typer.BadParameter("the imaging scenario runs in-process only", param_hint="--servers")
        if patients is not None and not 80 <= patients <= 5000:
            raise typer.BadParameter("give 80 to 5000 cases per imaging centre", param_hint="--patients")
        summary = run_imaging(home, cases=patients, rounds=rounds or 4, seed=seed, strategy="fedbn" if fedbn else "fedavg",
                              results=results or Path("results/imaging"), echo=typer.echo, warm_epochs=warm_epochs)
        typer.echo(format_imaging(summary))
        return
    if fedbn or warm_epochs is not None:
        raise typer.BadParameter("--fedbn and --warm-epochs are for the imaging scenario",
                                 param_hint="--fedbn" if fedbn else "--warm-epochs")
    if scenario != "sepsis":
        raise typer.BadParameter(f"unknown scenario {scenario!r}; choose sepsis, cross-border or imaging",
                                 param_hint="--scenario")
    from federation.demo import format_summary, run_demo

    patients = 4000 if patients is None else patients
    if patients < 600:
        raise typer.BadParameter("use at least 600 patients so every hospital has a cohort to train on",
                                 param_hint="--patients")
    if not math.isfinite(deadline):
        raise typer.BadParameter("give a finite number of seconds", param_hint="--deadline")
    summary = run_demo(home, n_patients=patients, seed=seed, servers=servers, rounds=rounds or 8,
                       results=results or Path("results"), echo=typer.echo, deadline=deadline, retries=retries)
    typer.echo(format_summary(summary))


@app.command()
def report(results: Path = typer.Option(Path("results/cross-border"), help="A study's results directory.")):
    """Write report.html and report.pdf from a cross-border study's summary.json."""
    from federation.report import report_from

    try:
        paths = report_from(results)
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    except (ValueError, KeyError, TypeError) as exc:  # a summary.json that is not a study's summary
        typer.echo(f"error: {results / 'summary.json'} is not a cross-border study's summary "
                   f"({_one_line(exc)[:160]}); re-run the study", err=True)
        raise typer.Exit(1)
    typer.echo("written: " + ", ".join(str(p) for p in paths))


@data_app.command("generate")
def data_generate(
    home: Path = HomeOpt,
    patients: int = typer.Option(3000, help="Patients in the whole population."),
    seed: int = typer.Option(7, help="Generator seed (same seed, same bytes)."),
    overwrite: bool = typer.Option(False, help="Replace existing site data."),
):
    """Generate the population, split it into the hospitals, write exports and mocks."""
    from datasites import ensure_site_data
    from datasites.data import private_dir
    from synthetic_data import describe_hospitals, load_synthea

    specs = _specs(None)
    wrote = ensure_site_data(specs, home, n_patients=patients, seed=seed, overwrite=overwrite)
    typer.echo("written" if wrote else "already present (use --overwrite to regenerate)")
    table = describe_hospitals({s.name: load_synthea(private_dir(home, s.name)) for s in specs})
    typer.echo(table.to_string())


@contextlib.contextmanager
def _home_lock(home: Path):
    """An exclusive lock on ``<home>/.sites-up.lock`` for the duration of the block."""
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / ".sites-up.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _site_error(spec, exc: Exception) -> int:
    """One line on stderr for a site that failed (``MEDSYFT_DEBUG=1``: the traceback)."""
    if os.environ.get("MEDSYFT_DEBUG"):
        raise exc
    text = _one_line(exc)
    text = text[len(spec.name) + 2:] if text.startswith(f"{spec.name}: ") else text
    typer.echo(f"{spec.name:<16} error: {text}", err=True)
    return 1


@sites_app.command("up")
def sites_up(home: Path = HomeOpt, site: Optional[list[str]] = SiteOpt,
             patients: int = typer.Option(3000, help="Population size if data must be generated first."),
             seed: int = typer.Option(7)):
    """Start each hospital as its own HTTP server process on 127.0.0.1 (idempotent: one server per site)."""
    from datasites import ensure_site_data, start_site

    specs = _specs(site)
    with _home_lock(home):  # two `sites up` at once: one generates missing data, the other waits for it
        ensure_site_data(_specs(None), home, n_patients=patients, seed=seed)
    failed = 0
    for spec in specs:
        try:
            handle = start_site(spec, home, mode="http")
        except Exception as exc:  # noqa: BLE001 - one line per site, the other sites still go on
            failed += _site_error(spec, exc)
            continue
        if handle.started:
            typer.echo(f"{spec.name:<16} started at {handle.url} (pid {handle.pid}; data in {handle.site_dir})")
        else:
            typer.echo(f"{spec.name:<16} already running at {handle.url} (pid {handle.pid})")
    if failed:
        raise typer.Exit(1)


@sites_app.command("down")
def sites_down(home: Path = HomeOpt, site: Optional[list[str]] = SiteOpt):
    """Stop the hospitals' server processes (their data stays) and check their ports are free."""
    from datasites.server import stop_site_report

    failed = 0
    for spec in _specs(site):
        try:
            report = stop_site_report(spec, home)
        except Exception as exc:  # noqa: BLE001 - one line per site, the other sites still go on
            failed += _site_error(spec, exc)
            continue
        failed += report["port_free"] is False
        typer.echo(f"{spec.name:<16} {report['message']}", err=report["port_free"] is False)
    if failed:
        raise typer.Exit(1)


@sites_app.command("status")
def sites_status(home: Path = HomeOpt, site: Optional[list[str]] = SiteOpt):
    """Show whether each hospital is running (answering as itself), starting, unresponsive,
    not running, or finds its port taken by another server; and what to do."""
    from datasites import site_status

    for spec in _specs(site):
        s = site_status(spec, home)
        typer.echo(f"{spec.name:<16} {spec.region}/{spec.jurisdiction:<6} {s['label']:<12} {s['detail'] or '-'}")


def _console(name: str, home: Path, *, as_admin: bool = False):
    """The site's console API, logged in as its compliance officer (or admin)."""
    from compliance_console.client import ConsoleClient

    return ConsoleClient.login(_one(name), home, as_admin=as_admin)


def _refused(call, hint: str):
    """Run ``call``; a refusal by the site (unknown id, budget, policy) is a usage error."""
    from compliance_console.client import ConsoleRefused

    try:
        return call()
    except ConsoleRefused as exc:
        raise typer.BadParameter(str(exc).split(": ", 1)[-1], param_hint=hint) from None


def _eps(value) -> str:
    return "-" if value is None else f"{value:.3f}"


@review_app.command("list")
def review_list(site: str = typer.Option(..., "--site", "-s", help="Hospital name."), home: Path = HomeOpt,
                all_: bool = typer.Option(False, "--all", help="Include approved and denied requests.")):
    """List requests waiting for review (or all of them), with their automatic risk and
    epsilon cost, grouped by study."""
    rows = _console(site, home).get("/api/requests", status="all" if all_ else "pending")
    if not rows:
        typer.echo("no requests" if all_ else "no pending requests")
        return
    typer.echo(f"{'id':<8}  {'status':<8}  {'risk':<6}  {'epsilon':>7}  {'function':<28}  {'researcher':<30}  submitted")
    for study in dict.fromkeys(r["study"] for r in rows):
        typer.echo(f"study {study}" if not study.startswith("(") else study)
        for r in (r for r in rows if r["study"] == study):
            cosign = f"  co-sign needed (approved by {', '.join(r['cosigned_by'])})" if r["cosigned_by"] else ""
            reason = f"  reason: {r['reason']}" if r["reason"] else ""
            typer.echo(f"{r['short']:<8}  {r['status']:<8}  {r['risk'].upper():<6}  {_eps(r['epsilon']):>7}  "
                       f"{r['function']:<28}  {r['researcher']:<30}  {r['submitted']}{cosign}{reason}")


@review_app.command("show")
def review_show(request_id: str, site: str = typer.Option(..., "--site", "-s"), home: Path = HomeOpt):
    """Show one request, its code and the automatic review report."""
    console = _console(site, home)
    r = _refused(lambda: console.get("/api/requests/" + console.quote(request_id)), "REQUEST_ID")
    typer.echo(f"request {r['id']}\nfunction {r['function']}\nresearcher {r['researcher']} ({r['institution']})\n"
               f"submitted {r['submitted']}\nstatus {r['status']}" + (f"\nreason {r['reason']}" if r["reason"] else ""))
    if r["plan"]:
        typer.echo("study plan " + ", ".join(f"{k}={v}" for k, v in r["plan"].items()))
    typer.echo("\n" + r["code"])
    typer.echo(r["report"])


def _governance(purpose, irb, dua, expires, two_person, accept_high_risk) -> dict:
    return {"purpose": purpose, "irb": irb, "dua": dua, "expires": expires, "two_person": two_person,
            "accept_high_risk": accept_high_risk}


@review_app.command("approve")
def review_approve(request_id: Optional[str] = typer.Argument(None, help="The request (an id prefix is enough)."),
                   site: str = typer.Option(..., "--site", "-s"), home: Path = HomeOpt,
                   study: Optional[str] = typer.Option(None, "--study",
                                                       help="Approve every pending request of this study at once."),
                   purpose: str = typer.Option(..., help="What the data will be used for."),
                   irb: str = typer.Option("", help="IRB / ethics approval reference."),
                   dua: str = typer.Option("", help="Data-use agreement reference (if no IRB)."),
                   expires: str = typer.Option("", help="Last day the approval holds (YYYY-MM-DD)."),
                   two_person: bool = typer.Option(False, "--two-person",
                                                   help="Require a second, different officer to approve too."),
                   accept_high_risk: bool = typer.Option(False, "--accept-high-risk",
                                                         help="Approve although the automatic review says HIGH "
                                                              "risk (you have read the code).")):
    """Approve a pending request (or a whole study with --study) with its governance
    metadata (a training request must fit the dataset's privacy budget; custom code needs
    two officers unless the site says otherwise)."""
    if (request_id is None) == (study is None):
        raise typer.BadParameter("give either a request id or --study NAME", param_hint="REQUEST_ID")
    console = _console(site, home)
    body = _governance(purpose, irb, dua, expires, two_person, accept_high_risk)
    if study is not None:
        done = _refused(lambda: console.post("/api/studies/approve", {**body, "study": study}), "--study")
    else:
        done = [_refused(lambda: console.post(f"/api/requests/{console.quote(request_id)}/approve", body),
                         "REQUEST_ID")]
    for d in done:
        typer.echo(f"{'approved' if d['status'] == 'approved' else 'first approval recorded, a second officer must approve'}"
                   f" {d['short']} ({d['function']})")


@review_app.command("deny")
def review_deny(request_id: str, site: str = typer.Option(..., "--site", "-s"),
                reason: str = typer.Option(..., "--reason", "-r", help="Shown to the researcher."),
                home: Path = HomeOpt):
    """Deny a pending request, with a reason the researcher will see."""
    console = _console(site, home)
    d = _refused(lambda: console.post(f"/api/requests/{console.quote(request_id)}/deny", {"reason": reason}),
                 "--reason")
    typer.echo(f"denied {d['short']} ({d['function']}): {d['reason']}")


@app.command("console")
def console_url_cmd(site: Optional[list[str]] = SiteOpt, home: Path = HomeOpt):
    """Where each hospital's compliance console answers (served by the site's own process
    while it runs; open it in a browser and log in with the officer's account)."""
    from compliance_console.client import ConsoleError, console_url

    for spec in _specs(site):
        try:
            typer.echo(f"{spec.name:<16} {console_url(spec, home)}   (log in as {spec.compliance_officer.email})")
        except ConsoleError as exc:
            typer.echo(f"{spec.name:<16} {exc}")


EmailOpt = typer.Option(..., "--email", "-e", help="The researcher's e-mail (their login).")


def _handover(spec, email: str, password: str, what: str) -> None:
    var = "MEDSYFT_PASSWORD_" + spec.name.upper().replace("-", "_")
    typer.echo(f"{what} {email} at {spec.name}\n"
               f"one-time password (shown once; medsyft keeps no copy): {password}\n"
               "hand it to the researcher by a separate channel; they keep it out of their notebooks:\n"
               f"    export {var}='{password}'\n"
               f"    sy.login(url=\"http://127.0.0.1:{spec.port}\", email=\"{email}\", password=os.environ[\"{var}\"])")


@accounts_app.command("add")
def accounts_add(site: str = typer.Option(..., "--site", "-s"), email: str = EmailOpt,
                 name: str = typer.Option(..., "--name", help="The researcher's full name."),
                 institution: str = typer.Option("", "--institution", help="Their institution."),
                 home: Path = HomeOpt):
    """Create a researcher account; prints its one-time password (audited, never stored)."""
    console = _console(site, home, as_admin=True)
    done = _refused(lambda: console.post("/api/accounts", {"email": email, "name": name,
                                                           "institution": institution}), "--email")
    _handover(_one(site), done["email"], done["password"], "added researcher")


@accounts_app.command("show")
def accounts_show(site: str = typer.Option(..., "--site", "-s"), email: str = EmailOpt, home: Path = HomeOpt):
    """One account: name, institution, role, when and by whom it was added (no password)."""
    console = _console(site, home, as_admin=True)
    account = _refused(lambda: console.get("/api/accounts/" + console.quote(email)), "--email")
    for key, value in account.items():
        typer.echo(f"{key:<18} {value if value not in (None, '') else '-'}")


@accounts_app.command("list")
def accounts_list(site: str = typer.Option(..., "--site", "-s"), home: Path = HomeOpt):
    """Every account of the site, one per line."""
    for a in _console(site, home, as_admin=True).get("/api/accounts"):
        typer.echo(f"{a.get('email', ''):<40} {str(a.get('role', '')):<16} {a.get('name', '')}"
                   + (f" ({a['institution']})" if a.get("institution") else ""))


@accounts_app.command("rotate")
def accounts_rotate(site: str = typer.Option(..., "--site", "-s"), email: str = EmailOpt, home: Path = HomeOpt):
    """Give a researcher a new one-time password; the old one stops working."""
    console = _console(site, home, as_admin=True)
    done = _refused(lambda: console.post(f"/api/accounts/{console.quote(email)}/rotate"), "--email")
    _handover(_one(site), done["email"], done["password"], "new password for")


def _ledger(name: str, home: Path):
    from datasites.registry import LEDGER_FILE
    from syft_policies.ledger import BudgetLedger

    spec = _one(name)
    path = home / spec.name / LEDGER_FILE
    if not path.exists():
        raise typer.BadParameter(f"{spec.name} has no ledger under {home}; start it once with `medsyft sites up`",
                                 param_hint="--site")
    return spec, BudgetLedger(path)


@budget_app.command("show")
def budget_show(site: str = typer.Option(..., "--site", "-s"), home: Path = HomeOpt,
                history: bool = typer.Option(False, "--history", help="List every debit too.")):
    """Budget, spent and remaining epsilon of the site's dataset."""
    spec, ledger = _ledger(site, home)
    total, spent = ledger.budget(spec.dataset_name), ledger.spent(spec.dataset_name)
    typer.echo(f"{spec.name} {spec.dataset_name}: budget epsilon {total:g}, spent {spent:.3f}, "
               f"remaining {ledger.remaining(spec.dataset_name):.3f}")
    if history:
        for d in ledger.history(spec.dataset_name):
            typer.echo(f"  {d['epsilon']:.4f}  {d['reference']}  {d['researcher']}")


@budget_app.command("set")
def budget_set(epsilon: float, site: str = typer.Option(..., "--site", "-s"), home: Path = HomeOpt):
    """Set the dataset's total epsilon budget at this site (debits so far still count)."""
    spec, ledger = _ledger(site, home)
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise typer.BadParameter("the budget must be a positive, finite number", param_hint="EPSILON")
    ledger.set_budget(spec.dataset_name, epsilon)
    typer.echo(f"{spec.name} {spec.dataset_name}: budget epsilon {epsilon:g}, "
               f"remaining {ledger.remaining(spec.dataset_name):.3f}")


def _audit(name: str, home: Path):
    from syft_policies.audit import AUDIT_FILE, AuditLog

    spec = _one(name)
    return AuditLog(home / spec.name / AUDIT_FILE)


@audit_app.command("show")
def audit_show(site: str = typer.Option(..., "--site", "-s"), home: Path = HomeOpt,
               last: int = typer.Option(50, help="How many of the latest entries.")):
    """The latest audit entries, one per line."""
    import time as _time

    for e in _audit(site, home).entries()[-last:]:
        details = {k: v for k, v in e.items() if k not in ("seq", "at", "event", "prev", "hash")}
        stamp = _time.strftime("%Y-%m-%d %H:%M:%S", _time.gmtime(e["at"]))
        typer.echo(f"{e['seq']:>5}  {stamp}  {e['event']:<10} " + "  ".join(f"{k}={v}" for k, v in details.items()))


@audit_app.command("verify")
def audit_verify(site: str = typer.Option(..., "--site", "-s"), home: Path = HomeOpt):
    """Check the hash chain; exits 1 and names the first bad line if anything was changed."""
    result = _audit(site, home).verify()
    typer.echo(str(result))
    if not result.ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

"""The demo: a federated DP study of sepsis across three simulated hospitals.

Everything goes through real Syft datasites: data owners provision each hospital,
the researcher submits one study (a train and an evaluate request per hospital) plus,
to show the other side of review, a request that would return patient rows; each
hospital's compliance officer approves the study and denies the rows; the rounds run
DP-SGD at the hospitals; the reference models (pooled, pooled DP, local) are trained in
the same run; ``results/`` gets ``summary.json`` and the plots.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from datasites import ensure_site_data, shipped_specs, start_site, stop_site
from syft_policies.quiet import quiet
from federation.baselines import pooled_cohorts, run_baselines
from federation.plan import StudyPlan
from federation.plots import plot_roc, plot_rounds, plot_sites
from federation.requests import request_status, submit_request
from federation.study import Study
from syft_policies import approve_request, deny_request, list_requests
from syft_policies.review import review_request

__all__ = ["run_demo", "format_summary", "DENIAL_REASON", "DEFAULT_PATIENTS"]

DEFAULT_PATIENTS = 4000
DENIAL_REASON = ("returns row-level patient data (patients.head); only aggregated, "
                 "small-cell-suppressed outputs may leave this hospital")
EPSILON_CEILING = 10.0  # what the demo's hospitals accept per study (training plus evaluation)
# Every evaluation is noised and paid: a cheap look every other round, and one precise
# evaluation at the end (the reported AUROC; its noise moves it by about 0.005).
DEMO_EVALUATION = {"evaluate_every": 2, "eval_epsilon": 0.25, "final_eval_epsilon": 3.0}
DEMO_IRB = "IRB-DEMO-2026-001"


def _in_days(days: int) -> str:
    import datetime as dt

    return (dt.date.today() + dt.timedelta(days=days)).isoformat()


def _fresh_datasites(specs, home: Path) -> None:
    """The demo starts from empty datasites each run (generated data is kept)."""
    for spec in specs:
        stop_site(spec, home)
        for name in ("db", "blob", "jobs", "site.json", "signing_key", "secrets.json", "ledger.sqlite",
                     "ledger.sqlite-wal", "ledger.sqlite-shm", "audit.jsonl", "audit.head", "audit.lock",
                     "approvals.json"):
            path = home / spec.name / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    shutil.rmtree(home / "studies", ignore_errors=True)


def _rows_request(ds, dataset: str):
    import syft as sy

    patients = ds.datasets[dataset].assets["patients"]

    @sy.syft_function_single_use(patients=patients)
    def first_patients(patients):
        return patients.head(20)

    return first_patients


def _officer_reviews(site, echo, purpose: str = "early warning of sepsis in adult ICU stays") -> None:
    """The compliance officer follows the automatic review: approves low-risk requests
    (checked against the dataset's privacy budget), denies the rest with the findings."""
    from syft_policies.code_review import SitePolicy

    officer, ledger, audit, governance = site.officer(), site.ledger(), site.audit(), site.governance()
    policy = SitePolicy.for_site(site.spec)  # the site's own bounds (its TOML [policy]), not the defaults
    for req in list_requests(officer, status="pending"):
        report = review_request(officer, req.id, budget_remaining=ledger.remaining(site.spec.dataset_name),
                                site_policy=policy)
        if report.risk == "low":
            approve_request(officer, req.id, ledger=ledger, audit=audit, governance=governance, irb=DEMO_IRB,
                            purpose=purpose, expires=_in_days(90), site_policy=policy)
            echo(f"  {site.spec.name:<16} approved {req.function} (review: low risk"
                 + (f", epsilon {report.epsilon_cost:.2f} of {report.budget_before:.1f} left)"
                    if report.epsilon_cost is not None else ")"))
        else:
            high = [f"{f.rule} line {f.line}: {f.message}" for f in report.findings if f.severity == "high"]
            deny_request(officer, req.id, reason=f"{DENIAL_REASON} (automatic review: {report.risk} risk; "
                                                 + "; ".join(high) + ")", audit=audit)
            echo(f"  {site.spec.name:<16} DENIED   {req.function} (review: {report.risk} risk)")


def _console_tour(site, home: Path, out: Path, echo):
    """A browser on the site's compliance console (its own, in HTTP mode; one served from
    this process otherwise), or None with a warning when Chromium is not installed."""
    from compliance_console.browser import BrowserMissing
    from compliance_console.tour import ConsoleTour

    console = None
    if site.mode == "http":
        from compliance_console.client import console_url

        url = console_url(site.spec, home)
    else:
        from compliance_console import start_console

        console = start_console(site)
        url = console.url
    try:
        tour = ConsoleTour(url, out, on_close=console.stop if console is not None else None)
    except BrowserMissing as exc:
        echo(f"  warning: no console screenshots ({exc})")
        if console is not None:
            console.stop()
        return None
    shutil.rmtree(out, ignore_errors=True)
    return tour


def _review_in_browser(tour, site, study: str, echo) -> None:
    """The officer of ``site`` reviews in the web console: reads the queue and a request,
    then approves the whole study (the same checks as ``approve_request``)."""
    from datasites.credentials import site_passwords

    email = site.spec.compliance_officer.email
    tour.login(email, site_passwords(site.spec, site.site_dir)[email])
    tour.queue()
    tour.first_request(study)
    message = tour.approve_study(study, purpose="early warning of sepsis in adult ICU stays", irb=DEMO_IRB,
                                 expires=_in_days(90))
    if not message.startswith("Approved study"):
        raise RuntimeError(f"{site.spec.name}: the console did not approve the study: {message}")
    echo(f"  {site.spec.name:<16} approved study {study} in the web console ({message})")


def _site_profile(frame) -> dict:
    ages = frame["age"].to_numpy()
    bins = list(range(20, 101, 10))
    counts = np.histogram(np.clip(ages, 20, 99.9), bins=bins)[0]
    return {"n": int(len(frame)), "prevalence": round(float(frame["label"].mean()), 4),
            "mean_age": round(float(ages.mean()), 1), "age_bins": bins,
            "age_counts": [int(c) if c >= 10 else None for c in counts]}


def run_demo(home: Path, *, n_patients: int = DEFAULT_PATIENTS, seed: int = 7, servers: bool = False,
             rounds: int = 8, results: Path = Path("results"), echo=print, progress: bool = True,
             deadline: float = 900.0, retries: int = 2, connect=None, console: bool = True) -> dict:
    """Run the study and its baselines; write ``results/``; return the summary.

    ``deadline`` and ``retries``: per site call (``StudyPlan``). ``connect(site)``: the
    researcher's client of a site (default ``site.researcher()``; the fault tests route it
    through a proxy). ``console``: the first hospital's officer reviews in the web console,
    in headless Chromium, with screenshots in ``results/console/`` (else as the others do)."""
    t0 = time.monotonic()
    specs = shipped_specs()
    home = Path(home) / "demo"
    _fresh_datasites(specs, home)
    echo(f"[1/6] data owners: Synthea-format data for {len(specs)} hospitals ({n_patients} patients, seed {seed})")
    ensure_site_data(specs, home, n_patients=n_patients, seed=seed)
    mode = "http" if servers else "inprocess"
    echo(f"      {time.monotonic() - t0:.0f}s")
    echo(f"[2/6] starting {len(specs)} datasites ({'HTTP servers on loopback' if servers else 'in-process'})")
    sites = {s.name: start_site(s, home, mode=mode) for s in specs}
    tour = None
    try:
        plan = StudyPlan(study="sepsis-lstm", sites=list(sites), model="lstm", strategy="fedavg", rounds=rounds,
                         epsilon=6.0, delta=1e-5, seed=seed, deadline=deadline, retries=retries,
                         **DEMO_EVALUATION)
        echo(f"[3/6] researcher: submits study {plan.study} ({plan.model}, {plan.strategy}, {plan.rounds} rounds, "
             f"epsilon={plan.epsilon} at delta={plan.delta}, noise_multiplier={plan.noise_multiplier:.3f}) "
             "and one row-level request")
        clients = {name: (connect or (lambda s: s.researcher()))(site) for name, site in sites.items()}
        study = Study(plan, clients, directory=home / "studies" / plan.study, echo=echo, progress=progress)
        study.submit()
        rogue_site = specs[1].name

        def rogue():  # sent once, even when a lossy network loses the reply
            try:
                return request_status(clients[rogue_site], "first_patients")
            except LookupError:
                with quiet():
                    return submit_request(clients[rogue_site], _rows_request(clients[rogue_site], plan.dataset))
        study._reachable(rogue_site, rogue)
        echo(f"      {time.monotonic() - t0:.0f}s")
        echo("[4/6] compliance officers: review the queues")
        first = sites[specs[0].name]
        tour = _console_tour(first, home, Path(results) / "console", echo) if console else None
        for site in sites.values():
            if tour is not None and site is first:
                _review_in_browser(tour, first, plan.study, echo)
            else:
                _officer_reviews(site, echo)
        denied = study._reachable(rogue_site, lambda: request_status(clients[rogue_site], "first_patients"))
        echo(f"      {time.monotonic() - t0:.0f}s")
        echo(f"[5/6] federated rounds at the hospitals (DP-SGD with Opacus)")
        t_study = time.monotonic()
        result = study.run()
        study_seconds = time.monotonic() - t_study
        if tour is not None:
            tour.ledger_and_audit()
            echo(f"      console screenshots: {len(tour.shots)} pages in {Path(results) / 'console'}")
        echo("[6/6] reference models with the data pooled (simulation only)")
        frames = pooled_cohorts(sites.values())
        budgets = {name: site.ledger().remaining(plan.dataset) for name, site in sites.items()}
        audits = {name: site.audit().verify() for name, site in sites.items()}
        t_base = time.monotonic()
        base = run_baselines(frames, plan, echo=echo)
        baseline_seconds = time.monotonic() - t_base
    finally:
        if tour is not None:
            tour.close()
        for site in sites.values():
            site.stop()

    wall = time.monotonic() - t0
    fed_fpr, fed_tpr = result.roc()
    summary = {
        "auroc": {"federated_dp": result.auroc, "pooled": base["pooled"]["auroc"],
                  "pooled_dp": base["pooled_dp"]["auroc"], "local_mean": base["local_dp_mean"],
                  "local_nonprivate_mean": base["local_mean"],
                  "local": {s: r["auroc"] for s, r in base["local_dp"].items()},
                  "local_nonprivate": {s: r["auroc"] for s, r in base["local"].items()},
                  "federated_dp_per_site": {s: _auroc_or_none(e) for s, e in result.evaluations.items()}},
        "epsilon": {"per_site": result.epsilon, "evaluation": result.evaluation_epsilon,
                    "total": result.total_epsilon, "delta": plan.delta, "target": plan.epsilon,
                    "pooled_dp": base["pooled_dp"]["epsilon"]},
        "receipts": {s: {"training": result.history[-1]["epsilon"].get(s),
                         "evaluation": result.evaluation_epsilon.get(s),
                         "final_evaluation": e.get("receipt")} for s, e in result.evaluations.items()},
        "rounds": len(result.history), "wall_seconds": round(wall, 1),
        "study_seconds": round(study_seconds, 1), "baseline_seconds": round(baseline_seconds, 1),
        "mode": mode, "patients": n_patients, "seed": seed, "plan": plan.to_dict(),
        "hospitals": {name: _site_profile(f) for name, f in frames.items()},
        "denied": {rogue_site: {"function": "first_patients", "status": denied.status, "reason": denied.reason}},
        "budget": {name: {"dataset": plan.dataset, "remaining": left} for name, left in budgets.items()},
        "audit": {name: {"entries": v.entries, "verified": v.ok} for name, v in audits.items()},
        "history": result.history,
        "console_screenshots": [str(p) for p in (tour.shots if tour is not None else [])],
    }
    a, e = summary["auroc"], summary["epsilon"]["total"]
    summary["checks"] = {
        "federated_within_0.02_of_pooled": a["pooled"] - a["federated_dp"] <= 0.02,
        "federated_above_local_mean": a["federated_dp"] > a["local_mean"],
        "total_epsilon_at_most_10": all(v <= EPSILON_CEILING for v in e.values()),
    }
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    curves = {"federated DP": (fed_fpr, fed_tpr, a["federated_dp"])}
    for key, label in (("pooled", "pooled"), ("pooled_dp", "pooled DP")):
        curves[label] = (base[key]["roc"]["fpr"], base[key]["roc"]["tpr"], base[key]["auroc"])
    best = max(base["local_dp"], key=lambda s: base["local_dp"][s]["auroc"])
    curves[f"local only DP ({best})"] = (base["local_dp"][best]["roc"]["fpr"], base["local_dp"][best]["roc"]["tpr"],
                                         base["local_dp"][best]["auroc"])
    summary["plots"] = [str(p) for p in (
        plot_roc(curves, results / "roc_curves.png"),
        plot_rounds(result.history, {"pooled": a["pooled"], "pooled DP": a["pooled_dp"], "local DP mean": a["local_mean"],
                                     "local mean (no privacy)": a["local_nonprivate_mean"]},
                    results / "auroc_per_round.png"),
        plot_sites(summary["hospitals"], results / "site_distributions.png"))]
    (results / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def _auroc_or_none(evaluation: dict) -> float | None:
    from .metrics import pooled_auroc

    try:
        return pooled_auroc([evaluation])
    except ValueError:
        return None


def format_summary(summary: dict) -> str:
    a, eps = summary["auroc"], summary["epsilon"]
    lines = ["", "Hospitals (non-IID)", f"  {'site':<16}{'patients':>9}{'sepsis':>8}{'mean age':>10}"]
    for name, h in summary["hospitals"].items():
        lines.append(f"  {name:<16}{h['n']:>9}{h['prevalence']:>8.1%}{h['mean_age']:>10.1f}")
    lines += ["", "AUROC on all hospitals' test patients",
              f"  {'federated DP-SGD (' + summary['plan']['strategy'] + ')':<30}{a['federated_dp']:.3f}",
              f"  {'pooled, no privacy':<30}{a['pooled']:.3f}",
              f"  {'pooled DP-SGD':<30}{a['pooled_dp']:.3f}  (epsilon {eps['pooled_dp']:.2f})",
              f"  {'local only DP-SGD, mean':<30}{a['local_mean']:.3f}  "
              f"({', '.join(f'{s} {v:.3f}' for s, v in a['local'].items())})",
              f"  {'local only, no privacy, mean':<30}{a['local_nonprivate_mean']:.3f}  "
              f"({', '.join(f'{s} {v:.3f}' for s, v in a['local_nonprivate'].items())})",
              "", f"Privacy spent per site (delta = {eps['delta']:g}, target epsilon {eps['target']:g})"]
    for site, value in eps["per_site"].items():
        left = summary.get("budget", {}).get(site, {}).get("remaining")
        evaluation = eps.get("evaluation", {}).get(site, 0.0)
        lines.append(f"  {site:<16} epsilon {value + evaluation:.3f} = DP-SGD {value:.3f} + evaluation {evaluation:.3f}"
                     + (f"   (dataset budget left: {left:.3f})" if left is not None else ""))
    audit = summary.get("audit", {})
    if audit:
        lines += ["", "Audit logs: " + ", ".join(f"{s} {a['entries']} entries {'verified' if a['verified'] else 'TAMPERED'}"
                                                 for s, a in audit.items())]
    for site, d in summary["denied"].items():
        lines += ["", f"Denied at {site}: {d['function']} - {d['reason']}"]
    checks = summary["checks"]
    lines += ["", "Checks: " + ", ".join(f"{k} {'OK' if v else 'FAILED'}" for k, v in checks.items()),
              f"{summary['rounds']} rounds; study {summary['study_seconds']}s, baselines {summary['baseline_seconds']}s, "
              f"total {summary['wall_seconds']}s ({summary['mode']}). Plots: {', '.join(summary['plots'])}"]
    return "\n".join(lines)

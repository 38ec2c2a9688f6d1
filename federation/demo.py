"""The walking-skeleton demo: three hospitals, one approved and one denied request.

Every step goes through real Syft datasites: the data owner provisions each hospital,
the researcher explores mocks and submits code, each hospital's compliance officer
approves or denies, and the researcher gets a result only where it was approved.
"""

from __future__ import annotations

import time
from pathlib import Path

import syft as sy

from datasites.quiet import quiet

from datasites import ensure_site_data, shipped_specs, start_site
from datasites.data import private_dir
from federation.requests import NotApproved, fetch_result, request_status, submit_request
from synthetic_data import describe_hospitals, load_synthea
from syft_policies import approve_request, deny_request, list_requests

__all__ = ["run_demo"]

DENIAL_REASON = ("returns row-level patient data (patients.head); only aggregated, "
                 "small-cell-suppressed outputs may leave this hospital")


def _summary_function(assets):
    @sy.syft_function_single_use(patients=assets["patients"], encounters=assets["encounters"],
                                 conditions=assets["conditions"])
    def sepsis_summary(patients, encounters, conditions):
        from datasites.jobs import cohort_summary
        return cohort_summary(patients, encounters, conditions, min_cell=10)

    return sepsis_summary


def _rows_function(assets):
    @sy.syft_function_single_use(patients=assets["patients"])
    def first_patients(patients):
        return patients.head(20)

    return first_patients


def _fresh_datasites(specs, home: Path) -> None:
    """The demo starts from empty datasites each run (generated data is kept), so it can be
    re-run; its sites live in ``<home>/demo``, apart from those of ``medsyft sites up``."""
    import shutil

    from datasites import stop_site

    for spec in specs:
        stop_site(spec, home)
        for name in ("db", "blob", "site.json", "signing_key", "secrets.json"):
            path = home / spec.name / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def run_demo(home: Path, *, n_patients: int, seed: int, servers: bool = False, echo=print) -> dict:
    """Run the approval loop on three hospitals; returns what it printed, as data."""
    t0 = time.monotonic()
    specs = shipped_specs()
    home = Path(home) / "demo"
    _fresh_datasites(specs, home)
    echo(f"[1/5] data owners: Synthea-format data for {len(specs)} hospitals ({n_patients} patients, seed {seed})")
    ensure_site_data(specs, home, n_patients=n_patients, seed=seed)
    mode = "http" if servers else "inprocess"
    echo(f"[2/5] starting {len(specs)} datasites ({'HTTP servers on loopback' if servers else 'in-process'})")
    sites = [start_site(s, home, mode=mode) for s in specs]
    try:
        hospitals = describe_hospitals({s.name: load_synthea(private_dir(home, s.name)) for s in specs})
        echo("[3/5] researcher: explores mocks and submits a request to every hospital")
        outcome = {"hospitals": {}, "approved": {}, "denied": {}}
        for site in sites:
            ds = site.researcher()
            dataset = ds.datasets[site.spec.dataset_name]
            assets = {a.name: a for a in dataset.assets}
            outcome["hospitals"][site.spec.name] = {
                "region": site.spec.region, "jurisdiction": site.spec.jurisdiction,
                "patients": int(hospitals.loc[site.spec.name, "patients"]),
                "sepsis_prevalence": float(hospitals.loc[site.spec.name, "sepsis_prevalence"]),
                "assets": sorted(assets), "mock_patients": len(assets["patients"].mock),
            }
            with quiet():
                summary, rows = _summary_function(assets), _rows_function(assets)
            submit_request(ds, summary)
            if site is sites[1]:
                submit_request(ds, rows)

        echo("[4/5] compliance officers: review the queue, approve aggregates, deny row-level output")
        for site in sites:
            officer = site.officer()
            for req in list_requests(officer, status="pending"):
                if "cohort_summary" in req.code and ".head(" not in req.code:
                    approve_request(officer, req.id)
                else:
                    deny_request(officer, req.id, reason=DENIAL_REASON)

        echo("[5/5] researcher: collects results")
        for site in sites:
            ds = site.researcher()
            assets = {a.name: a for a in ds.datasets[site.spec.dataset_name].assets}
            result = fetch_result(ds, "sepsis_summary", patients=assets["patients"],
                                  encounters=assets["encounters"], conditions=assets["conditions"])
            outcome["approved"][site.spec.name] = {"function": "sepsis_summary", "result": result}
            if site is sites[1]:
                try:
                    fetch_result(ds, "first_patients", patients=assets["patients"])
                except NotApproved as exc:
                    status = request_status(ds, "first_patients")
                    outcome["denied"][site.spec.name] = {"function": "first_patients", "status": status.status,
                                                         "reason": status.reason, "error": str(exc)}
    finally:
        for site in sites:
            site.stop()
    outcome["wall_seconds"] = round(time.monotonic() - t0, 1)
    outcome["mode"] = mode
    return outcome


def format_outcome(outcome: dict) -> str:
    lines = ["", "Hospitals", f"  {'site':<16}{'region':<8}{'law':<7}{'patients':>9}{'sepsis':>8}  assets (private + mock)"]
    for name, h in outcome["hospitals"].items():
        lines.append(f"  {name:<16}{h['region']:<8}{h['jurisdiction']:<7}{h['patients']:>9}"
                     f"{h['sepsis_prevalence']:>8.1%}  {', '.join(h['assets'])}")
    lines += ["", "Approved request: sepsis_summary (calls the vetted job datasites.jobs.cohort_summary)"]
    for name, a in outcome["approved"].items():
        r = a["result"]
        lines.append(f"  {name:<16} icu_patients={r['icu_patients']}  sepsis_cases={r['sepsis_cases']}  "
                     f"prevalence={r['sepsis_prevalence']}  mean_age={r['mean_age']}")
    lines += ["", "Denied request: first_patients (returns patients.head(20))"]
    for name, d in outcome["denied"].items():
        lines.append(f"  {name:<16} status={d['status']}  reason: {d['reason']}")
    lines += ["", f"Done in {outcome['wall_seconds']}s ({outcome['mode']})."]
    return "\n".join(lines)

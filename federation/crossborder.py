"""The cross-border RWE study: EU and US hospitals, regional aggregators, HE analytics,
securely aggregated DP training, and the report.

A pharmaceutical sponsor asks whether an investigational drug works better in tumours with
certain biomarkers. EU hospitals (GDPR) and US hospitals (HIPAA) each hold an oncology
extract. At each hospital the data owner de-identifies it until the Safe Harbor check
passes. The aggregation plan keeps every hospital's contribution in its region; a plan
that does not is refused before any request goes out. Then two things run, both approved
per hospital:

- statistics: each hospital adds Laplace noise to its counts and encrypts them under the
  key custodian's CKKS key. The EU and US aggregators add their region's ciphertexts;
  only the two regional sums cross to the global aggregator, and the custodian decrypts
  only the global sum;
- a response model: DP-SGD logistic regression, securely aggregated within each region.
  Only regional sums cross, and they are averaged globally.

Everything the report shows comes from these aggregates, with cells under 10 suppressed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from datasites import shipped_specs, start_site
from syft_policies.quiet import quiet
from datasites.credentials import site_signer
from datasites.jobs.rwe import RWE_CELLS, SUM_CELLS
from datasites.rwe_asset import RWE_ASSET, RWE_DATASET, publish_rwe
from syft_policies import approve_request, list_requests
from syft_policies.review import review_request

from .metrics import pooled_auroc
from .plan import StudyPlan
from .requests import fetch_result, submit_request
from .study import Study
from .topology import GLOBAL, AggregationPlan, SiteInfo, SovereigntyPolicy, SovereigntyViolation, regional_plan

__all__ = ["run_cross_border", "write_report_or_warn", "cross_border_specs", "release_cells", "odds_ratio",
           "interaction_odds_ratio", "arm_odds_ratios", "interactions", "count_noise_sd", "plan_sha256", "age_summary",
           "MIN_CELL", "ARM_NAMES", "BIOMARKER_NAMES"]

MIN_CELL = 10
Z95 = 1.96
ARM_NAMES = {"treated": "drug-x", "untreated": "standard of care"}
BIOMARKER_NAMES = {"egfr": "EGFR", "kras": "KRAS", "alk": "ALK", "pdl1_high": "PD-L1 high", "tmb_high": "TMB high"}
_TABLE = ("pos_responders", "pos_nonresponders", "neg_responders", "neg_nonresponders")
IRB = "IRB-RWE-2026-042"
DUA = "DUA-SPONSOR-EU-US-7"
PURPOSE = "biomarkers of response to drug-x in advanced NSCLC (real-world evidence)"


def cross_border_specs():
    """The shipped hospitals plus a second US hospital (``datasites/specs/cross-border``)."""
    extra = Path(__file__).resolve().parent.parent / "datasites" / "specs" / "cross-border"
    return shipped_specs() + shipped_specs(extra)


def release_cells(cells: dict[str, float], *, min_cell: int = MIN_CELL) -> dict:
    """Decrypted noisy cells as released: counts rounded, negative noise clipped at 0, counts
    under ``min_cell`` None; sums (age) kept, rounded, only when ``n`` itself is released."""
    out = {}
    for name, value in cells.items():
        if name in SUM_CELLS:
            continue
        count = max(0, int(round(value)))
        out[name] = count if count >= min_cell else None
    for name in SUM_CELLS:
        if name in cells:
            out[name] = round(float(cells[name]), 1) if out.get("n") is not None else None
    return out


def age_summary(cells: dict) -> dict:
    """Mean and SD of age from the released (noisy) sums; None when suppressed."""
    from datasites.jobs.rwe import AGE_CENTRE

    n, s, ss = cells.get("n"), cells.get("sum_age_dev"), cells.get("sumsq_age_dev")
    if None in (n, s, ss) or not n:
        return {"mean": None, "sd": None}
    shift = s / n
    return {"mean": round(AGE_CENTRE + shift, 1), "sd": round(float(np.sqrt(max(ss / n - shift ** 2, 0.0))), 1)}


def _not_estimable(cells) -> str | None:
    """Why no estimate can be made from ``cells`` (None: it can); invents no number for a hidden cell."""
    if len(cells) not in (4, 8):
        raise ValueError(f"expected a 2x2 table (4 counts) per arm, got {len(cells)} counts")
    if any(c is None for c in cells):
        return f"not estimable: a cell is under {MIN_CELL} and suppressed"
    if any(c < 0 for c in cells):
        raise ValueError(f"counts cannot be negative, got {list(cells)}")
    if any(c == 0 for c in cells):
        return "not estimable: a cell is zero"
    return None


def _log_variance(cells, noise_sd: float) -> float:
    """Woolf's sum of 1/n, plus (delta method) the DP noise: a count n seen with noise of SD s
    has var(log n) ~ (n + s^2) / n^2."""
    if not (noise_sd >= 0 and np.isfinite(noise_sd)):
        raise ValueError(f"noise_sd must be a finite number >= 0, got {noise_sd}")
    return float(sum(1 / c + (noise_sd / c) ** 2 for c in cells))


def odds_ratio(a, b, c, d, *, noise_sd: float = 0.0) -> dict:
    """Odds ratio (a*d)/(b*c) of a 2x2 table (a, b: responders and non-responders with the
    marker; c, d: without) with a 95% CI: Woolf's, widened for DP noise of SD ``noise_sd`` per
    count if given. ``or`` None with a ``note`` when a cell is suppressed or zero."""
    why = _not_estimable((a, b, c, d))
    if why:
        return {"or": None, "low": None, "high": None, "note": why}
    log_or = float(np.log(a * d / (b * c)))
    se = float(np.sqrt(_log_variance((a, b, c, d), noise_sd)))
    return {"or": float(np.exp(log_or)), "low": float(np.exp(log_or - Z95 * se)),
            "high": float(np.exp(log_or + Z95 * se))}


def interaction_odds_ratio(drug, control, *, noise_sd: float = 0.0) -> dict:
    """The treatment x biomarker interaction on the odds scale: the odds ratio of response for
    marker+ vs marker- in the drug arm divided by the same in the control arm (equal to
    exp of the interaction term of a logistic regression response ~ drug * marker).

    ``drug``, ``control``: (marker+ responders, marker+ non-responders, marker- responders,
    marker- non-responders). 95% CI from the log-scale variance, Woolf's sum of 1/n over the 8
    cells, plus the DP noise term if ``noise_sd`` > 0. A suppressed (None) or zero cell gives
    ``ratio`` None and a ``note`` saying "not estimable"."""
    cells = (*drug, *control)
    if len(drug) != 4 or len(control) != 4:
        raise ValueError(f"each arm needs 4 counts (+resp, +non-resp, -resp, -non-resp), got {len(drug)} and "
                         f"{len(control)}")
    why = _not_estimable(cells)
    if why:
        return {"ratio": None, "low": None, "high": None, "se_log": None, "note": why}
    (a, b, c, d), (e, f, g, h) = drug, control
    log_ratio = float(np.log(a * d / (b * c)) - np.log(e * h / (f * g)))
    se = float(np.sqrt(_log_variance(cells, noise_sd)))
    return {"ratio": float(np.exp(log_ratio)), "low": float(np.exp(log_ratio - Z95 * se)),
            "high": float(np.exp(log_ratio + Z95 * se)), "se_log": se, "note": None}


def _arm_table(cells: dict, marker: str, arm: str) -> tuple:
    return tuple(cells.get(f"{marker}_{arm}_{k}") for k in _TABLE)


def arm_odds_ratios(cells: dict, *, noise_sd: float = 0.0) -> list[dict]:
    """Per biomarker and arm, the released 2x2 counts and the odds ratio of response for
    marker+ vs marker- (Woolf CI; ``low_dp``/``high_dp`` also count the DP noise)."""
    from synthetic_data.oncology import BIOMARKERS

    out = []
    for m in BIOMARKERS:
        for arm in ("treated", "untreated"):
            table = _arm_table(cells, m, arm)
            dp = odds_ratio(*table, noise_sd=noise_sd)
            out.append({"biomarker": m, "arm": arm, **dict(zip(_TABLE, table)), **odds_ratio(*table),
                        "low_dp": dp["low"], "high_dp": dp["high"]})
    return out


def interactions(cells: dict, *, noise_sd: float = 0.0) -> list[dict]:
    """Per biomarker: the odds ratios in each arm and their ratio (drug-x over standard of
    care) with Woolf's 95% CI and, in ``low_dp``/``high_dp``, the CI that also counts the DP
    noise of SD ``noise_sd`` per released count."""
    from synthetic_data.oncology import BIOMARKERS

    out = []
    for m in BIOMARKERS:
        drug, control = _arm_table(cells, m, "treated"), _arm_table(cells, m, "untreated")
        sampling = interaction_odds_ratio(drug, control)
        noisy = interaction_odds_ratio(drug, control, noise_sd=noise_sd)
        out.append({"biomarker": m, "label": BIOMARKER_NAMES.get(m, m), "or_drug": odds_ratio(*drug)["or"],
                    "or_control": odds_ratio(*control)["or"], **sampling, "low_dp": noisy["low"],
                    "high_dp": noisy["high"], "se_log_dp": noisy["se_log"]})
    return out


def count_noise_sd(epsilon: float, sites: int) -> float:
    """SD of the DP noise in one released count: each of ``sites`` hospitals adds Laplace noise
    of scale (L1 sensitivity 8) / (half of ``epsilon``), variance 2 scale^2, and the counts are
    summed."""
    from datasites.jobs.rwe import SENSITIVITY, SHARES

    if not (epsilon > 0 and sites >= 1):
        raise ValueError(f"need epsilon > 0 and at least one site, got {epsilon} and {sites}")
    share = next(s for names, _, s in SHARES if "n" in names)
    scale = SENSITIVITY / (share * epsilon)
    return float(np.sqrt(2 * sites) * scale)


def plan_sha256(plan: dict) -> str:
    """SHA-256 of the plan's canonical JSON (sorted keys, no spaces): the same after a round
    trip through summary.json, so anyone can check a report against its plan."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _statistics_request(client, asset, plan: dict):
    import syft as sy

    from syft_policies.release import ReleasePolicy
    from syft_policies.templates import medsyft_rwe_statistics

    with quiet():
        return sy.syft_function(
            input_policy=sy.MixedInputPolicy(client=client, cohort=asset, plan=sy.Constant(val=plan), message=dict),
            output_policy=ReleasePolicy(limit=1), name="rwe_statistics_request")(medsyft_rwe_statistics)


def _approve_all(site, echo) -> list[dict]:
    officer, ledger, audit, governance = site.officer(), site.ledger(), site.audit(), site.governance()
    decisions = []
    for req in list_requests(officer, status="pending"):
        dataset = (req.plan or {}).get("dataset", RWE_DATASET)
        report = review_request(officer, req.id, budget_remaining=ledger.remaining(dataset))
        if report.risk != "low":
            raise RuntimeError(f"{site.spec.name}: {req.function} reviewed {report.risk} risk:\n{report}")
        approve_request(officer, req.id, ledger=ledger, audit=audit, governance=governance, irb=IRB, dua=DUA,
                        purpose=PURPOSE, expires=(dt.date.today() + dt.timedelta(days=180)).isoformat())
        cost = f", epsilon {report.epsilon_cost:.2f}" if report.epsilon_cost is not None else ""
        echo(f"  {site.spec.name:<16} approved {req.function} (review: low risk{cost})")
        decisions.append({"function": req.function, "risk": report.risk, "epsilon": report.epsilon_cost})
    return decisions


def _violating_plan(plan: AggregationPlan, eu_site: str) -> AggregationPlan:
    return AggregationPlan({**plan.routes, eu_site: GLOBAL}, plan.aggregators, plan.upstream)


def run_cross_border(home: Path, *, n_patients: int = 600, rounds: int = 4, seed: int = 7,
                     results: Path = Path("results/cross-border"), echo=print) -> dict:
    """Run the scenario end to end on in-process datasites; write ``summary.json`` and the report."""
    from he import KeyCustodian, Signer, combine
    from he.contribution import Contribution
    from he.custodian import CKKS_PARAMETERS

    t0 = time.monotonic()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    specs = cross_border_specs()
    home = Path(home) / "cross-border"
    shutil.rmtree(home, ignore_errors=True)
    study_id = "rwe-drugx"
    echo(f"[1/7 0s] {len(specs)} hospitals: EU {[s.name for s in specs if s.region == 'EU']}, "
         f"US {[s.name for s in specs if s.region == 'US']}")
    sites = {s.name: start_site(s, home, icu_dataset=False) for s in specs}  # oncology data only
    try:
        echo(f"[2/7 {time.monotonic() - t0:.0f}s] data owners: Safe Harbor check of the raw oncology extract, "
             "de-identify, check, publish")
        compliance = {}
        for i, site in enumerate(sites.values()):
            before, after = publish_rwe(site, n=n_patients, seed=seed + i)
            compliance[site.spec.name] = {"raw": sorted(before.identifiers), "published": after.compliant,
                                          "raw_problems": len(before.findings), "published_problems": len(after.findings)}
            echo(f"  {site.spec.name:<16} raw extract FAIL ({', '.join(sorted(before.identifiers))}) -> "
                 f"published {'PASS' if after.compliant else 'FAIL'}")

        echo(f"[3/7 {time.monotonic() - t0:.0f}s] aggregation plan and data sovereignty")
        infos = [SiteInfo.from_spec(s) for s in specs]
        policy = SovereigntyPolicy()
        plan = regional_plan(infos)
        eu_site = next(s.name for s in specs if s.region == "EU")
        try:
            policy.check(_violating_plan(plan, eu_site), infos)
            refused = None
        except SovereigntyViolation as exc:
            refused = str(exc)
            echo(f"  a plan sending {eu_site}'s contribution straight to the global aggregator: REFUSED")
        policy.check(plan, infos)
        regions = {a: plan.members(a) for a in plan.aggregators if a != GLOBAL}
        echo("  " + "; ".join(f"{a}: {', '.join(m)}" for a, m in regions.items()) + f"; only regional sums -> {GLOBAL}")

        echo(f"[4/7 {time.monotonic() - t0:.0f}s] key custodian makes the CKKS study key; researcher submits the requests")
        custodian = KeyCustodian(study_id, min_sites=2)
        public = custodian.public_context()
        signers = {a: Signer(a) for a in plan.aggregators}
        for name, site in sites.items():  # out-of-band: each hospital registers its signing key
            custodian.register(name, site_signer(site.site_dir, name).public_key, role="site")
        for a, s in signers.items():
            custodian.register(a, s.public_key, role="aggregator")
        keys = {**custodian.sites, **custodian.aggregators}
        clients = {name: site.researcher() for name, site in sites.items()}
        stats_plan = {"study": study_id, "dataset": RWE_DATASET, "epsilon": 1.0, "query": "rwe-v1",
                      "he_context_sha256": hashlib.sha256(public).hexdigest()}
        assets = {}
        for name, client in clients.items():
            with quiet():
                assets[name] = {a.name: a for a in client.datasets[RWE_DATASET].assets}[RWE_ASSET]
            submit_request(client, _statistics_request(client, assets[name], {**stats_plan, "site": name}))
        model_plans, studies = {}, {}
        for aggregator, members in regions.items():
            region = plan.aggregators[aggregator]
            model_plans[aggregator] = StudyPlan(
                study=f"{study_id}-{region.lower()}", sites=members, model="rwe_logreg", dataset=RWE_DATASET,
                asset=RWE_ASSET, rounds=rounds, epsilon=3.0, sample_rate=0.1, lr=0.3, local_epochs=2, max_grad_norm=1.0,
                secure_aggregation=True, seed=seed)
            studies[aggregator] = Study(model_plans[aggregator], {m: clients[m] for m in members},
                                        directory=home / "studies" / aggregator, echo=echo, progress=False)
            studies[aggregator].submit()

        echo(f"[5/7 {time.monotonic() - t0:.0f}s] compliance officers: automatic review, approval with IRB / DUA / expiry")
        approvals = {name: _approve_all(site, echo) for name, site in sites.items()}

        echo(f"[6/7 {time.monotonic() - t0:.0f}s] HE statistics: encrypted at each hospital, summed in-region, decrypted globally")
        t_stats = time.monotonic()
        contributions = {name: Contribution.from_dict(
            fetch_result(clients[name], "rwe_statistics_request", cohort=assets[name],
                         message={"public_context": public})) for name in sites}
        regional = {a: combine([contributions[m] for m in members], public=public, signer=signers[a], keys=keys)
                    for a, members in regions.items()}
        flows = [{"from": m, "to": a, "what": "encrypted statistics of one hospital"}
                 for a, members in regions.items() for m in members]
        flows += [{"from": a, "to": GLOBAL, "what": f"encrypted sum over {len(regional[a].sites)} hospitals"}
                  for a in regional]
        world = combine(list(regional.values()), public=public, signer=signers[GLOBAL], keys=keys)
        released = release_cells(custodian.decrypt(world))
        stats_seconds = time.monotonic() - t_stats

        echo(f"[7/7 {time.monotonic() - t0:.0f}s] response model: DP-SGD at each hospital, secure aggregation per region, {rounds} rounds")
        weights = dict(next(iter(studies.values())).weights)
        history = []
        for study in studies.values():
            study.wait_for_approvals()
        t_model = time.monotonic()
        for r in range(1, rounds + 1):
            totals, epsilons = {}, {}
            for aggregator, study in studies.items():
                total, replies = study.secure_totals(weights, r)
                totals[aggregator] = total
                epsilons.update({s: float(rep["epsilon"]) for s, rep in replies.items()})
            n = sum(float(t["~n"][0]) for t in totals.values())
            weights = {**weights, **{k: (sum(t[k] for t in totals.values()) / n).astype(np.float32)
                                     for k in totals[next(iter(totals))] if k != "~n"}}
            sums, spent = {}, {}  # each region's noised histograms, summed under its round's masks
            for aggregator, study in studies.items():
                sums[aggregator], paid = study.secure_evaluation(weights, r)
                spent.update(paid)
            if any(v is None for v in sums.values()):
                raise RuntimeError(f"round {r}'s evaluation stayed masked: a hospital did not answer")
            auroc = pooled_auroc(list(sums.values()))  # from noised histograms, each paid
            history.append({"round": r, "auroc": auroc, "epsilon": epsilons, "evaluation_epsilon": spent})
            echo(f"  round {r}: pooled AUROC {auroc:.3f}, max epsilon {max(epsilons.values()):.2f}")
        model_seconds = time.monotonic() - t_model
        flows += [{"from": m, "to": a, "what": "masked model update and masked noised evaluation (secure aggregation)"}
                  for a, members in regions.items() for m in members]
        flows += [{"from": a, "to": GLOBAL, "what": "regional sums of updates and of evaluation histograms"}
                  for a in regions]

        ledgers = {name: site.ledger().statement() for name, site in sites.items()}  # after every debit
        audits = {name: site.audit().verify() for name, site in sites.items()}
        governance = {name: [a.__dict__ for a in site.governance().for_study(study_id)]
                      + [a.__dict__ for p in model_plans.values() for a in site.governance().for_study(p.study)]
                      for name, site in sites.items()}
    finally:
        for site in sites.values():
            site.stop()

    coefficients = dict(zip(_FEATURE_NAMES, np.ravel(weights["head.weight"]).astype(float)))
    study_plan = {"statistics": stats_plan, "aggregation": {"routes": plan.routes, "upstream": plan.upstream},
                  "model": {a: p.to_dict() for a, p in model_plans.items()}}
    study_plan = json.loads(json.dumps(study_plan, default=str))  # as summary.json will hold it
    noise_sd = count_noise_sd(stats_plan["epsilon"], len(world.sites))
    summary = {
        "run": {"utc": started, "seed": seed, "medsyft": _version("medsyft"), "syft": _version("syft"),
                "plan_sha256": plan_sha256(study_plan)},
        "plan": study_plan,
        "study": study_id, "purpose": PURPOSE, "min_cell": MIN_CELL,
        "sites": [{"name": i.name, "region": i.region, "jurisdiction": i.jurisdiction} for i in infos],
        "compliance": compliance,
        "sovereignty": {"plan": {"routes": plan.routes, "upstream": plan.upstream}, "refused_plan": refused,
                        "flows": flows},
        "statistics": {"cells": released, "layout": list(RWE_CELLS), "epsilon_per_site": stats_plan["epsilon"],
                       "age": age_summary(released),
                       "mechanism": "Laplace at each hospital before encryption: counts (L1 sensitivity 8) eps/2, "
                                    "sum of age-65 (45) eps/4, its sum of squares (2025) eps/4",
                       "sites": sorted(world.sites), "seconds": round(stats_seconds, 2),
                       "noise": {"count_sd": round(noise_sd, 2), "count_laplace_scale_per_site":
                                 round(noise_sd / np.sqrt(2 * len(world.sites)), 2), "sites": len(world.sites)}},
        "odds_ratios": arm_odds_ratios(released, noise_sd=noise_sd),
        "interactions": interactions(released, noise_sd=noise_sd),
        "model": {"history": history, "auroc": history[-1]["auroc"], "coefficients": coefficients,
                  "seconds": round(model_seconds, 2),
                  "plans": {a: p.to_dict() for a, p in model_plans.items()}},
        "receipt": {
            "epsilon": {name: {row["dataset"]: row["spent"] for row in rows if row["dataset"] == RWE_DATASET}
                        for name, rows in ledgers.items()},
            "breakdown": {name: {"statistics (Laplace, OpenDP)": float(stats_plan["epsilon"]),
                                 "DP-SGD training": history[-1]["epsilon"].get(name, 0.0),
                                 "evaluation (discrete Laplace)": sum(h["evaluation_epsilon"].get(name, 0.0)
                                                                      for h in history)} for name in sites},
            "delta": next(iter(model_plans.values())).delta,
            "secure_aggregation": {a: {"sites": m, "threshold": model_plans[a].secagg_threshold}
                                   for a, m in regions.items()},
            "he": {**CKKS_PARAMETERS, "scheme": "CKKS (TenSEAL)", "custodian_min_sites": custodian.min_sites,
                   "decryptions": custodian.decrypted},
            "approvals": governance,
            "reviews": approvals,
            "audit": {name: {"entries": v.entries, "verified": v.ok, "line": v.line, "problem": v.problem}
                      for name, v in audits.items()},
            "budget": {name: {k: row[k] for k in ("budget", "spent", "remaining")}
                       for name, rows in ledgers.items() for row in rows if row["dataset"] == RWE_DATASET},
        },
        "wall_seconds": round(time.monotonic() - t0, 1),
    }
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    summary["report"] = [str(p) for p in write_report_or_warn(summary, results, echo)]
    return summary


def write_report_or_warn(summary: dict, results: Path, echo=print) -> list[Path]:
    """The report's files; without a working Chromium, the HTML alone and a one-line warning
    (the study's results are in summary.json either way; ``medsyft report`` prints the PDF later)."""
    from .pdf import PdfError
    from .report import write_report

    t = time.monotonic()
    try:
        paths = list(write_report(summary, results))
    except PdfError as exc:
        echo(f"warning: report.html written, report.pdf not: {exc}")
        return [Path(results) / "report.html"]
    echo(f"  report written in {time.monotonic() - t:.1f}s (PDF printed by headless Chromium)")
    return paths


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


_FEATURE_NAMES = ("age", "male", "stage", "egfr", "kras", "alk", "pdl1_high", "tmb_high", "treated",
                  "treated:egfr", "treated:kras", "treated:alk", "treated:pdl1_high", "treated:tmb_high")

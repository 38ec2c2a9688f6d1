"""The federated analytics report of a cross-border study: one HTML page, printed to PDF.

Built only from what the study released and recorded (``summary.json``), so ``medsyft
report`` re-renders it without the hospitals: the decrypted, DP-noised, regional-then-global
sums of the hospitals' statistics (every count below the minimum cell size shown as "<10"),
the treatment x biomarker interactions and odds ratios computed from them, the securely
aggregated model's pooled performance, and what a privacy officer signs off on: data flows,
approvals, de-identification, audit chains and the privacy budget left. No site-level data
value appears, because none ever left a hospital in the clear.

The PDF is the same HTML printed by headless Chromium (:mod:`federation.pdf`), so the two
formats carry the same sections; images are data: URIs, so the HTML file stands alone.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from importlib import resources
from pathlib import Path

from .crossborder import (ARM_NAMES, BIOMARKER_NAMES, arm_odds_ratios, count_noise_sd, interactions,
                          plan_sha256)

__all__ = ["write_report", "render_html", "report_from", "SECTIONS", "FIGURES"]

SECTIONS = ("Study question", "Run", "Hospitals", "Cohort", "Treatment x biomarker interaction",
            "Odds ratios within each arm", "Federated response model", "Methods and limitations", "Data flows",
            "Approvals", "De-identification", "Audit chain and privacy budget", "Privacy receipt")
FIGURES = ("interactions_forest.png", "model_auroc_per_round.png")
_STAYED = ("patient rows (the raw extract and the de-identified one), every plaintext count, single patients' "
           "gradients, the hospital's signing key, its privacy ledger and its audit log")
_e = html.escape


def _count(value) -> str:
    return '<td class="count">&lt;10</td>' if value is None else f'<td class="count">{int(value)}</td>'


def _num(value, fmt: str = ".2f", missing: str = "-") -> str:
    return f'<td class="num">{value:{fmt}}</td>' if value is not None else f'<td class="na">{_e(missing)}</td>'


def _ratio(value) -> str:
    """A ratio as read in a table: two decimals, and past 0.01 or 100 only the bound (the
    DP-aware intervals of small cells run to absurd digits that carry no information)."""
    if value < 0.01:
        return "&lt;0.01"
    return "&gt;100" if value > 100 else f"{value:.2f}"


def _ratio_td(value, missing: str = "not estimable") -> str:
    return f'<td class="num">{_ratio(value)}</td>' if value is not None else f'<td class="na">{_e(missing)}</td>'


def _ci(low, high) -> str:
    return "-" if low is None else f"{_ratio(low)} &ndash; {_ratio(high)}"


def _age(summary: dict) -> str:
    age = summary["statistics"].get("age") or {}
    return "suppressed" if age.get("mean") is None else f"mean {age['mean']} (SD {age['sd']}) years"


def _noise_sd(summary: dict) -> float:
    stats = summary["statistics"]
    recorded = (stats.get("noise") or {}).get("count_sd")
    return float(recorded) if recorded is not None else count_noise_sd(stats["epsilon_per_site"], len(stats["sites"]))


def _verdict(row: dict) -> str:
    """What a row of the interaction table says, in words (the DP-aware interval decides)."""
    if row["ratio"] is None:
        return row["note"]
    low, high = (row["low_dp"], row["high_dp"]) if row.get("low_dp") is not None else (row["low"], row["high"])
    if low > 1:
        return "larger drug-x benefit in marker+ tumours (interval incl. noise above 1)"
    if high < 1:
        return "smaller drug-x benefit in marker+ tumours (interval incl. noise below 1)"
    return "no clear interaction (interval incl. noise contains 1)"


def _figures(summary: dict, rows: list[dict]) -> dict[str, bytes]:
    from .plots import plot_interactions, plot_rounds

    out = {}
    for name, draw in ((FIGURES[0], lambda buf: plot_interactions(rows, buf, dpi=200)),
                       (FIGURES[1], lambda buf: plot_rounds(
                           summary["model"]["history"], {"chance (no discrimination)": 0.5}, buf, dpi=200,
                           title="Federated response model: pooled AUROC per round", size=(7.4, 3.9)))):
        buf = io.BytesIO()
        draw(buf)
        out[name] = buf.getvalue()
    return out


def _img(data: bytes, alt: str, caption: str, *, narrow: bool = False) -> str:
    return (f'<figure{" class=narrow" if narrow else ""}><img alt="{_e(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode()}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _run(summary: dict) -> str:
    run = summary.get("run")
    if not run:
        return "<p class=\"na\">Not recorded: this summary.json predates run metadata (re-run the scenario).</p>"
    plan = summary.get("plan")
    if plan is None:
        check = '<span class="bad">no plan recorded to check it against</span>'
    elif plan_sha256(plan) == run.get("plan_sha256"):
        check = '<span class="ok">matches the plan recorded in summary.json</span>'
    else:
        check = '<span class="bad">MISMATCH: the plan in summary.json is not the plan hashed at run time</span>'
    rows = (("Run started (UTC)", _e(run.get("utc", "-"))),
            ("Report rendered (UTC)", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")),
            ("medsyft version", _e(str(run.get("medsyft", "-")))), ("PySyft version", _e(str(run.get("syft", "-")))),
            ("Study plan SHA-256", f'<span class="hash">{_e(str(run.get("plan_sha256", "-")))}</span><br>{check}'),
            ("Seed", _e(str(run.get("seed", "-")))),
            ("Wall time of the run", f"{summary['wall_seconds']:.0f} s" if "wall_seconds" in summary else "-"))
    return ('<table class="meta wide">' + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
            + "</table><p class=\"small\">The plan hash is SHA-256 over the canonical JSON (sorted keys, no spaces) of "
              "<code>plan</code> in summary.json: the statistics query with its epsilon and pinned HE key hash, the "
              "aggregation routes, and both regions' model plans.</p>")


def _cohort(summary: dict) -> str:
    cells = summary["statistics"]["cells"]
    age_rows = "".join(f"<tr><td>{_e(k.replace('age_', '').replace('_', '-'))}</td>{_count(v)}</tr>"
                       for k, v in cells.items() if k.startswith("age_"))
    arm_rows = ""
    for arm in ("treated", "untreated"):
        r, nr = cells[f"{arm}_responders"], cells[f"{arm}_nonresponders"]
        rate = f"{r / (r + nr):.0%}" if r is not None and nr is not None else None
        arm_rows += f"<tr><td>{ARM_NAMES[arm]}</td>{_count(r)}{_count(nr)}{_num(rate, 's', 'not shown')}</tr>"
    tables = {(r["biomarker"], r["arm"]): r for r in arm_odds_ratios(cells)}
    table_rows = "".join(
        f"<tr><td>{_e(BIOMARKER_NAMES.get(m, m))}</td>"
        + "".join(_count(tables[m, arm][k]) for arm in ("treated", "untreated")
                  for k in ("pos_responders", "pos_nonresponders", "neg_responders", "neg_nonresponders")) + "</tr>"
        for m in dict.fromkeys(m for m, _ in tables))
    n = cells["n"]
    return f"""<p>Patients: <b>{'&lt;10' if n is None else n}</b> (noisy); age {_age(summary)}.</p>
<div class="keep"><h3>Age</h3><table><thead><tr><th>age (years)</th><th>patients</th></tr></thead>{age_rows}</table></div>
<div class="keep"><h3>Treatment arms</h3><table><thead><tr><th>arm</th><th>responders</th><th>non-responders</th>
<th>response rate</th></tr></thead>{arm_rows}</table></div>
<div class="keep"><h3>Treatment arm x biomarker</h3>
<table class="wide"><thead><tr><th rowspan="3">biomarker</th><th colspan="4">drug-x</th><th colspan="4">standard of care</th></tr>
<tr><th colspan="2">marker+</th><th colspan="2">marker-</th><th colspan="2">marker+</th><th colspan="2">marker-</th></tr>
<tr>{'<th>resp</th><th>non-resp</th>' * 4}</tr></thead>{table_rows}</table>
<p class="small">resp / non-resp: objective response or not. "&lt;10": the noisy count was under 10 and is not shown.</p></div>"""


def _interaction(summary: dict, rows: list[dict], figure: str) -> str:
    body = "".join(
        f"<tr><td>{_e(r['label'])}</td>{_ratio_td(r['or_drug'])}{_ratio_td(r['or_control'])}"
        + (f"{_ratio_td(r['ratio'])}<td class=\"num\">{_ci(r['low'], r['high'])}</td>"
           f"<td class=\"num\">{_ci(r['low_dp'], r['high_dp'])}</td>" if r["ratio"] is not None else
           '<td class="na" colspan="3">not estimable</td>')
        + f"<td>{_e(_verdict(r))}</td></tr>" for r in rows)
    return f"""<p>For each biomarker: the odds ratio of response for marker+ vs marker- tumours among patients on
drug-x, divided by the same odds ratio on standard of care. Above 1: drug-x does relatively better in marker+
tumours; 1: no difference. Computed from the released counts above; if one of the 8 counts is suppressed or zero
the estimate is "not estimable" (no number is invented for a hidden cell).</p>
<table class="wide"><thead><tr><th>biomarker</th><th>OR drug-x</th><th>OR standard of care</th>
<th>ratio of ORs</th><th>95% CI (Woolf, sampling)</th><th>95% CI incl. DP noise</th><th>reading</th></tr></thead>
{body}</table>{figure}"""


def _arm_ors(rows: list[dict]) -> str:
    body = "".join(
        f"<tr><td>{_e(BIOMARKER_NAMES.get(r['biomarker'], r['biomarker']))}</td><td>{ARM_NAMES[r['arm']]}</td>"
        + (f"{_ratio_td(r['or'])}<td class=\"num\">{_ci(r['low'], r['high'])}</td>"
           f"<td class=\"num\">{_ci(r['low_dp'], r['high_dp'])}</td>" if r["or"] is not None else
           f'<td class="na" colspan="3">{_e(r["note"])}</td>') + "</tr>" for r in rows)
    return f"""<p>Odds ratio of response, marker+ vs marker-, within one arm. A marker that goes with better response
in both arms is prognostic; only the difference between the arms (above) speaks to drug-x.</p>
<table class="wide"><thead><tr><th>biomarker</th><th>arm</th><th>odds ratio</th><th>95% CI (Woolf)</th>
<th>95% CI incl. DP noise</th></tr></thead>{body}</table>"""


def _methods(summary: dict, noise_sd: float) -> str:
    stats = summary["statistics"]
    eps, sites, min_cell = stats["epsilon_per_site"], len(stats["sites"]), summary["min_cell"]
    scale = (stats.get("noise") or {}).get("count_laplace_scale_per_site", noise_sd / (2 * sites) ** 0.5)
    return f"""<div class="box methods">
<div class="keep"><h3>Noise (differential privacy)</h3>
<p>Each hospital added Laplace noise to every count before encrypting it (OpenDP, epsilon {eps:g} per hospital
for all the statistics, half of it for the counts). One patient changes at most 8 count cells, so each count got
noise of scale {scale:.0f} patients at each hospital. The released counts are sums over {sites} hospitals: each
carries noise with a standard deviation of about <b>{noise_sd:.0f} patients</b>. The age sums have their own
share of epsilon. Noisy counts are rounded and negative ones set to 0. Full mechanism: {_e(stats['mechanism'])}.</p></div>
<div class="keep"><h3>Suppression: what "&lt;10" means</h3>
<p>A released count under {min_cell} is not shown and reads "&lt;10". It means the <i>noisy</i> sum was under
{min_cell}; the true count can be higher or lower. No estimate that needs a suppressed count is computed: it reads
"not estimable".</p></div>
<div class="keep"><h3>Why totals do not add up</h3>
<p>Every cell got its own independent noise at each hospital. So responders plus non-responders of an arm differ
from the same arm summed over a biomarker table, and the age bins do not sum to the patient count. The
differences are noise, not missing patients; each table is its own noisy view of the same cohort.</p></div>
<div class="keep"><h3>Confidence intervals</h3>
<p>Woolf's 95% interval (log-scale variance = sum of 1/n over the cells) covers sampling error only. The interval
"incl. DP noise" adds the noise variance by the delta method (sum of 1/n + {noise_sd:.0f}<sup>2</sup>/n<sup>2</sup>);
read that one. Five biomarkers are tested without correction for multiplicity.</p></div>
<div class="keep"><h3>Confounding: these are associations</h3>
<p>This is real-world data, not a trial: treatment was not randomised. Clinicians chose drug-x or standard care,
possibly because of the biomarker test itself, stage, performance status, age or the hospital's practice. In the
ratio of odds ratios a marker's prognostic effect that is the same in both arms cancels, but a treatment choice
that depends on the marker or on anything correlated with it does not. Nothing is adjusted for age, sex, stage or
hospital. Read every estimate as an association to confirm in a trial, not as the effect of drug-x.</p></div>
<div class="keep"><h3>The model's AUROC</h3>
<p>The pooled AUROC is computed from noised score histograms (discrete Laplace, paid from each hospital's budget),
so it moves from round to round by more than the model does.</p></div></div>"""


def _flows(summary: dict) -> str:
    sov = summary["sovereignty"]
    routes = sov["plan"]["routes"]
    regions = {}
    for site, aggregator in routes.items():
        regions.setdefault(aggregator, []).append(site)
    upstream = sorted(set(sov["plan"]["upstream"].values()))
    he = summary["receipt"]["he"]
    stages = "".join(f"<div><b>{_e(a)}</b>: {_e(', '.join(m))}</div>" for a, m in regions.items())
    diagram = f"""<div class="flow">
<div class="stage"><b>Hospitals</b><br>{'<br>'.join(_e(f"{s['name']} ({s['region']}, {s['jurisdiction']})")
                                                    for s in summary['sites'])}<br>
<span class="small">noisy counts, CKKS-encrypted and signed; masked model updates</span></div>
<div class="arrow">&rarr;</div>
<div class="stage"><b>Regional aggregators</b>{stages}<span class="small">add their region's ciphertexts and
masked updates; see no single hospital's values</span></div><div class="arrow">&rarr;</div>
<div class="stage"><b>{_e(', '.join(upstream))}</b><br><span class="small">adds the regional sums only</span></div>
<div class="arrow">&rarr;</div>
<div class="stage"><b>Key custodian</b><br><span class="small">decrypts only signed sums over &ge;
{he['custodian_min_sites']} hospitals: {len(he['decryptions'])} decryption(s)</span></div></div>"""
    merged: dict[tuple, list[str]] = {}
    for f in sov["flows"]:
        merged.setdefault((f["from"], f["to"]), []).append(f["what"])
    rows = "".join(f"<tr><td>{_e(a)}</td><td>{_e(b)}</td><td>{_e('; '.join(w))}</td></tr>"
                   for (a, b), w in merged.items())
    refused = sov.get("refused_plan")
    refused_html = ("<p>No alternative plan was tried.</p>" if not refused else
                    "<p>Refused before any request went out (a plan sending a hospital straight to the global "
                    "aggregator):</p><ul>" + "".join(f"<li>{_e(line.strip(' -'))}</li>"
                                                     for line in refused.splitlines()[1:] or [refused]) + "</ul>")
    return f"""{diagram}
<table class="wide"><thead><tr><th>from</th><th>to</th><th>what left</th></tr></thead>{rows}</table>
<p><b>What stayed at each hospital:</b> {_STAYED}. Each hospital's contribution stayed in its own region;
only sums over at least two hospitals crossed a border.</p>{refused_html}"""


def _approvals(summary: dict) -> str:
    receipt = summary["receipt"]
    reviews = receipt.get("reviews") or {}
    items = [(site, a) for site, approved in receipt["approvals"].items() for a in approved]
    shared = [k for k in ("irb", "dua", "purpose") if len({a.get(k) for _, a in items}) == 1]  # said once above
    columns = [k for k in ("irb", "dua") if k not in shared]
    rows = ""
    for site, a in items:
        r = next((r for r in reviews.get(site, []) if r["function"] == a["function"]), {})
        rows += (f"<tr><td>{_e(site)}</td><td>{_e(a['function'])}</td><td>{_e(r.get('risk', 'not recorded'))}</td>"
                 f"{_num(r.get('epsilon'), '.2f', 'none' if r else 'not recorded')}"
                 + "".join(f"<td>{_e(a.get(k) or '-')}</td>" for k in columns)
                 + f"<td>{_e(', '.join(a.get('approvers') or []))}</td><td>{_e(a.get('expires') or '-')}</td></tr>")
    first = items[0][1] if items else {}
    under = "; ".join(f"{label} <b>{_e(str(first.get(k)))}</b>" for k, label in
                      (("irb", "IRB approval"), ("dua", "data use agreement"), ("purpose", "purpose"))
                      if k in shared and first.get(k))
    return f"""<p>Each hospital's compliance officer ran the automatic review (risk, epsilon cost) and approved each
request{': ' + under if under else ''}. The epsilon is what the review priced the request at; the ledger charges
what the run actually spent (see the privacy budget).</p>
<table class="wide"><thead><tr><th>hospital</th><th>request</th><th>review risk</th><th>epsilon</th>
{''.join(f'<th>{k.upper()}</th>' for k in columns)}<th>approved by</th><th>expires</th></tr></thead>{rows}</table>"""


def _deidentification(summary: dict) -> str:
    rows = ""
    for site, c in summary["compliance"].items():
        raw = "FAIL" + (f", {c['raw_problems']} problems" if "raw_problems" in c else "") if c["raw"] else "PASS"
        after = c.get("published_problems")
        published = ('<span class="ok">PASS</span>' if c["published"] else '<span class="bad">FAIL</span>') + \
            ("" if after is None else f", {after} problems left")
        rows += (f"<tr><td>{_e(site)}</td><td>{raw}</td><td>{_e(', '.join(c['raw']) or 'none')}</td>"
                 f"<td>{published}</td></tr>")
    return f"""<p>Each data owner checked the raw oncology extract for HIPAA Safe Harbor identifiers (names,
addresses, ZIP codes, dates, phone numbers, e-mail addresses, record numbers, free text, ages over 89), de-identified
it (direct identifiers and the free-text note dropped, dates shifted per patient and kept as years, ages top-coded
at 90, ZIP dropped), checked it again with the study's schema, and published it only when that check passed.
The table lists kinds of identifier found, never a value.</p>
<table class="wide"><thead><tr><th>hospital</th><th>raw extract</th><th>identifier kinds found</th>
<th>published extract</th></tr></thead>{rows}</table>"""


def _audit_budget(summary: dict) -> str:
    receipt = summary["receipt"]
    budget = receipt.get("budget") or {}
    rows = ""
    for site, a in receipt["audit"].items():
        if a["verified"]:
            chain = '<span class="ok">intact</span>, hash chain verified'
        else:
            where = f" at line {a['line']}" if a.get("line") else ""
            chain = f'<span class="bad">TAMPERED{where}</span>' + (f": {_e(a['problem'])}" if a.get("problem") else "")
        b = budget.get(site, {})
        rows += (f"<tr><td>{_e(site)}</td><td>{chain}</td><td class=\"num\">{a['entries']}</td>"
                 f"{_num(b.get('budget'), '.2f', 'not recorded')}{_num(b.get('spent'), '.2f', 'not recorded')}"
                 f"{_num(b.get('remaining'), '.2f', 'not recorded')}</tr>")
    return f"""<p>Each hospital's audit log is an append-only, hash-chained file (each line carries the hash of the
one before, anchored in the hospital's ledger); "intact" means every line's hash, sequence and link verified. The
privacy budget is the hospital's ledger for the oncology dataset after this study: what is left caps every
later request.</p>
<table class="wide"><thead><tr><th>hospital</th><th>audit chain</th><th>entries</th><th>epsilon budget</th>
<th>spent</th><th>remaining</th></tr></thead>{rows}</table>"""


def _receipt(summary: dict) -> str:
    receipt = summary["receipt"]
    parts = receipt.get("breakdown", {})
    eps_rows = "".join(f"<tr><td>{_e(site)}</td><td>{_e(', '.join(f'{d}: {v:.3f}' for d, v in spent.items()))}</td>"
                       f"<td>{_e('; '.join(f'{k} {v:.3f}' for k, v in parts.get(site, {}).items()))}</td></tr>"
                       for site, spent in receipt["epsilon"].items())
    secagg = "".join(f"<li>{_e(a)}: hospitals {_e(', '.join(v['sites']))}, threshold {v['threshold']}</li>"
                     for a, v in receipt["secure_aggregation"].items())
    he = receipt["he"]
    return f"""<table class="wide"><thead><tr><th>hospital</th><th>epsilon spent (ledger, per dataset)</th>
<th>of which</th></tr></thead>{eps_rows}</table>
<p>delta = {receipt['delta']:g} (DP-SGD); statistics: epsilon {summary['statistics']['epsilon_per_site']:g} per
hospital.</p>
<p>Secure aggregation (pairwise masks, X25519 + HKDF + AES-CTR, Shamir-shared keys):</p><ul>{secagg}</ul>
<p>Homomorphic encryption: {_e(he['scheme'])}, poly modulus degree {he['poly_modulus_degree']}, coefficient moduli
{_e(str(he['coeff_mod_bit_sizes']))}, scale 2^{he['global_scale_bits']}. The key custodian decrypts only sums over
at least {he['custodian_min_sites']} hospitals ({len(he['decryptions'])} decryption(s) made).</p>"""


def _page_css(summary: dict) -> str:
    css = resources.files("federation").joinpath("report_templates/report.css").read_text()
    footer = "".join(ch for ch in f"medsyft report: {summary['study']}" if ch.isalnum() or ch in " :-_.")
    return css + f'\n@page {{ @bottom-left {{ content: "{footer}"; }} }}\n'


def render_html(summary: dict, *, figures: dict[str, bytes] | None = None) -> str:
    """The whole report as one self-contained HTML page (figures inline as data: URIs)."""
    noise_sd = _noise_sd(summary)
    cells = summary["statistics"]["cells"]
    rows = interactions(cells, noise_sd=noise_sd)
    figures = figures or _figures(summary, rows)
    answer = "".join(
        f"<li><b>{_e(r['label'])}</b>: "
        + (_e(r["note"]) if r["ratio"] is None else
           f"ratio of odds ratios {_ratio(r['ratio'])} (95% CI incl. DP noise {_ci(r['low_dp'], r['high_dp'])}): "
           + _e(_verdict(r).split(" (")[0]))
        + "</li>" for r in rows)
    clear = [r["label"] for r in rows if r["ratio"] is not None and not _verdict(r).startswith("no clear")]
    estimable = sum(r["ratio"] is not None for r in rows)
    overall = (f"{estimable} of {len(rows)} biomarkers are estimable at this cohort size and privacy budget; "
               + (f"a clear interaction (counting the DP noise) for {_e(', '.join(clear))}." if clear else
                  "none shows a clear interaction once the DP noise is counted."))
    sites = "".join(f"<tr><td>{_e(s['name'])}</td><td>{_e(s['region'])}</td><td>{_e(s['jurisdiction'])}</td></tr>"
                    for s in summary["sites"])
    model = summary["model"]
    forest = _img(figures[FIGURES[0]], "forest plot of the treatment x biomarker interactions",
                  "Ratio of odds ratios per biomarker (squares), with the sampling-only 95% interval (dark) and the "
                  "interval that also counts the DP noise (light).")
    auroc = _img(figures[FIGURES[1]], "pooled AUROC per round",
                 "Pooled AUROC on all hospitals' test patients after each round (from noised histograms), chance "
                 "level, and the epsilon spent by the hospital that spent most.", narrow=True)
    sections = dict(zip(SECTIONS, (
        f"""<p>{_e(summary['purpose'][:1].upper() + summary['purpose'][1:])}. The sponsor asks: <b>does drug-x work
better than standard of care in tumours that carry a biomarker (EGFR, KRAS, ALK, PD-L1 high, TMB high) than in
tumours that do not?</b> That is a treatment x biomarker interaction, estimated per biomarker as a ratio of odds
ratios. Every number below is a sum over {len(summary['statistics']['sites'])} hospitals, noised at each
hospital; counts under {summary['min_cell']} show as "&lt;10".</p>
<div class="box answer"><h3>Answer at a glance (associations in observational data)</h3><ul>{answer}</ul>
<p>{overall}</p></div>""",
        _run(summary),
        f"""<table><thead><tr><th>hospital</th><th>region</th><th>jurisdiction</th></tr></thead>{sites}</table>""",
        _cohort(summary),
        _interaction(summary, rows, forest),
        _arm_ors(arm_odds_ratios(cells, noise_sd=noise_sd)),
        f"""<div class="keep"><p>Logistic regression with treatment x biomarker terms, DP-SGD at each hospital (epsilon
{max(p['epsilon'] for p in model['plans'].values()):g}, delta {summary['receipt']['delta']:g}), secure aggregation
within each region, regional sums averaged globally. Pooled AUROC on all hospitals' test patients after the last
round: <b>{model['auroc']:.3f}</b>.</p>{auroc}</div>""",
        _methods(summary, noise_sd),
        _flows(summary),
        _approvals(summary),
        _deidentification(summary),
        _audit_budget(summary),
        _receipt(summary),
    )))
    short = {"Run", "Hospitals", "Approvals", "De-identification", "Audit chain and privacy budget"}  # one block each
    body = "\n".join(f'<section id="s{i}"><h2>{_e(title)}</h2>\n'
                     + (f'<div class="keep">{content}</div>' if title in short else content) + "</section>"
                     for i, (title, content) in enumerate(sections.items(), 1))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>medsyft report: {_e(summary['study'])}</title>
<style>{_page_css(summary)}</style></head><body>
<h1>Federated analytics report: {_e(summary['study'])}</h1>
<p class="subtitle">{_e(summary['purpose'])} &middot; {len(summary['sites'])} hospitals in
{len({s['region'] for s in summary['sites']})} regions</p>
{body}
</body></html>
"""


def write_report(summary: dict, directory: Path) -> tuple[Path, Path]:
    """``report.html`` (and its figures as PNG files) then ``report.pdf`` in ``directory``.

    The HTML is written first, so it is there even when printing the PDF fails (then
    :class:`federation.pdf.PdfError` is raised, with one line that says what to install)."""
    from .pdf import html_to_pdf

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = interactions(summary["statistics"]["cells"], noise_sd=_noise_sd(summary))
    figures = _figures(summary, rows)
    for name, data in figures.items():
        (directory / name).write_bytes(data)
    page = directory / "report.html"
    page.write_text(render_html(summary, figures=figures))
    pdf = directory / "report.pdf"
    pdf.unlink(missing_ok=True)  # never leave an older PDF beside a newer HTML
    return page, html_to_pdf(page, pdf)


def report_from(results: Path) -> tuple[Path, Path]:
    """Re-render the report of a finished study from its ``summary.json``."""
    summary_file = Path(results) / "summary.json"
    if not summary_file.exists():
        raise FileNotFoundError(f"no summary.json in {results}; run `medsyft demo --scenario cross-border` first")
    try:
        summary = json.loads(summary_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{summary_file} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return write_report(summary, Path(results))

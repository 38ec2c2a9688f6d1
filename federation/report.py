"""The federated analytics report of a cross-border study: HTML and PDF.

Built only from what the study released (``summary.json``): the decrypted, DP-noised,
regional-then-global sums of the hospitals' statistics, with every count below the
minimum cell size shown as "<10"; odds ratios from those counts; the securely
aggregated model's pooled performance; and a privacy receipt. No site-level number
appears, because none ever left a hospital in the clear.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

__all__ = ["write_report", "render_html"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _age(summary: dict) -> str:
    age = summary["statistics"].get("age") or {}
    return "suppressed" if age.get("mean") is None else f"mean {age['mean']} (SD {age['sd']}) years"


def _count(value) -> str:
    return '<td class="count">&lt;10</td>' if value is None else f'<td class="count">{int(value)}</td>'


def _forest(summary: dict):
    from matplotlib.ticker import ScalarFormatter

    plt = _pyplot()
    rows = [r for r in summary["odds_ratios"] if r["arm"] == "treated"]
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for i, r in enumerate(rows):
        if r["or"] is None:
            ax.text(1, i, "suppressed", va="center", ha="center", fontsize=8, color="grey")
            continue
        ax.plot([r["low"], r["high"]], [i, i], color="tab:blue")
        ax.plot(r["or"], i, "s", color="tab:blue")
    ax.axvline(1, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yticks(range(len(rows)), [r["biomarker"] for r in rows])
    ax.set_xlabel("odds ratio of response, marker + vs - (drug-x arm), 95% CI")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    fig.tight_layout()
    return fig


def _auroc(summary: dict):
    plt = _pyplot()
    h = summary["model"]["history"]
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    ax.plot([x["round"] for x in h], [x["auroc"] for x in h], "o-")
    ax.set_xlabel("round")
    ax.set_ylabel("pooled AUROC (test patients, all hospitals)")
    ax.set_ylim(0.4, 1.0)
    fig.tight_layout()
    return fig


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(summary: dict) -> str:
    e = html.escape
    cells = summary["statistics"]["cells"]
    age_rows = "".join(f"<tr><td>{e(k.replace('age_', '').replace('_', '-'))}</td>{_count(v)}</tr>"
                       for k, v in cells.items() if k.startswith("age_"))
    arm_rows = ""
    for arm in ("treated", "untreated"):
        r, nr = cells[f"{arm}_responders"], cells[f"{arm}_nonresponders"]
        rate = f"{r / (r + nr):.1%}" if r is not None and nr is not None else "suppressed"
        arm_rows += f"<tr><td>{arm}</td>{_count(r)}{_count(nr)}<td>{rate}</td></tr>"
    or_rows = ""
    for r in summary["odds_ratios"]:
        ci = "suppressed" if r["or"] is None else f"{r['or']:.2f} ({r['low']:.2f}-{r['high']:.2f})"
        or_rows += (f"<tr><td>{e(r['biomarker'])}</td><td>{e(r['arm'])}</td>{_count(r['pos_responders'])}"
                    f"{_count(r['pos_nonresponders'])}{_count(r['neg_responders'])}{_count(r['neg_nonresponders'])}"
                    f"<td>{ci}</td></tr>")
    receipt = summary["receipt"]
    parts = receipt.get("breakdown", {})
    eps_rows = "".join(f"<tr><td>{e(site)}</td><td>{e(', '.join(f'{d}: {v:.3f}' for d, v in spent.items()))}"
                       f"<br><small>{e('; '.join(f'{k} {v:.3f}' for k, v in parts.get(site, {}).items()))}</small>"
                       "</td></tr>" for site, spent in receipt["epsilon"].items())
    approvals = "".join(
        f"<tr><td>{e(site)}</td><td>{e(a['function'])}</td><td>{e(a['irb'] or '-')}</td><td>{e(a['dua'] or '-')}</td>"
        f"<td>{e(', '.join(a['approvers']))}</td><td>{e(a['expires'] or '-')}</td></tr>"
        for site, items in receipt["approvals"].items() for a in items)
    secagg = "".join(f"<li>{e(a)}: sites {e(', '.join(v['sites']))}, threshold {v['threshold']}</li>"
                     for a, v in receipt["secure_aggregation"].items())
    he = receipt["he"]
    sites = "".join(f"<tr><td>{e(s['name'])}</td><td>{e(s['region'])}</td><td>{e(s['jurisdiction'])}</td></tr>"
                    for s in summary["sites"])
    flows = "".join(f"<li>{e(f['from'])} &rarr; {e(f['to'])}: {e(f['what'])}</li>"
                    for f in summary["sovereignty"]["flows"])
    refused = e(summary["sovereignty"]["refused_plan"] or "none")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>medsyft report: {e(summary['study'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{border:1px solid #ccc;padding:2px 6px}}
table{{border-collapse:collapse;margin:0.5em 0}}.count{{text-align:right}}</style></head><body>
<h1>Federated analytics report: {e(summary['study'])}</h1>
<p>{e(summary['purpose'])}. Every number below is an aggregate over at least
{he['custodian_min_sites']} hospitals, DP-noised at the hospitals, with counts under {summary['min_cell']}
shown as &lt;10.</p>
<h2>Participating hospitals</h2><table><tr><th>site</th><th>region</th><th>jurisdiction</th></tr>{sites}</table>
<h2>Cohort</h2><p>Patients: <b>{cells['n'] if cells['n'] is not None else '&lt;10'}</b> (noisy);
age {_age(summary)}</p>
<table><tr><th>age</th><th>patients</th></tr>{age_rows}</table>
<table><tr><th>arm</th><th>responders</th><th>non-responders</th><th>response rate</th></tr>{arm_rows}</table>
<h2>Biomarkers and response</h2>
<table><tr><th>biomarker</th><th>arm</th><th>+ resp</th><th>+ non-resp</th><th>- resp</th><th>- non-resp</th>
<th>odds ratio (95% CI)</th></tr>{or_rows}</table>
<img alt="forest plot" src="data:image/png;base64,{_png(_forest(summary))}">
<h2>Federated response model</h2><p>Logistic regression, DP-SGD at each hospital, secure aggregation within each
region; pooled AUROC on all hospitals' test patients: <b>{summary['model']['auroc']:.3f}</b>.</p>
<img alt="AUROC per round" src="data:image/png;base64,{_png(_auroc(summary))}">
<h2>Data flows</h2><ul>{flows}</ul><p>Refused before any request: {refused}</p>
<h2>Privacy receipt</h2>
<table><tr><th>site</th><th>epsilon spent (ledger, per dataset)</th></tr>{eps_rows}</table>
<p>delta = {receipt['delta']:g}; statistics: {e(summary['statistics']['mechanism'])},
epsilon {summary['statistics']['epsilon_per_site']} per hospital.</p>
<p>Secure aggregation (pairwise masks, X25519 + HKDF + AES-CTR, Shamir-shared keys):</p><ul>{secagg}</ul>
<p>Homomorphic encryption: {e(he['scheme'])}, poly modulus degree {he['poly_modulus_degree']}, coefficient moduli
{he['coeff_mod_bit_sizes']}, scale 2^{he['global_scale_bits']}; the key custodian decrypts only sums over at least
{he['custodian_min_sites']} hospitals ({len(he['decryptions'])} decryption(s) made).</p>
<table><tr><th>site</th><th>request</th><th>IRB</th><th>DUA</th><th>approved by</th><th>expires</th></tr>{approvals}</table>
</body></html>"""


def _pdf(summary: dict, path: Path) -> Path:
    from matplotlib.backends.backend_pdf import PdfPages

    plt = _pyplot()
    cells = summary["statistics"]["cells"]
    lines = [f"medsyft federated analytics report: {summary['study']}", summary["purpose"], "",
             "Sites: " + ", ".join(f"{s['name']} ({s['region']}/{s['jurisdiction']})" for s in summary["sites"]),
             f"Patients (noisy): {cells['n'] if cells['n'] is not None else '<10'}; age {_age(summary)}", ""]
    for r in summary["odds_ratios"]:
        ci = "suppressed" if r["or"] is None else f"OR {r['or']:.2f} ({r['low']:.2f}-{r['high']:.2f})"
        lines.append(f"{r['biomarker']:<10} {r['arm']:<10} {ci}")
    lines += ["", f"Federated model pooled AUROC: {summary['model']['auroc']:.3f}", "", "Privacy receipt:"]
    parts = summary["receipt"].get("breakdown", {})
    lines += [f"  {site}: " + ", ".join(f"{d} eps {v:.3f}" for d, v in spent.items())
              + "".join(f"; {k} {v:.3f}" for k, v in parts.get(site, {}).items())
              for site, spent in summary["receipt"]["epsilon"].items()]
    he = summary["receipt"]["he"]
    lines += [f"  delta {summary['receipt']['delta']:g}; CKKS N={he['poly_modulus_degree']}; custodian decrypts "
              f"sums over >= {he['custodian_min_sites']} sites",
              "  approvals: " + "; ".join(sorted({f"{a['irb']}/{a['dua']}" for items in
                                                 summary["receipt"]["approvals"].values() for a in items}))]
    with PdfPages(path) as pdf:
        fig = plt.figure(figsize=(8.27, 11.69))
        fig.text(0.06, 0.96, "\n".join(lines), va="top", family="monospace", fontsize=8)
        pdf.savefig(fig)
        plt.close(fig)
        for make in (_forest, _auroc):
            fig = make(summary)
            pdf.savefig(fig)
            plt.close(fig)
    return path


def write_report(summary: dict, directory: Path) -> tuple[Path, Path]:
    """``report.html`` and ``report.pdf`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    page = directory / "report.html"
    page.write_text(render_html(summary))
    return page, _pdf(summary, directory / "report.pdf")


def report_from(results: Path) -> tuple[Path, Path]:
    """Re-render the report of a finished study from its ``summary.json``."""
    summary_file = Path(results) / "summary.json"
    if not summary_file.exists():
        raise FileNotFoundError(f"no summary.json in {results}; run `medsyft demo --scenario cross-border` first")
    return write_report(json.loads(summary_file.read_text()), Path(results))

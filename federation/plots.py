"""The study's pictures: ROC curves per method, AUROC per round, how the hospitals differ, and
the cross-border report's figures (treatment x biomarker forest plot, the model's rounds).

Every line has a legend entry, round axes have integer ticks, and figures are saved with a
tight bounding box, so no label is cut off whatever the text lengths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_roc", "plot_rounds", "plot_sites", "plot_dice_vs_epsilon", "plot_segmentations",
           "plot_interactions"]

DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _figure(width=6.4, height=4.8, layout=None):
    plt = _pyplot()
    return plt, *plt.subplots(figsize=(width, height), layout=layout)


def _save(plt, fig, out, dpi=DPI):
    """``out``: a path, or a binary file object (the report embeds its figures)."""
    fig.savefig(out, dpi=dpi, bbox_inches="tight", pad_inches=0.08, format="png")
    plt.close(fig)
    return Path(out) if isinstance(out, (str, Path)) else out


def _integer_rounds(ax, rounds) -> None:
    """Whole-number round ticks, half a round of margin (one round alone gets no 0.995 ticks)."""
    from matplotlib.ticker import MaxNLocator

    if rounds:
        ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path) -> Path:
    """``curves[label] = (fpr, tpr, auroc)`` on the pooled test patients of all hospitals."""
    plt, fig, ax = _figure()
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUROC {auc:.3f})", lw=1.8)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="chance (AUROC 0.500)")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1),
           title="Sepsis within the stay: ROC on all hospitals' test patients")
    ax.legend(loc="lower right", fontsize=8)
    return _save(plt, fig, path)


_BASELINE_STYLES = (("tab:green", "--"), ("tab:purple", "-."), ("tab:brown", ":"), ("dimgrey", (0, (10, 3))),
                    ("tab:olive", (0, (3, 1, 1, 1, 1, 1))))  # colour and dash both differ


def plot_rounds(history: list[dict], references: dict[str, float], path: Path, *,
                title: str = "Federated training, round by round", dpi: int = DPI,
                size: tuple[float, float] = (7.0, 5.4)) -> Path:
    """Federated AUROC (from the sites' noised evaluations, where the study evaluated) and the
    largest site's epsilon after each round (training plus evaluation), baselines as lines,
    each its own colour and dash so no two look alike; the legend sits under the axes so it
    hides no point."""
    plt, fig, ax = _figure(*size, layout="constrained")
    rounds = [h["round"] for h in history]
    shown = [(h["round"], h["auroc"]) for h in history if h.get("auroc") is not None]
    ax.plot([r for r, _ in shown], [a for _, a in shown], marker="o", lw=2, c="tab:blue",
            label="federated DP (pooled test, noised evaluation)")
    for i, (label, value) in enumerate(references.items()):
        colour, ls = _BASELINE_STYLES[i % len(_BASELINE_STYLES)]
        ax.axhline(value, ls=ls, c=colour, lw=1.4, label=f"{label} {value:.3f}")
    ax.set(xlabel="round", ylabel="AUROC (left axis)", title=title)
    eps = ax.twinx()
    spent, evaluation = [], {}
    for h in history:
        for site, value in (h.get("evaluation_epsilon") or {}).items():
            evaluation[site] = evaluation.get(site, 0.0) + value
        spent.append(max(v + evaluation.get(s, 0.0) for s, v in h["epsilon"].items()))
    eps.plot(rounds, spent, c="tab:red", marker=".", lw=1.2, alpha=0.8,
             label="epsilon spent, training + evaluation, largest site (right axis)")
    eps.set_ylabel("epsilon spent (largest site, right axis)", color="tab:red")
    eps.tick_params(axis="y", colors="tab:red")
    eps.set_ylim(0, max(8.0, max(spent) * 1.1))
    _integer_rounds(ax, rounds)  # after both axes plotted: they share x
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = eps.get_legend_handles_labels()
    fig.legend(handles + more, labels + more_labels, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return _save(plt, fig, path, dpi)


def plot_sites(sites: dict[str, dict], path: Path) -> Path:
    """``sites[name] = {"age_bins", "age_counts" (None = suppressed), "prevalence", "n"}``."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    names = list(sites)
    for i, name in enumerate(names):
        s = sites[name]
        counts = np.array([0 if c is None else c for c in s["age_counts"]], float)
        centres = (np.array(s["age_bins"][:-1]) + np.array(s["age_bins"][1:])) / 2
        width = (s["age_bins"][1] - s["age_bins"][0]) / (len(names) + 1)
        left.bar(centres + (i - (len(names) - 1) / 2) * width, counts / max(counts.sum(), 1), width=width,
                 label=f"{name} (n={s['n']})")
    left.set(xlabel="age at ICU admission (years)", ylabel="share of the site's patients",
             title="Age mix per hospital (cells < 10 suppressed)")
    left.legend(fontsize=8)
    right.bar(names, [sites[n]["prevalence"] for n in names], color=["tab:blue", "tab:orange", "tab:green"][: len(names)])
    right.set(ylabel="sepsis prevalence", title="Outcome prevalence")
    right.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return _save(plt, fig, path)


_REGION_LABELS = {"whole_tumour": "whole tumour", "tumour_core": "tumour core", "enhancing_tumour": "enhancing tumour"}


def plot_dice_vs_epsilon(federated_dp: dict[str, dict[str, float]], reference: dict[str, float], path: Path,
                         *, warm_start: dict[str, float] | None = None,
                         noise_sd: dict[str, dict[str, float]] | None = None) -> Path:
    """Dice per BraTS region against each centre's epsilon (``federated_dp[eps][region]``,
    from the noised secure-sum evaluations), the non-private federated Dice dashed and the
    studies' starting point (the model trained on public mocks only) dotted."""
    plt, fig, ax = _figure(6.4, 6.0, layout="constrained")
    budgets = sorted(federated_dp, key=float)
    for region, colour in zip(_REGION_LABELS, ("tab:blue", "tab:orange", "tab:green")):
        ax.errorbar([float(e) for e in budgets], [federated_dp[e][region] for e in budgets], marker="o", lw=2,
                    yerr=[noise_sd[e][region] for e in budgets] if noise_sd else None, capsize=3,
                    c=colour, label=f"{_REGION_LABELS[region]}, federated DP" + (" (bars: evaluation noise sd)"
                                                                                  if noise_sd else ""))
        ax.axhline(reference[region], ls="--", c=colour, lw=1.2,
                   label=f"{_REGION_LABELS[region]}, federated without privacy ({reference[region]:.2f})")
        if warm_start is not None:
            ax.axhline(warm_start[region], ls=":", c=colour, lw=1.2,
                       label=f"{_REGION_LABELS[region]}, public mocks only, the start ({warm_start[region]:.2f})")
    values = [v for d in federated_dp.values() for v in d.values()]  # noised means can leave [0, 1]
    lowest = [v - (noise_sd[e][r] if noise_sd else 0.0) for e, d in federated_dp.items() for r, v in d.items()]
    lowest += list(reference.values()) + list((warm_start or {}).values())
    low, high = max(0.0, min(lowest) - 0.05), max([1.0] + values)
    ax.set(xlabel="epsilon per centre (training + evaluation)", ylabel="Dice (noised, both centres' test cases)",
           title="Brain-tumour segmentation: Dice against epsilon",
           ylim=(min(low, 0.9), high + 0.02))
    ax.set_xticks([float(e) for e in budgets])
    fig.legend(loc="outside lower center", ncol=1, fontsize=7, frameon=False)  # under the axes: hides no point
    return _save(plt, fig, path)


def plot_segmentations(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, path: Path,
                       *, title: str) -> Path:
    """FLAIR slices with the true and the predicted BraTS labels side by side (callers pass
    **mock** cases only: a released figure never shows a private image)."""
    from matplotlib.colors import ListedColormap

    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(4.4, 2.2 * n), squeeze=False)
    colours = ListedColormap([(0, 0, 0, 0), (0.9, 0.1, 0.1, 0.6), (0.1, 0.8, 0.1, 0.45), (0, 0, 0, 0),
                              (1.0, 0.9, 0.0, 0.7)])
    for row in range(n):
        for col, (mask, name) in enumerate(((truth[row], "ground truth"), (predicted[row], "DP model"))):
            ax = axes[row, col]
            ax.imshow(images[row, 3], cmap="gray")
            ax.imshow(np.ma.masked_equal(mask, 0), cmap=colours, vmin=0, vmax=4, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_interactions(rows: list[dict], path, *, dpi: int = DPI):
    """Forest plot of the treatment x biomarker interactions: per row (top to bottom) the ratio
    of odds ratios with its sampling-only (Woolf) and its DP-noise-inclusive 95% intervals, or
    "not estimable". ``rows``: ``{"label", "ratio", "low", "high", "low_dp", "high_dp", "note"}``
    (``*_dp`` may be None). Intervals past the axis end in an arrow, so none is hidden."""
    from matplotlib.lines import Line2D

    plt, fig, ax = _figure(7.0, 2.1 + 0.45 * len(rows), layout="constrained")
    ends = [v for r in rows if r["ratio"] is not None for v in (r["low"], r["high"], r.get("low_dp"), r.get("high_dp"))
            if v is not None]
    lo = max(0.02, min([0.25] + [v / 1.3 for v in ends]))
    hi = min(50.0, max([4.0] + [v * 1.3 for v in ends]))
    clipped = False
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        if r["ratio"] is None:
            ax.text(1, y, "not estimable (" + (r.get("note") or "").removeprefix("not estimable: ") + ")",
                    ha="center", va="center", fontsize=8, color="dimgrey", style="italic",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5})
            continue
        for low, high, colour, width in ((r.get("low_dp"), r.get("high_dp"), "lightsteelblue", 7),
                                         (r["low"], r["high"], "tab:blue", 2.2)):
            if low is None:
                continue
            ax.plot([max(low, lo), min(high, hi)], [y, y], c=colour, lw=width, solid_capstyle="butt")
            for end, edge, marker in ((low, lo, "<"), (high, hi, ">")):
                if (end < edge) if marker == "<" else (end > edge):
                    ax.plot(edge, y, marker=marker, c="black", ms=6, clip_on=False)
                    clipped = True
        ax.plot(r["ratio"], y, "s", c="navy", ms=7)
    ax.axvline(1, c="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ticks = [t for t in (0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if lo <= t <= hi]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_yticks(range(len(rows)), [r["label"] for r in reversed(rows)])
    ax.set_xlabel("ratio of odds ratios (log scale): OR(marker+ vs marker-) on drug-x / the same on standard care",
                  fontsize=9)
    ax.set_title("Does drug-x work better in marker-positive tumours?")
    handles = [Line2D([], [], c="navy", marker="s", ls="none", label="ratio of odds ratios"),
               Line2D([], [], c="tab:blue", lw=2.2, label="95% CI, sampling only (Woolf)"),
               Line2D([], [], c="lightsteelblue", lw=7, label="95% CI including the DP noise"),
               Line2D([], [], c="grey", ls="--", lw=1, label="1 = no interaction")]
    if clipped:
        handles.append(Line2D([], [], c="black", marker=">", ls="none", label="interval continues past the axis"))
    fig.legend(handles=handles, loc="outside lower center", ncol=3 if len(handles) < 5 else 2, fontsize=8,
               frameon=False)
    ax.grid(axis="x", color="0.92", lw=0.8)
    ax.set_axisbelow(True)
    return _save(plt, fig, path, dpi)

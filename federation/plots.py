"""The study's pictures: ROC curves per method, AUROC per round, how the hospitals differ."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_roc", "plot_rounds", "plot_sites", "plot_dice_vs_epsilon", "plot_segmentations"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _figure(width=6.4, height=4.8):
    plt = _pyplot()
    return plt, *plt.subplots(figsize=(width, height))


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path) -> Path:
    """``curves[label] = (fpr, tpr, auroc)`` on the pooled test patients of all hospitals."""
    plt, fig, ax = _figure()
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUROC {auc:.3f})", lw=1.8)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1),
           title="Sepsis within the stay: ROC on all hospitals' test patients")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_rounds(history: list[dict], references: dict[str, float], path: Path) -> Path:
    """Federated AUROC (from the sites' noised evaluations, where the study evaluated) and the
    largest site's epsilon after each round (training plus evaluation), baselines as lines."""
    plt, fig, ax = _figure()
    rounds = [h["round"] for h in history]
    shown = [(h["round"], h["auroc"]) for h in history if h.get("auroc") is not None]
    ax.plot([r for r, _ in shown], [a for _, a in shown], marker="o", lw=2,
            label="federated DP (pooled test, noised evaluation)")
    for (label, value), ls in zip(references.items(), ("--", "-.", ":", (0, (5, 1)))):
        ax.axhline(value, ls=ls, c="grey", lw=1.2, label=f"{label} {value:.3f}")
    ax.set(xlabel="round", ylabel="AUROC", title="Federated training, round by round")
    ax.set_xticks(rounds)
    eps = ax.twinx()
    spent, evaluation = [], {}
    for h in history:
        for site, value in (h.get("evaluation_epsilon") or {}).items():
            evaluation[site] = evaluation.get(site, 0.0) + value
        spent.append(max(v + evaluation.get(s, 0.0) for s, v in h["epsilon"].items()))
    line, = eps.plot(rounds, spent, c="tab:red", marker=".", lw=1, alpha=0.7)
    eps.set_ylabel("epsilon spent (largest site)", color="tab:red")
    eps.set_ylim(0, max(8.0, max(spent) * 1.1))
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles + [line], labels + ["epsilon spent, training + evaluation (right axis)"],
              loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


_REGION_LABELS = {"whole_tumour": "whole tumour", "tumour_core": "tumour core", "enhancing_tumour": "enhancing tumour"}


def plot_dice_vs_epsilon(federated_dp: dict[str, dict[str, float]], reference: dict[str, float], path: Path,
                         *, warm_start: dict[str, float] | None = None,
                         noise_sd: dict[str, dict[str, float]] | None = None) -> Path:
    """Dice per BraTS region against each centre's epsilon (``federated_dp[eps][region]``,
    from the noised secure-sum evaluations), the non-private federated Dice dashed and the
    studies' starting point (the model trained on public mocks only) dotted."""
    plt, fig, ax = _figure()
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
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

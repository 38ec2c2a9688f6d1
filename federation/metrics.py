"""Pooling hospitals' evaluation replies into network-wide metrics (pure numpy).

A site's DP evaluation is two noised histograms of the model's scores (septic / other
patients) over public bins. Everything here is post-processing of those counts, so it
costs no privacy: summed over sites they give the pooled ROC curve and AUROC of all test
patients together. Noise can make a count negative; sums keep it (they stay unbiased)
and only the curve is clipped to be monotone; where noise leaves a class's total at or
below zero (a few septic patients at a small site), the AUROC uses counts clipped at zero. The exact per-site metrics of
``site_metrics`` (non-private baselines) pool through the same functions.
"""

from __future__ import annotations

import numpy as np

from datasites.jobs.evaluation import THRESHOLDS, auroc

__all__ = ["auroc", "pooled_roc", "pooled_auroc", "histogram_auroc", "epsilon_spent_on", "THRESHOLDS"]


def _histograms(site_results: list[dict]) -> tuple[np.ndarray, np.ndarray] | None:
    hists = [r["histogram"] for r in site_results if r.get("histogram")]
    if not hists:
        return None
    edges = {tuple(h["edges"]) for h in hists}
    if len(edges) != 1:
        raise ValueError("the sites' histograms use different bins; evaluate with one plan")
    positive = np.sum([np.asarray(h["positive"], float) for h in hists], axis=0)
    negative = np.sum([np.asarray(h["negative"], float) for h in hists], axis=0)
    return positive, negative


def histogram_auroc(positive, negative) -> float:
    """AUROC from per-bin counts (ties within a bin count half), clipped to [0, 1]."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    p_total, n_total = positive.sum(), negative.sum()
    if p_total <= 0 or n_total <= 0:  # few patients of a class: noise outweighed them; clipped counts still rank
        positive, negative = np.clip(positive, 0, None), np.clip(negative, 0, None)
        p_total, n_total = positive.sum(), negative.sum()
    if p_total <= 0 or n_total <= 0:
        raise ValueError("AUROC needs positive and negative patients (every noised count is zero or below)")
    above = np.cumsum(positive[::-1])[::-1] - positive  # positives in higher bins
    return float(np.clip((negative * (above + 0.5 * positive)).sum() / (p_total * n_total), 0.0, 1.0))


def pooled_roc(site_results: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of all sites' test patients together."""
    hist = _histograms(site_results)
    if hist is not None:
        positive, negative = hist
        # flagging every bin from the top one down: the operating points from (0, 0) to (1, 1)
        tpr = np.cumsum(positive[::-1]) / max(positive.sum(), 1e-9)
        fpr = np.cumsum(negative[::-1]) / max(negative.sum(), 1e-9)
        tpr = np.maximum.accumulate(np.clip(tpr, 0, 1))  # noise can dip a sum: keep the curve monotone
        fpr = np.maximum.accumulate(np.clip(fpr, 0, 1))
        return np.r_[0.0, fpr], np.r_[0.0, tpr]
    rocs = [r["roc"] for r in site_results if r.get("roc")]
    if not rocs:
        raise ValueError("no site returned ROC counts (all suppressed or empty)")
    tp = np.array([[np.nan if v is None else v for v in r["tp"]] for r in rocs], float)
    fp = np.array([[np.nan if v is None else v for v in r["fp"]] for r in rocs], float)
    keep = ~np.isnan(tp).any(axis=0) & ~np.isnan(fp).any(axis=0)
    positives = sum(r["positives"] for r in rocs)
    negatives = sum(r["negatives"] for r in rocs)
    tpr = tp[:, keep].sum(axis=0) / positives
    fpr = fp[:, keep].sum(axis=0) / negatives
    order = np.lexsort((tpr, fpr))
    return np.r_[0.0, fpr[order], 1.0], np.r_[0.0, tpr[order], 1.0]


def pooled_auroc(site_results: list[dict]) -> float:
    """AUROC over the union of the sites' test splits."""
    hist = _histograms(site_results)
    if hist is not None:
        return histogram_auroc(*hist)
    fpr, tpr = pooled_roc(site_results)
    return float(np.trapz(tpr, fpr))


def epsilon_spent_on(site_results: dict[str, dict]) -> dict[str, float]:
    """Per site, the epsilon its evaluation replies' receipts say they cost."""
    return {site: float((r.get("receipt") or {}).get("epsilon", 0.0)) for site, r in site_results.items()}

"""Pooling hospitals' aggregate evaluation results into network-wide metrics (pure numpy)."""

from __future__ import annotations

import numpy as np

from datasites.jobs.evaluation import THRESHOLDS, auroc

__all__ = ["auroc", "pooled_roc", "pooled_auroc", "THRESHOLDS"]


def pooled_roc(site_results: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of all sites' test patients together, from each site's ROC counts.

    Only thresholds every site reported (none suppressed) are used, plus the two ends.
    """
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
    """AUROC over the union of the sites' test splits (trapezoid over the pooled ROC)."""
    fpr, tpr = pooled_roc(site_results)
    return float(np.trapz(tpr, fpr))

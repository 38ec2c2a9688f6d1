"""Aggregate-only evaluation at a hospital: the vetted ``evaluate`` job.

Returns AUROC, AUPRC, Brier score, calibration bins and ROC counts on the site's
held-out split. Cells (calibration bins, ROC operating points) with fewer than
``min_cell`` patients on either side are suppressed, so no answer describes a handful
of patients. The ROC counts sit on a fixed public grid of thresholds, so the
researcher can pool several hospitals' counts into one ROC curve.
"""

from __future__ import annotations

import numpy as np

from .cohort import check_frame, split_rows
from .models import build_model, model_inputs, set_weights
from .site import hospital

__all__ = ["evaluate", "site_metrics", "predict", "auroc", "THRESHOLDS", "MIN_CELL"]

MIN_CELL = 10
# 241 thresholds, evenly spaced in logit space (0.05 apart): fine where DP models put their
# scores, and short enough for the release policy (no list longer than 256 leaves a site).
THRESHOLDS = 1 / (1 + np.exp(-np.linspace(-6, 6, 241)))


def predict(model_name: str, weights: dict, inputs: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Predicted probabilities of ``model_name`` with ``weights`` on ``inputs``."""
    import torch

    model = build_model(model_name, seed=seed)
    set_weights(model, weights)
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(inputs))).numpy().astype(np.float64)


def auroc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs at least one positive and one negative label")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts - 1) / 2.0 + 1, counts)  # average ranks over ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-scores, kind="mergesort")
    hits = labels[order]
    if hits.sum() == 0:
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def site_metrics(scores: np.ndarray, labels: np.ndarray, *, min_cell: int = MIN_CELL) -> dict:
    """Aggregate metrics of predicted probabilities against labels, small cells suppressed."""
    if min_cell < 5:
        raise ValueError("min_cell below 5 is not allowed: small counts can identify patients")
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    n, n_pos = len(labels), int(labels.sum())
    if n < min_cell:
        return {"n": None, "suppressed": f"fewer than {min_cell} test patients"}
    bins = []
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, 9)
    for b in range(10):
        inside = which == b
        count = int(inside.sum())
        bins.append({"lower": float(edges[b]), "upper": float(edges[b + 1]),
                     "n": count if count >= min_cell else None,
                     "mean_predicted": float(scores[inside].mean()) if count >= min_cell else None,
                     "observed_rate": float(labels[inside].mean()) if count >= min_cell else None})
    predicted_pos = (scores[None, :] >= THRESHOLDS[:, None])
    tp = (predicted_pos & (labels[None, :] == 1)).sum(axis=1)
    fp = (predicted_pos & (labels[None, :] == 0)).sum(axis=1)
    flagged = predicted_pos.sum(axis=1)
    kept = (flagged >= min_cell) & (n - flagged >= min_cell)
    both_classes = min(n_pos, n - n_pos) >= min_cell
    return {
        "n": n, "n_positive": n_pos if both_classes else None,
        "auroc": auroc(labels, scores) if min(n_pos, n - n_pos) else None, "auprc": _auprc(scores, labels),
        "brier": float(np.mean((scores - labels) ** 2)),
        "calibration": bins,
        "roc": {"tp": [int(v) if k else None for v, k in zip(tp, kept)],
                "fp": [int(v) if k else None for v, k in zip(fp, kept)],
                "positives": n_pos, "negatives": n - n_pos} if both_classes else None,
        "min_cell": min_cell,
    }


def evaluate(cohort, weights: dict, plan: dict) -> dict:
    """Metrics of the global ``weights`` (plus this site's local layers, if the study keeps
    any) on this hospital's held-out split. Aggregates only."""
    cohort = check_frame(cohort)
    test = split_rows(cohort, "test")
    inputs, labels = model_inputs(test, plan["model"])
    weights = dict(weights)
    if plan.get("local_layers"):
        weights.update((hospital().load(plan["study"], "state") or {}).get("local_layers", {}))
    scores = predict(plan["model"], weights, inputs, seed=plan["seed"])
    return site_metrics(scores, labels, min_cell=plan.get("min_cell", MIN_CELL))

"""Reference models a federated study is judged against, trained with the data in one place.

This is a *simulation* tool: the data owners pool their cohorts for a reference run,
which a real network would never do. It answers "what did federation and DP cost?":
- ``pooled``: all hospitals' training data, no privacy (early-stopped on a validation split);
- ``pooled_dp``: the same, with DP-SGD at the study's noise, clipping and number of steps;
- ``local``: each hospital alone on its own data, no privacy (early-stopped);
- ``local_dp``: each hospital alone with the study's DP-SGD settings.
Every model is evaluated on every hospital's test split with the same aggregate metrics
the sites return in a study, so the numbers compare like for like.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from datasites.cohort_asset import COHORT_ASSET
from datasites.jobs.cohort import split_rows
from datasites.jobs.evaluation import predict, site_metrics
from datasites.jobs.models import build_model, get_weights, model_inputs
from syft_policies.quiet import quiet
from datasites.jobs.training import fit

from .metrics import auroc, pooled_auroc, pooled_roc
from .plan import StudyPlan

__all__ = ["pooled_cohorts", "evaluate_weights", "run_baselines"]

VALIDATION_FRACTION = 0.15


def pooled_cohorts(sites) -> dict[str, pd.DataFrame]:
    """Each hospital's private cohort, fetched by its own admin (simulation only)."""
    frames = {}
    for site in sites:
        admin = site.admin()
        with quiet():
            frames[site.spec.name] = admin.datasets[site.spec.dataset_name].assets[COHORT_ASSET].data
    return frames


def evaluate_weights(frames: dict[str, pd.DataFrame], plan: StudyPlan, weights: dict) -> dict:
    """Metrics of one model on every hospital's test split, pooled like a study's."""
    sites = {}
    for name, frame in frames.items():
        x, y = model_inputs(split_rows(frame, "test"), plan.model)
        sites[name] = site_metrics(predict(plan.model, weights, x, seed=plan.seed), y)
    fpr, tpr = pooled_roc(list(sites.values()))
    return {"auroc": pooled_auroc(list(sites.values())), "sites": sites, "roc": {"fpr": fpr, "tpr": tpr}}


def _early_stopped(plan: StudyPlan, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> dict:
    """Non-private training that keeps the epoch with the best validation AUROC."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    n_val = max(10, int(len(y) * VALIDATION_FRACTION))
    val, train = idx[:n_val], idx[n_val:]
    model = build_model(plan.model, seed=plan.seed)
    best, best_score = get_weights(model), -1.0
    for epoch in range(epochs):
        fit(model, x[train], y[train], epochs=1, sample_rate=plan.sample_rate, lr=plan.lr, seed=seed + epoch)
        weights = get_weights(model)
        if len(np.unique(y[val])) < 2:
            best = weights
            continue
        score = auroc(y[val], predict(plan.model, weights, x[val], seed=plan.seed))
        if score > best_score:
            best, best_score = weights, score
    return best


def _private(plan: StudyPlan, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> tuple[dict, float]:
    from opacus.accountants import RDPAccountant

    model = build_model(plan.model, seed=plan.seed)
    run = fit(model, x, y, epochs=epochs, sample_rate=plan.sample_rate, lr=plan.lr,
              noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.max_grad_norm, seed=seed)
    accountant = RDPAccountant()
    accountant.history = [tuple(h) for h in run["accountant"]]
    return get_weights(model), float(accountant.get_epsilon(plan.delta))


def run_baselines(frames: dict[str, pd.DataFrame], plan: StudyPlan, *, echo=lambda *_: None) -> dict:
    """Train and evaluate the four reference models; same epochs as the study's rounds x local epochs."""
    epochs = plan.rounds * plan.local_epochs
    data = {name: model_inputs(split_rows(f, "train"), plan.model) for name, f in frames.items()}
    x_all = np.concatenate([x for x, _ in data.values()])
    y_all = np.concatenate([y for _, y in data.values()])
    out = {}
    echo("  pooled (no privacy)")
    out["pooled"] = evaluate_weights(frames, plan, _early_stopped(plan, x_all, y_all, epochs, plan.seed + 1))
    echo("  pooled DP-SGD")
    weights, eps = _private(plan, x_all, y_all, epochs, plan.seed + 2)
    out["pooled_dp"] = {**evaluate_weights(frames, plan, weights), "epsilon": eps}
    out["local"], out["local_dp"] = {}, {}
    for i, (name, (x, y)) in enumerate(data.items()):
        echo(f"  local only: {name}")
        out["local"][name] = evaluate_weights(frames, plan, _early_stopped(plan, x, y, epochs, plan.seed + 10 + i))
        weights, eps = _private(plan, x, y, epochs, plan.seed + 20 + i)
        out["local_dp"][name] = {**evaluate_weights(frames, plan, weights), "epsilon": eps}
    out["local_mean"] = float(np.mean([r["auroc"] for r in out["local"].values()]))
    out["local_dp_mean"] = float(np.mean([r["auroc"] for r in out["local_dp"].values()]))
    return out



"""Small experiments the labs run without datasites (the pooled data of a simulation)."""

from __future__ import annotations

import numpy as np

__all__ = ["hospital_cohorts", "auroc_against_epsilon", "skewed_hospitals", "compare_strategy", "ATTACKS",
           "iid_hospitals", "byzantine_study"]


def hospital_cohorts(patients: int, *, seed: int = 7) -> dict:
    """The shipped hospitals' ``sepsis_cohort`` frames (generated, written and loaded like a site's)."""
    import tempfile
    from pathlib import Path

    from datasites import ensure_site_data, shipped_specs
    from datasites.cohort_asset import cohort_frame
    from datasites.data import private_dir
    from synthetic_data import load_synthea

    specs = shipped_specs()
    with tempfile.TemporaryDirectory(prefix="medsyft-lab-") as home:
        ensure_site_data(specs, Path(home), n_patients=patients, seed=seed)
        return {s.name: cohort_frame(load_synthea(private_dir(Path(home), s.name)), site_uid=f"lab-{s.name}")
                for s in specs}


def auroc_against_epsilon(epsilons, *, patients: int, rounds: int = 4, seeds=(0,), model: str = "mlp") -> dict:
    """Test AUROC of a model trained on the pooled hospitals with DP-SGD at each epsilon
    (noise calibrated by Opacus' RDP accountant), and without privacy; mean over ``seeds``."""
    from datasites.jobs.cohort import split_rows
    from datasites.jobs.models import model_inputs
    from federation import StudyPlan
    from federation.baselines import _early_stopped, _private, evaluate_weights

    frames = hospital_cohorts(patients)
    data = [model_inputs(split_rows(f, "train"), model) for f in frames.values()]
    x, y = np.concatenate([d[0] for d in data]), np.concatenate([d[1] for d in data])
    out = {}
    for eps in epsilons:
        scores = []
        for seed in seeds:
            plan = StudyPlan(study="lab", sites=["pooled"], model=model, rounds=rounds, epsilon=eps, seed=seed)
            weights, _ = _private(plan, x, y, rounds, seed)
            scores.append(evaluate_weights(frames, plan, weights)["auroc"])
        out[eps] = float(np.mean(scores))
    plan = StudyPlan(study="lab", sites=["pooled"], model=model, rounds=rounds, epsilon=1.0)
    out["non-private"] = float(evaluate_weights(frames, plan, _early_stopped(plan, x, y, rounds, 1))["auroc"])
    return out


def skewed_hospitals(frames: dict) -> dict:
    """Two hospitals split by age (under 60 / 60 and over) with a sensor shift at the second:
    its heart rate and temperature read high. Strongly non-IID in covariates and features."""
    import pandas as pd

    frame = pd.concat(list(frames.values()), ignore_index=True)
    young, old = frame[frame["age"] < 60].copy(), frame[frame["age"] >= 60].copy()
    for col in [c for c in old.columns if c.endswith("_heart_rate")]:
        old[col] += 25.0
    for col in [c for c in old.columns if c.endswith("_temperature")]:
        old[col] += 1.5
    return {"young": young.reset_index(drop=True), "old-shifted": old.reset_index(drop=True)}


def compare_strategy(sites: dict, strategy, *, rounds: int = 4, study: str,
                     hospitals: dict | None = None) -> tuple[float, dict]:
    """Run ``strategy`` over ``sites`` with the vetted DP job called directly (each site a
    ``LocalHospital`` keeping its accountant and local layers in memory; pass ``hospitals``
    to look at them afterwards); returns the mean norm of the sites' updates (client drift)
    and each site's test AUROC."""
    from datasites.jobs.cohort import split_rows
    from datasites.jobs.evaluation import auroc, predict
    from datasites.jobs.models import build_model, get_weights, model_inputs
    from datasites.jobs.site import LocalHospital, use_hospital
    from datasites.jobs.training import dp_train
    from federation import StudyPlan

    hospitals = {} if hospitals is None else hospitals
    for name in sites:
        hospitals.setdefault(name, LocalHospital(name, dry_run=False))
    plan = StudyPlan(study=study, sites=list(sites), strategy=strategy.name, rounds=rounds, epsilon=8.0,
                     prox_mu=getattr(strategy, "prox_mu", 0.1) or 0.1, lr=0.01, sample_rate=0.1, local_epochs=2)
    job = plan.job_plan()
    weights = get_weights(build_model(plan.model, seed=0))
    drift = []
    for _ in range(rounds):
        shared = {k: v for k, v in weights.items() if not k.startswith(strategy.local_layers())}
        results = _train_everywhere(sites, hospitals, shared, job)
        drift.append(np.mean([np.sqrt(sum(float(np.sum((r["weights"][k] - weights[k]) ** 2)) for k in r["weights"]))
                              for r in results.values()]))
        weights = strategy.aggregate(weights, results)
    aurocs = {}  # a simulation on data the lab holds: exact AUROC, not a site's noised release
    for n, f in sites.items():
        local = (hospitals[n].load(study, "state") or {}).get("local_layers", {})
        inputs, labels = model_inputs(split_rows(f, "test"), plan.model)
        aurocs[n] = auroc(labels, predict(plan.model, {**weights, **local}, inputs, seed=plan.seed))
    return float(np.mean(drift)), aurocs


ATTACKS = {"sign-flip": -1.0, "x-10": -10.0, "x50": 50.0, "nan": float("nan")}  # factor on the honest update


def iid_hospitals(frames: dict, n_sites: int, *, seed: int = 0) -> dict:
    """The pooled patients dealt at random into ``n_sites`` equal hospitals (each keeps its
    train/test split): alike on purpose, so that a site that differs is the attacker."""
    import pandas as pd

    frame = pd.concat(list(frames.values()), ignore_index=True)
    order = np.random.default_rng(seed).permutation(len(frame))
    return {f"site-{i + 1}": frame.iloc[np.sort(part)].reset_index(drop=True)
            for i, part in enumerate(np.array_split(order, n_sites))}


def byzantine_study(sites: dict, strategy, *, byzantine: str | None = None, attack: str | float = "x-10",
                    rounds: int = 8, study: str, model: str = "mlp", epsilon: float = 10.0, lr: float = 0.02,
                    sample_rate: float = 0.5, local_epochs: int = 5) -> tuple[float, list[dict]]:
    """Run ``strategy`` over ``sites`` with the vetted DP job called directly (as
    :func:`compare_strategy`), one site ``byzantine`` altering its reply after honest training:
    it sends ``global + factor * (weights - global)`` (``attack``: a name in ``ATTACKS`` or the
    factor). Returns the pooled test AUROC of the final model (exact: a simulation) and what
    the strategy quarantined each round. The defaults (large Poisson batches, the epsilon cap
    of a site) keep DP noise small enough that clean FedAvg is stable from run to run."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small MLP: one thread is faster than several on a shared machine
    try:
        return _byzantine_study(sites, strategy, byzantine=byzantine, attack=attack, rounds=rounds, study=study,
                                model=model, epsilon=epsilon, lr=lr, sample_rate=sample_rate,
                                local_epochs=local_epochs)
    finally:
        torch.set_num_threads(threads)


def _byzantine_study(sites, strategy, *, byzantine, attack, rounds, study, model, epsilon, lr, sample_rate,
                     local_epochs):
    from datasites.jobs.cohort import split_rows
    from datasites.jobs.evaluation import auroc, predict
    from datasites.jobs.models import build_model, get_weights, model_inputs
    from datasites.jobs.site import LocalHospital, use_hospital
    from datasites.jobs.training import dp_train
    from federation import StudyPlan

    factor = ATTACKS[attack] if isinstance(attack, str) else float(attack)
    hospitals = {name: LocalHospital(name, dry_run=False) for name in sites}
    plan = StudyPlan(study=study, sites=list(sites), model=model, strategy=strategy.name, rounds=rounds,
                     epsilon=epsilon, lr=lr, sample_rate=sample_rate, local_epochs=local_epochs,
                     prox_mu=getattr(strategy, "prox_mu", 0.1) or 0.1)
    job = {**plan.job_plan(), "prox_mu": strategy.prox_mu, "local_layers": list(strategy.local_layers())}
    weights = get_weights(build_model(plan.model, seed=plan.seed))
    quarantined = []
    for _ in range(rounds):
        shared = {k: v for k, v in weights.items() if not k.startswith(strategy.local_layers())}
        results = _train_everywhere(sites, hospitals, shared, job)
        if byzantine is not None:
            honest = results[byzantine]["weights"]
            results[byzantine] = {**results[byzantine], "weights": {
                k: (shared[k] + factor * (v - shared[k])).astype(np.float32) for k, v in honest.items()}}
        weights = strategy.aggregate(weights, results)
        quarantined.append(dict(strategy.quarantined))
    scores, labels = [], []
    for n, f in sites.items():
        local = (hospitals[n].load(study, "state") or {}).get("local_layers", {})
        inputs, y = model_inputs(split_rows(f, "test"), plan.model)
        scores.append(predict(plan.model, {**weights, **local}, inputs, seed=plan.seed))
        labels.append(y)
    return auroc(np.concatenate(labels), np.concatenate(scores)), quarantined


def _train_everywhere(sites: dict, hospitals: dict, shared: dict, job: dict) -> dict:
    """One round of the vetted DP job at every local hospital (its accountant kept in memory)."""
    from datasites.jobs.site import use_hospital
    from datasites.jobs.training import dp_train

    results = {}
    for name, frame in sites.items():
        with use_hospital(hospitals[name]):
            results[name] = dp_train(frame, shared, job)
    return results

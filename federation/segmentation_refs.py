"""Non-private references for the imaging study, trained with the data in one place.

A *simulation* by the data owners, like ``federation.baselines`` for sepsis: it answers
"what did DP cost?" with the same model, schedule and test cases as the study.
- ``pooled``: both centres' training cases together, no privacy;
- ``federated``: FedAvg over the centres with the study's rounds and local epochs, no privacy.
Without clipping and noise the best learning rate differs from DP-SGD's, so each reference
tries the study's rate, a half and a quarter of it and keeps the best on a validation part
of the training cases (the test cases are never used to choose). Dice is exact here (per
case, every centre's test cases together), never released.
"""

from __future__ import annotations

import numpy as np

from datasites.imaging_asset import IMAGING_ASSET
from datasites.jobs.models import get_weights, set_weights
from datasites.jobs.segmentation import (build_segmentation_model, dice_per_case, fit_segmentation,
                                         predict_labels)
from syft_policies.quiet import quiet

from .plan import StudyPlan
from .strategy import weighted_average

__all__ = ["centre_arrays", "pooled_reference", "federated_reference", "score_weights", "tuned", "warm_start",
           "REGION_NAMES"]

REGION_NAMES = ("whole_tumour", "tumour_core", "enhancing_tumour")
WARM_EPOCHS = 100


def centre_arrays(sites) -> dict[str, dict]:
    """Each centre's private asset, fetched by its own admin (simulation only)."""
    out = {}
    for site in sites:
        with quiet():
            out[site.spec.name] = site.admin().datasets[site.spec.dataset_name].assets[IMAGING_ASSET].data
    return out


def _train(arrays: dict) -> tuple[np.ndarray, np.ndarray]:
    return arrays["images"][~arrays["test"]], arrays["labels"][~arrays["test"]]


def _model(plan: StudyPlan, start: dict | None):
    model = build_segmentation_model(plan.model, seed=plan.seed)
    if start is not None:
        set_weights(model, start)
    return model


def pooled_reference(centres: dict[str, dict], plan: StudyPlan, start: dict | None = None) -> dict:
    """One model on every centre's training cases, as many epochs as the study trains, from
    the study's ``start`` weights."""
    parts = [_train(a) for a in centres.values()]
    model = _model(plan, start)
    fit_segmentation(model, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                     epochs=plan.rounds * plan.local_epochs, sample_rate=plan.sample_rate / len(parts),
                     lr=plan.lr, seed=plan.seed)
    return get_weights(model)


def federated_reference(centres: dict[str, dict], plan: StudyPlan, start: dict | None = None) -> dict:
    """FedAvg over the centres with the study's schedule and ``start``, without noise or clipping."""
    weights = get_weights(_model(plan, start))
    for r in range(plan.rounds):
        updates = {}
        for name, arrays in centres.items():
            model = _model(plan, weights)
            images, labels = _train(arrays)
            fit_segmentation(model, images, labels, epochs=plan.local_epochs, sample_rate=plan.sample_rate,
                             lr=plan.lr, seed=plan.seed + r)
            updates[name] = (get_weights(model), len(images))
        weights = weighted_average([u for u, _ in updates.values()], [n for _, n in updates.values()])
    return weights


def score_weights(centres: dict[str, dict], weights: dict, model: str = "unet2d", seed: int = 0) -> dict:
    """Exact mean Dice per region over every centre's test cases together."""
    net = build_segmentation_model(model, seed=seed)
    set_weights(net, weights)
    dice = np.concatenate([dice_per_case(predict_labels(net, a["images"][a["test"]]), a["labels"][a["test"]])
                           for a in centres.values()])
    return {name: float(dice[:, k].mean()) for k, name in enumerate(REGION_NAMES)}


def tuned(reference, centres: dict[str, dict], plan: StudyPlan, *, validation: float = 0.15,
          start: dict | None = None) -> dict:
    """``reference(centres, plan, start)`` at the study's learning rate, a half and a quarter
    of it; the weights that score best (whole-tumour Dice) on held-out training cases."""
    import dataclasses

    rng = np.random.default_rng(plan.seed)
    fit_part, check_part = {}, {}
    for name, arrays in centres.items():
        train = np.flatnonzero(~arrays["test"])
        held = rng.choice(train, size=max(1, int(len(train) * validation)), replace=False)
        test = np.zeros(len(arrays["test"]), bool)
        test[held] = True
        fit_part[name] = {**arrays, "test": arrays["test"] | test}  # held-out cases do not train
        check_part[name] = {**arrays, "test": test}
    best, best_score = None, -1.0
    for lr in (plan.lr, plan.lr / 2, plan.lr / 4):
        weights = reference(fit_part, dataclasses.replace(plan, lr=lr), start)
        score = score_weights(check_part, weights, plan.model, plan.seed)["whole_tumour"]
        if score > best_score:
            best, best_score = weights, score
    return best


def warm_start(mocks: list[dict], model: str, *, seed: int, epochs: int = WARM_EPOCHS, lr: float = 0.005,
               sample_rate: float = 0.1) -> dict:
    """Weights trained, without noise, on the centres' published mocks: public data, so no
    epsilon. The mocks are independent phantoms from the same generator as the private
    scans (never derived from them), which is why DP fine-tuning from here needs few,
    cheap steps; with a real mock that differs from the scans, expect less from it."""
    net = build_segmentation_model(model, seed=seed)
    if epochs <= 0:
        return get_weights(net)
    images = np.concatenate([m["images"] for m in mocks])
    labels = np.concatenate([m["labels"] for m in mocks])
    with quiet():
        fit_segmentation(net, images, labels, epochs=epochs, sample_rate=sample_rate, lr=lr, seed=seed)
    return get_weights(net)

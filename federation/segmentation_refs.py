"""Non-private references for the imaging study, trained with the data in one place.

A *simulation* by the data owners, like ``federation.baselines`` for sepsis: it answers
"what did DP cost?" with the same model, schedule and test cases as the study.
- ``pooled``: both centres' training cases together, no privacy;
- ``federated``: FedAvg over the centres with the study's rounds and local epochs, no privacy.
Dice is exact here (per case, every centre's test cases together), never released.
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

__all__ = ["centre_arrays", "pooled_reference", "federated_reference", "score_weights", "REGION_NAMES"]

REGION_NAMES = ("whole_tumour", "tumour_core", "enhancing_tumour")


def centre_arrays(sites) -> dict[str, dict]:
    """Each centre's private asset, fetched by its own admin (simulation only)."""
    out = {}
    for site in sites:
        with quiet():
            out[site.spec.name] = site.admin().datasets[site.spec.dataset_name].assets[IMAGING_ASSET].data
    return out


def _train(arrays: dict) -> tuple[np.ndarray, np.ndarray]:
    return arrays["images"][~arrays["test"]], arrays["labels"][~arrays["test"]]


def pooled_reference(centres: dict[str, dict], plan: StudyPlan) -> dict:
    """One model on every centre's training cases, as many epochs as the study trains."""
    parts = [_train(a) for a in centres.values()]
    model = build_segmentation_model(plan.model, seed=plan.seed)
    fit_segmentation(model, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                     epochs=plan.rounds * plan.local_epochs, sample_rate=plan.sample_rate / len(parts),
                     lr=plan.lr, seed=plan.seed)
    return get_weights(model)


def federated_reference(centres: dict[str, dict], plan: StudyPlan) -> dict:
    """FedAvg over the centres with the study's schedule, without noise or clipping."""
    weights = get_weights(build_segmentation_model(plan.model, seed=plan.seed))
    for r in range(plan.rounds):
        updates = {}
        for name, arrays in centres.items():
            model = build_segmentation_model(plan.model, seed=plan.seed)
            set_weights(model, weights)
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

"""Lab 6's experiment: what DP-SGD costs a U-Net, in Dice, at several epsilons.

Local simulation on the two synthetic imaging centres (no datasites): both centres'
training slices pooled, the study's model and schedule, noise calibrated by Opacus' RDP
accountant for each epsilon, and exact Dice on the test slices (a lab, not a release).
"""

from __future__ import annotations

import numpy as np

from .network import fast_mode

__all__ = ["imaging_sizes", "dice_against_epsilon"]

REGIONS = ("whole_tumour", "tumour_core", "enhancing_tumour")


def imaging_sizes() -> dict:
    """Cases per centre and epochs: small in fast mode, teaching-sized otherwise."""
    return {"cases": 80, "epochs": 4} if fast_mode() else {"cases": 200, "epochs": 8}


def _slices(cases: int, seed: int):
    from synthetic_data.imaging import CENTRES, axial_slices, generate_centre, split_cases

    parts = []
    for i, profile in enumerate(CENTRES.values()):
        cohort = generate_centre(profile, cases, seed=seed + 1000 * i)
        images, labels = axial_slices(cohort)
        parts.append((images, labels, np.asarray(split_cases(cohort.case_ids, seed=2024), bool)))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    test = np.concatenate([p[2] for p in parts])
    return images, labels, test


def dice_against_epsilon(epsilons, *, cases: int, epochs: int, seed: int = 0, sample_rate: float = 0.5,
                         max_grad_norm: float = 1.0, lr: float = 0.005, delta: float = 1e-5) -> dict:
    """``{epsilon: {region: Dice}, "non-private": {...}}`` on the pooled test slices."""
    from opacus.accountants.utils import get_noise_multiplier

    from datasites.jobs.segmentation import build_segmentation_model, dice_per_case, fit_segmentation, predict_labels
    from privacy.accounting import schedule

    images, labels, test = _slices(cases, seed)
    steps_per_epoch, rate = schedule(sample_rate)
    out = {}
    for eps in [*epsilons, "non-private"]:
        model = build_segmentation_model("unet2d", seed=seed)
        noise = None if eps == "non-private" else float(get_noise_multiplier(
            target_epsilon=eps, target_delta=delta, sample_rate=rate, steps=epochs * steps_per_epoch,
            accountant="rdp", epsilon_tolerance=0.01))
        fit_segmentation(model, images[~test], labels[~test], epochs=epochs, sample_rate=sample_rate, lr=lr,
                         noise_multiplier=noise, max_grad_norm=max_grad_norm if noise else None, seed=seed)
        dice = dice_per_case(predict_labels(model, images[test]), labels[test])
        out[eps] = {r: float(dice[:, k].mean()) for k, r in enumerate(REGIONS)}
    return out

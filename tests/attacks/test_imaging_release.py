"""Attacks on an imaging centre through its vetted segmentation jobs (rated low risk).

The researcher chooses the plan, the weights and how often to call. Crafted weights turn
an exact Dice into a question about the scans (a model that marks every pixel as tumour
measures each case's tumour area), so every Dice must come back noised, paid and limited
by the plan; plain weights must never leave a centre whose study was approved with
secure aggregation.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from datasites.jobs.models import get_weights
from datasites.jobs.segmentation import build_segmentation_model
from federation import StudyPlan
from syft_policies.templates import medsyft_segment_evaluate, medsyft_segment_train

from .conftest import Attacker


@pytest.fixture(scope="module")
def centre(tmp_path_factory):
    from datasites import ensure_site_data, shipped_specs, start_site
    from federation.imaging import IMAGING_SPECS

    spec = dataclasses.replace(shipped_specs(IMAGING_SPECS)[0], imaging_cases=60)
    home = tmp_path_factory.mktemp("imaging-attacked")
    ensure_site_data([spec], home, seed=3)
    site = start_site(spec, home)
    yield site
    site.stop()


def _plan(study: str, **options) -> dict:
    return StudyPlan(study=study, sites=["utrecht-neuro", "x"], model="unet2d", dataset="brain-mri",
                     asset="axial_slices", rounds=1, epsilon=2.0, sample_rate=0.5, evaluate_every=0,
                     final_eval_epsilon=0.5, **options).job_plan()


def _everything_is_tumour() -> dict:
    """Weights whose prediction is oedema at every pixel: Dice then measures tumour area."""
    weights = {k: np.zeros_like(v) for k, v in get_weights(build_segmentation_model("unet2d")).items()}
    last = [k for k in weights if k.endswith("bias")][-1]
    weights[last][2] = 10.0  # class index 2 (oedema) wins everywhere
    return weights


def test_dice_of_crafted_weights_is_noised_paid_and_limited(centre):
    attacker = Attacker(centre)
    ledger = centre.ledger()
    greedy = {**_plan("seg-greedy"), "eval_epsilons": [0.25] * 200}
    attacker.submit(medsyft_segment_evaluate, limit=200, plan=greedy)
    outcome, message = attacker.run(medsyft_segment_evaluate, weights=_everything_is_tumour())
    assert outcome == "refused" and ledger.spent("brain-mri") == 0  # 200 looks exceed what the site allows

    plan = {**_plan("seg-oracle"), "eval_epsilons": [0.5, 0.5]}
    attacker.submit(medsyft_segment_evaluate, limit=5, plan=plan)
    replies = []
    for k in range(2):
        outcome, reply = attacker.run(medsyft_segment_evaluate, weights=_everything_is_tumour())
        assert outcome == "released", reply
        assert set(reply) == {"evaluation", "dice", "cases", "receipt"}  # means and a count: no per-case value
        assert ledger.spent("brain-mri") == pytest.approx(0.5 * (k + 1))
        replies.append(reply)
    assert replies[0]["dice"] != replies[1]["dice"]  # fresh secret noise each time: no exact answer to average
    outcome, message = attacker.run(medsyft_segment_evaluate, weights=_everything_is_tumour())
    assert outcome == "refused" and "planned 2 evaluations" in message
    assert ledger.spent("brain-mri") == pytest.approx(1.0)


def test_a_secure_study_never_releases_plain_weights(centre):
    attacker = Attacker(centre)
    before = centre.ledger().spent("brain-mri")
    plan = _plan("seg-secure", secure_aggregation=True, secagg_threshold=2)
    attacker.submit(medsyft_segment_train, limit=2, plan=plan)
    start = get_weights(build_segmentation_model("unet2d"))
    outcome, message = attacker.run(medsyft_segment_train, weights=start)
    assert outcome == "refused" and "only masked" in message
    assert centre.ledger().spent("brain-mri") == before  # refused before anything was paid

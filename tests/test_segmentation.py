"""The vetted DP segmentation jobs: BraTS regions and Dice, the U-Net under Opacus, DP-SGD
rounds through a hospital (accounting, one payment a round, retries, refusals) and the DP
Dice evaluation. A tiny synthetic stand-in for the imaging asset: 64x64 slices."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from datasites.jobs.models import get_weights
from datasites.jobs.segmentation import (BRATS_LABELS, REGIONS, SEG_MODELS, UNet2D, build_segmentation_model,
                                         dice_ce_loss, dice_per_case, dp_segmentation_evaluate,
                                         dp_segmentation_train, fit_segmentation, predict_labels, regions, to_index)
from datasites.jobs.site import LocalHospital, Refused, use_hospital
from datasites.jobs.training import ROUND_KEY


def blobs(n: int, *, size: int = 64, seed: int = 0, test_share: float = 0.25) -> dict:
    """A stand-in imaging asset: one tumour per case (10% healthy) at a random place, oedema
    (2) around an enhancing rim (4) around a necrotic core (1; 20% have only oedema), bright
    on FLAIR and T2, the rim on T1ce, the core dark on T1, in Gaussian noise; z-scored per case."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.normal(0, 0.5, (n, 4, size, size))
    labels = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        if rng.random() < 0.1:
            continue
        cy, cx = rng.uniform(size / 4, 3 * size / 4, 2)
        r = rng.uniform(size / 9, size / 5)
        d = np.hypot(yy - cy, xx - cx)
        labels[i][d < r] = 2
        if rng.random() < 0.8:
            labels[i][d < 0.6 * r] = 4
            labels[i][d < 0.35 * r] = 1
    images[:, 3] += 2.0 * (labels > 0)
    images[:, 2] += 1.5 * (labels > 0)
    images[:, 1] += 2.5 * (labels == 4)
    images[:, 0] -= 1.5 * (labels == 1)
    images = (images - images.mean(axis=(2, 3), keepdims=True)) / images.std(axis=(2, 3), keepdims=True)
    return {"images": images.astype(np.float32), "labels": labels, "test": rng.random(n) < test_share}


@pytest.fixture(scope="module")
def asset():
    return blobs(160, seed=3)


def seg_plan(study: str, **change) -> dict:
    plan = {"task": "segmentation", "study": study, "dataset": "axial_slices", "model": "unet2d", "rounds": 3,
            "local_epochs": 1, "lr": 0.01, "sample_rate": 0.1, "noise_multiplier": 1.0, "max_grad_norm": 1.0,
            "epsilon": 9.0, "delta": 1e-5, "prox_mu": 0.0, "local_layers": [], "seed": 0, "eval_epsilons": [1.0],
            "update_norm": None, "secure_aggregation": False}
    return {**plan, **change}


# ---- labels, regions and Dice ----------------------------------------------------------

def test_labels_become_class_indices_and_regions():
    labels = np.array([[0, 1], [2, 4]], np.uint8)
    assert to_index(labels).tolist() == [[0, 1], [2, 3]]
    for bad in (np.array([3], np.uint8), np.array([-1]), np.array([0.5])):
        with pytest.raises(ValueError):
            to_index(bad)
    wt, tc, et = regions(labels)
    assert wt.tolist() == [[False, True], [True, True]]
    assert tc.tolist() == [[False, True], [False, True]]
    assert et.tolist() == [[False, False], [False, True]]
    assert regions(np.zeros((5, 8, 8), np.uint8)).shape == (5, 3, 8, 8) and BRATS_LABELS == (0, 1, 2, 4)


def _reference_dice(pred: np.ndarray, true: np.ndarray) -> list[float]:
    """Dice of WT, TC, ET from sets of pixel coordinates, written without numpy masks."""
    out = []
    for members in ({1, 2, 4}, {1, 4}, {4}):
        a = {(i, j) for i, row in enumerate(pred.tolist()) for j, v in enumerate(row) if v in members}
        b = {(i, j) for i, row in enumerate(true.tolist()) for j, v in enumerate(row) if v in members}
        out.append(1.0 if not a and not b else 2 * len(a & b) / (len(a) + len(b)))
    return out


def _hand_made_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    empty = np.zeros((6, 6), np.uint8)
    tumour = empty.copy()
    tumour[1:5, 1:5] = 2
    tumour[2:4, 2:4] = 4
    tumour[2, 2] = 1
    elsewhere = empty.copy()
    elsewhere[5, :] = 4
    half = tumour.copy()
    half[:, 3:] = 0
    return [(empty, empty),          # both empty: 1 in every region
            (empty, tumour),         # nothing predicted: 0 where the truth has tumour
            (tumour, empty),         # a tumour predicted in a healthy slice: 0
            (tumour, tumour),        # perfect: 1
            (elsewhere, tumour),     # disjoint: 0
            (half, tumour),          # partial overlap
            (np.where(tumour == 4, 1, tumour).astype(np.uint8), tumour)]  # right TC, wrong ET


def test_dice_per_case_matches_a_reference_on_hand_made_masks():
    cases = _hand_made_cases()
    got = dice_per_case(np.stack([p for p, _ in cases]), np.stack([t for _, t in cases]))
    expected = np.array([_reference_dice(p, t) for p, t in cases])
    assert got.shape == (len(cases), 3) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert got[0].tolist() == [1, 1, 1] and got[1].tolist() == [0, 0, 0] and got[2].tolist() == [0, 0, 0]
    assert got[3].tolist() == [1, 1, 1] and got[4].tolist() == [0, 0, 0]
    assert 0 < got[5, 0] < 1 and got[6, 1] == 1 and got[6, 2] == 0


# ---- the model and the loss under Opacus -----------------------------------------------

def test_the_unet_is_opacus_compatible_and_gives_logits_per_pixel():
    from opacus.validators import ModuleValidator

    model = build_segmentation_model("unet2d", seed=5)
    assert isinstance(model, UNet2D) and set(SEG_MODELS) == {"unet2d"}
    assert ModuleValidator.validate(model, strict=False) == []
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    logits = model(torch.zeros(3, 4, 64, 64))
    assert logits.shape == (3, 4, 64, 64)
    again = get_weights(build_segmentation_model("unet2d", seed=5))
    assert all(np.array_equal(v, again[k]) for k, v in get_weights(model).items())  # public seed, same start
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.zeros(1, 4, 30, 30))
    with pytest.raises(ValueError, match="unknown segmentation model"):
        build_segmentation_model("mlp", seed=0)


def test_the_loss_is_a_mean_of_per_patient_terms_and_opacus_gradients_are_per_patient(asset):
    """Per-sample clipping bounds one patient only if each sample's gradient is that of its own
    term: the batch loss is the mean of the single-case losses, and Opacus' per-sample
    gradients equal the gradients of each case's loss computed alone."""
    from opacus import GradSampleModule

    x = torch.from_numpy(asset["images"][:3])
    y = torch.from_numpy(to_index(asset["labels"][:3]))
    model = build_segmentation_model("unet2d", seed=1)
    with torch.no_grad():
        alone = [float(dice_ce_loss(model(x[i:i + 1]), y[i:i + 1])) for i in range(3)]
        assert float(dice_ce_loss(model(x), y)) == pytest.approx(sum(alone) / 3, rel=1e-5)
    per_case = []
    for i in range(3):
        model.zero_grad()
        dice_ce_loss(model(x[i:i + 1]), y[i:i + 1]).backward()
        per_case.append({n: p.grad.clone() for n, p in model.named_parameters()})
    wrapped = GradSampleModule(model)
    wrapped.zero_grad()
    with warnings.catch_warnings():  # the first layer's input needs no gradient: expected
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        dice_ce_loss(wrapped(x), y).backward()
    for name, p in model.named_parameters():
        for i in range(3):
            torch.testing.assert_close(p.grad_sample[i], per_case[i][name], rtol=1e-4, atol=1e-6)
    wrapped._close()


def test_the_tiny_unet_learns_the_blobs_without_noise(asset):
    """Non-private sanity check: the architecture learns, so DP results measure the privacy
    cost, not a broken model."""
    train, test = ~asset["test"], asset["test"]
    model = build_segmentation_model("unet2d", seed=0)
    before = dice_per_case(predict_labels(model, asset["images"][test]), asset["labels"][test]).mean(0)
    fit_segmentation(model, asset["images"][train], asset["labels"][train], epochs=5, sample_rate=0.1, lr=0.01)
    after = dice_per_case(predict_labels(model, asset["images"][test]), asset["labels"][test]).mean(0)
    assert after[0] > 0.6 and after[0] > before[0] + 0.2, (before, after)
    assert min(after) > 0.5, after  # core and enhancing rim too


# ---- the training job ------------------------------------------------------------------

def _independent_epsilon(steps: int, plan: dict, kind: str) -> float:
    from opacus.accountants import PRVAccountant, RDPAccountant

    accountant = RDPAccountant() if kind == "rdp" else PRVAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=plan["noise_multiplier"], sample_rate=plan["sample_rate"])
    return float(accountant.get_epsilon(plan["delta"]))


def test_a_dp_round_is_accounted_paid_once_bounded_and_fetched_again_unpaid(asset):
    """Through a hospital: the reply's epsilon is an independent RDP accountant's after the
    steps taken (PRV close and below it), the round is paid once, a repeat of the round
    returns the same reply unpaid, the next round continues the accountant, the update is
    no longer than the plan's update_norm, and no loss leaves."""
    site = LocalHospital("imaging-site", dry_run=False)
    plan = seg_plan("seg-round", update_norm=0.05)
    start = get_weights(build_segmentation_model("unet2d", seed=plan["seed"]))
    with use_hospital(site):
        first = dp_segmentation_train(asset, {**start, ROUND_KEY: 1}, plan)
        again = dp_segmentation_train(asset, {**start, ROUND_KEY: 1}, plan)
        assert again is first or all(np.array_equal(first["weights"][k], again["weights"][k]) for k in start)
        assert [r for _, r in site.debits] == ["seg-round/round-1"]
        steps = first["metrics"]["steps"]
        assert steps == 10 and first["round"] == 1 and first["num_samples"] == int((~asset["test"]).sum())
        rdp = _independent_epsilon(steps, plan, "rdp")
        assert first["epsilon"] == pytest.approx(rdp, rel=1e-6) == first["receipt"]["epsilon"]
        assert site.debits[0][0] == pytest.approx(rdp, rel=1e-6)
        prv = _independent_epsilon(steps, plan, "prv")
        assert 0.6 * rdp < prv <= rdp * 1.01, (prv, rdp)
        assert not {"loss", "losses"} & (set(first) | set(first["metrics"]))
        moved = np.sqrt(sum(np.sum((first["weights"][k].astype(float) - start[k]) ** 2) for k in start))
        assert 0.99 * 0.05 < moved <= 0.05 * (1 + 1e-5)

        second = dp_segmentation_train(asset, {**first["weights"], ROUND_KEY: 2}, plan)
        assert second["epsilon"] == pytest.approx(_independent_epsilon(2 * steps, plan, "rdp"), rel=1e-6)
        assert second["receipt"]["epsilon"] == pytest.approx(second["epsilon"] - first["epsilon"])
        assert [r for _, r in site.debits] == ["seg-round/round-1", "seg-round/round-2"]
        with pytest.raises(Refused, match="already ran round 2"):
            dp_segmentation_train(asset, {**start, ROUND_KEY: 1}, plan)


def test_fedbn_keeps_each_centres_norm_layers_at_the_centre(asset):
    """With local ``norm`` layers the reply carries only the shared layers; the centre keeps
    its own GroupNorm weights between rounds, whatever the researcher sends, and evaluates
    the global model with them."""
    site = LocalHospital("fedbn-site", dry_run=False)
    plan = seg_plan("seg-fedbn", local_layers=["norm"], eval_epsilons=[1.0, 1.0])
    start = get_weights(build_segmentation_model("unet2d", seed=plan["seed"]))
    norms = sorted(k for k in start if ".norm" in k)
    assert len(norms) == 20 and all(k.rsplit(".", 2)[-2].startswith("norm") for k in norms)
    with use_hospital(site):
        first = dp_segmentation_train(asset, {**start, ROUND_KEY: 1}, plan)
        assert set(first["weights"]) == set(start) - set(norms)
        kept = site.load("seg-fedbn", "state")["local_layers"]
        assert set(kept) == set(norms) and any(not np.allclose(kept[k], start[k]) for k in norms)
        forged = {k: np.full_like(v, 7.0) for k, v in start.items() if k in norms}
        dp_segmentation_train(asset, {**first["weights"], **forged, ROUND_KEY: 2}, plan)
        after = site.load("seg-fedbn", "state")["local_layers"]
        assert all(np.abs(after[k] - 7.0).max() > 1 for k in norms if k.endswith("weight"))  # its own, not the forged
        shared = {k: v for k, v in start.items() if k not in norms}
        evaluated = dp_segmentation_evaluate(asset, {**shared, **forged}, plan)
    assert evaluated["evaluation"] == 1 and set(evaluated["dice"]) == set(REGIONS)


def test_non_finite_or_foreign_weights_are_refused_before_any_debit(asset):
    site = LocalHospital("nan-site", dry_run=False)
    plan = seg_plan("seg-nan")
    start = get_weights(build_segmentation_model("unet2d", seed=0))
    name = next(iter(start))
    with use_hospital(site):
        for bad, words in [({name: start[name] * np.nan}, "finite"), ({name: start[name][:1]}, "shape"),
                           ({"lstm.weight": np.zeros(3)}, "does not have")]:
            with pytest.raises(ValueError, match=words):
                dp_segmentation_train(asset, bad, plan)
    assert site.debits == [] and site.load("seg-nan", "state") is None


def test_a_round_that_diverges_is_paid_but_releases_nothing(asset):
    site = LocalHospital("diverge-site", dry_run=False)
    plan = seg_plan("seg-diverge")
    huge = {k: v * 0 + 3e38 for k, v in get_weights(build_segmentation_model("unet2d", seed=0)).items()}
    with use_hospital(site), pytest.raises(Refused, match="diverged here"):
        dp_segmentation_train(asset, huge, plan)
    assert site.load("seg-diverge", "state")["reply"] is None and len(site.debits) == 1


@pytest.mark.parametrize("change, words", [
    ({"model": "mlp"}, "model 'mlp'"), ({"task": "sepsis"}, "segmentation plans"),
    ({"noise_multiplier": 0.1}, "noise_multiplier"), ({"eval_epsilons": [9.0]}, "evaluation's epsilon"),
    ({"epsilon": 0.5}, "exceed this study's epsilon"),
])
def test_plans_outside_the_bounds_are_refused_unpaid(asset, change, words):
    site = LocalHospital("plan-site", dry_run=False)
    with use_hospital(site):
        with pytest.raises(Refused, match=words):
            dp_segmentation_train(asset, {}, seg_plan("seg-plan", **change))
        if "epsilon" not in change:
            with pytest.raises(Refused, match=words):
                dp_segmentation_evaluate(asset, {}, seg_plan("seg-plan", **change))
    assert site.debits == []


def test_a_secure_plan_trains_and_evaluates_only_masked(asset):
    """Under secure aggregation the plain job refuses, and evaluation waits for an agreed
    secure round (its keys mask the Dice sums); both before anything is paid."""
    site = LocalHospital("secure-plan-site", dry_run=False)
    with use_hospital(site):
        with pytest.raises(Refused, match="only masked"):
            dp_segmentation_train(asset, {}, seg_plan("seg-secure", secure_aggregation=True))
        weights = get_weights(build_segmentation_model("unet2d", seed=0))
        with pytest.raises(Refused, match="after a secure round"):
            dp_segmentation_evaluate(asset, weights, seg_plan("seg-secure", secure_aggregation=True))
    assert site.debits == []


# ---- the evaluation job ----------------------------------------------------------------

def test_the_evaluation_releases_noised_means_at_the_stated_scale(asset):
    """Only noised means, a noised count and a receipt leave; the noise scale is the one
    the epsilon calls for (about 4 / epsilon: four numbers, each moved at most 1 by a
    case), and repeated releases spread as much as that scale says."""
    repeats, epsilon = 60, 1.0
    site = LocalHospital("eval-site", dry_run=False)
    plan = seg_plan("seg-eval", eval_epsilons=[epsilon] * repeats)
    model = build_segmentation_model("unet2d", seed=plan["seed"])
    weights = get_weights(model)
    test = asset["test"]
    exact = dice_per_case(predict_labels(model, asset["images"][test]), asset["labels"][test])
    n = len(exact)
    with use_hospital(site):
        replies = [dp_segmentation_evaluate(asset, weights, plan) for _ in range(repeats)]
        with pytest.raises(Refused, match=f"planned {repeats} evaluations"):
            dp_segmentation_evaluate(asset, weights, plan)
    assert len(site.debits) == repeats and all(e == epsilon for e, _ in site.debits)
    first = replies[0]
    assert set(first) == {"evaluation", "dice", "cases", "receipt"} and set(first["dice"]) == set(REGIONS)
    scale = first["receipt"]["scale"]
    assert scale == pytest.approx(4 / epsilon, rel=1e-6) and first["receipt"]["epsilon"] == epsilon
    assert first["receipt"]["delta"] == 0 and "sensitivity" in first["receipt"]
    counts = np.array([r["cases"] for r in replies])
    assert 0.55 * scale < np.mean(np.abs(counts - n)) < 1.5 * scale  # discrete Laplace: E|noise| ~ scale
    for k, region in enumerate(REGIONS):
        errors = np.array([r["dice"][region] for r in replies]) - exact[:, k].mean()
        assert 0.3 * scale / n < np.mean(np.abs(errors)) < 3 * scale / n, region
        assert abs(np.median(errors)) < 0.5 * scale / n + 0.05, region  # centred on the exact mean


def test_an_evaluation_is_fetched_again_by_its_round_tag_unpaid(asset):
    site = LocalHospital("eval-tag-site", dry_run=False)
    plan = seg_plan("seg-eval-tag", eval_epsilons=[0.5, 0.5])
    weights = get_weights(build_segmentation_model("unet2d", seed=0))
    with use_hospital(site):
        first = dp_segmentation_evaluate(asset, {**weights, ROUND_KEY: 1}, plan)
        assert dp_segmentation_evaluate(asset, {**weights, ROUND_KEY: 1}, plan) == first
        assert len(site.debits) == 1
        with pytest.raises(ValueError, match="finite"):
            dp_segmentation_evaluate(asset, {k: v * np.nan for k, v in weights.items()}, plan)
        assert len(site.debits) == 1
        second = dp_segmentation_evaluate(asset, {**weights, ROUND_KEY: 2}, plan)
    assert (first["evaluation"], second["evaluation"]) == (1, 2)
    assert [r for _, r in site.debits] == ["seg-eval-tag/evaluation-1", "seg-eval-tag/evaluation-2"]


def test_the_asset_is_checked(asset):
    broken = [{**asset, "labels": np.where(asset["labels"] == 4, 3, asset["labels"]).astype(np.uint8)},
              {**asset, "test": asset["test"].astype(int)}, {k: v for k, v in asset.items() if k != "test"},
              {**asset, "images": asset["images"][:, :3]}]
    for bad in broken:
        with use_hospital(LocalHospital("asset-site", dry_run=False)) as site, pytest.raises(ValueError):
            dp_segmentation_train(bad, {}, seg_plan("seg-asset"))
        assert site.debits == []

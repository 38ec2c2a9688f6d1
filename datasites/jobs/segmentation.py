"""DP brain-tumour segmentation at an imaging centre: the vetted training and evaluation jobs.

The asset is one axial MRI slice per case (so one sample is one patient): ``{"images":
float32 [N, 4, H, W] (t1, t1ce, t2, flair, z-scored per case), "labels": uint8 [N, H, W]
(BraTS: 0 background, 1 necrotic core, 2 oedema, 4 enhancing), "test": bool [N]}``.

- ``dp_segmentation_train``: one federated round of DP-SGD on the non-test cases, exactly as
  ``training.dp_train`` does it for sepsis (Opacus, Poisson sampling and Gaussian noise from
  a secret generator, the site's RDP accountant continued, the round paid once before any
  step). It returns weights, the case count and a privacy receipt; never a loss, never a
  per-case number.
- ``dp_segmentation_evaluate``: Dice of the researcher's weights on the test cases, released
  only as noised means per BraTS region (whole tumour, tumour core, enhancing tumour) and a
  noised case count (OpenDP, pure DP), each call paid from the plan's ``eval_epsilons``.

The model is a small 2D U-Net with GroupNorm (BatchNorm mixes samples in a batch, which
per-sample clipping cannot bound). Nothing in the plan or the weights is trusted: both are
checked before anything is paid.
"""

from __future__ import annotations

import math
import time
import warnings
from functools import lru_cache

import numpy as np
import torch

from privacy.accounting import epsilon_spent, history_key, merged_history, schedule
from privacy.bounds import PlanBounds, evaluation_schedule, plan_problems

from .models import get_weights, is_local, set_weights
from .receipt import receipt
from .site import Refused, hospital
from .training import PLAN_KEYS, ROUND_KEY, _make_private, bounded_update, secret_generator

__all__ = ["BRATS_LABELS", "REGIONS", "SEG_MODELS", "UNet2D", "build_segmentation_model", "to_index", "regions",
           "dice_ce_loss", "dice_per_case", "predict_labels", "fit_segmentation", "dp_segmentation_train",
           "dp_segmentation_evaluate", "segmentation_round", "noised_dice", "check_imaging_asset"]

BRATS_LABELS = (0, 1, 2, 4)
# BraTS' evaluation regions: whole tumour, tumour core, enhancing tumour (the labels each holds).
REGIONS = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
MIN_TRAIN_CASES = 20
_INDEX = np.full(256, -1, dtype=np.int64)
_INDEX[list(BRATS_LABELS)] = np.arange(len(BRATS_LABELS))


def to_index(labels: np.ndarray) -> np.ndarray:
    """BraTS labels (0, 1, 2, 4) as class indices 0..3; any other value is refused."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() > 255)):
        raise ValueError(f"labels must be whole numbers in {BRATS_LABELS}")
    index = _INDEX[labels]
    if (index < 0).any():  # which values, and where, stay at the site: the message may reach a researcher
        raise ValueError(f"labels must be BraTS values {BRATS_LABELS}; the asset holds others")
    return index


def regions(labels: np.ndarray) -> np.ndarray:
    """Boolean masks of WT, TC and ET: shape ``[..., 3, H, W]`` for labels ``[..., H, W]``."""
    labels = np.asarray(labels)
    return np.stack([np.isin(labels, members) for members in REGIONS.values()], axis=-3)


def dice_per_case(pred_labels: np.ndarray, true_labels: np.ndarray) -> np.ndarray:
    """Dice of each case's WT, TC and ET (``[N, 3]``, float64); 1 when both masks are empty
    (a correct "no tumour here"), 0 when exactly one is."""
    pred, true = regions(pred_labels), regions(true_labels)
    if pred.shape != true.shape or pred.ndim != 4:
        raise ValueError(f"expected two label arrays [N, H, W] of one shape, got {pred.shape[:-3]} and "
                         f"{true.shape[:-3]}")
    overlap = (pred & true).sum(axis=(-2, -1)).astype(np.float64)
    total = (pred.sum(axis=(-2, -1)) + true.sum(axis=(-2, -1))).astype(np.float64)
    return np.where(total == 0, 1.0, 2 * overlap / np.maximum(total, 1))


# ---- the model -------------------------------------------------------------------------

def _block(cin: int, cout: int) -> torch.nn.Sequential:
    """Two 3x3 convolutions, each with GroupNorm (per-sample statistics) and ReLU. The norm
    layers are named ``norm*``, so FedBN keeps them at each centre (scanners differ)."""
    from collections import OrderedDict

    def norm(c):
        return torch.nn.GroupNorm(math.gcd(4, c), c)
    return torch.nn.Sequential(OrderedDict([
        ("conv1", torch.nn.Conv2d(cin, cout, 3, padding=1)), ("norm1", norm(cout)), ("relu1", torch.nn.ReLU()),
        ("conv2", torch.nn.Conv2d(cout, cout, 3, padding=1)), ("norm2", norm(cout)), ("relu2", torch.nn.ReLU())]))


class UNet2D(torch.nn.Module):
    """A small 2D U-Net: ``depth`` resolutions with ``base * 2**level`` channels, max-pool
    down, nearest-neighbour upsampling (no transposed convolution, which Opacus has no
    per-sample gradients for), skip connections, 1x1 convolution to ``classes`` logits."""

    def __init__(self, in_channels: int = 4, classes: int = 4, base: int = 8, depth: int = 3):
        super().__init__()
        if depth < 1 or base < 1:
            raise ValueError("depth and base must be positive")
        widths = [base * 2**level for level in range(depth)]
        self.down = torch.nn.ModuleList([_block(c_in, c_out)
                                         for c_in, c_out in zip([in_channels, *widths[:-1]], widths)])
        self.up = torch.nn.ModuleList([_block(widths[level] + widths[level + 1], widths[level])
                                       for level in reversed(range(depth - 1))])
        self.head = torch.nn.Conv2d(widths[0], classes, 1)
        self.factor = 2 ** (depth - 1)

    def forward(self, x):
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"image height and width must be multiples of {self.factor}")
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else torch.nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"), skip], 1))
        return self.head(x)


SEG_MODELS = {"unet2d": UNet2D}


def build_segmentation_model(name: str, *, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised segmentation model; the same ``seed`` gives the same weights."""
    if name not in SEG_MODELS:
        raise ValueError(f"unknown segmentation model {name!r}; choose one of {sorted(SEG_MODELS)}")
    torch.manual_seed(seed)
    return SEG_MODELS[name]()


def predict_labels(model: torch.nn.Module, images: np.ndarray, *, batch: int = 32) -> np.ndarray:
    """The model's BraTS label (0, 1, 2, 4) per pixel: ``[N, H, W]`` uint8."""
    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            out.append(model(torch.from_numpy(images[start:start + batch])).argmax(1).numpy())
    index = np.concatenate(out) if out else np.zeros((0, *images.shape[-2:]), np.int64)
    return np.asarray(BRATS_LABELS, np.uint8)[index]


# ---- the loss and the DP-SGD loop ------------------------------------------------------

def dice_ce_loss(logits: torch.Tensor, target_index: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """Mean over samples of (1 - soft Dice over the tumour classes 1..3) + pixel cross-entropy.

    Each sample's term depends on that sample alone (Dice is computed per sample, not over
    the batch), so Opacus' per-sample gradients are those of one patient and clipping them
    bounds what one patient can move. ``smooth`` keeps a class absent from both prediction
    and truth near Dice 1 (and the gradient finite)."""
    probs = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(target_index, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    overlap = (probs * onehot)[:, 1:].sum(dim=(2, 3))
    sizes = (probs + onehot)[:, 1:].sum(dim=(2, 3))
    dice = (2 * overlap + smooth) / (sizes + smooth)  # [B, tumour classes]
    cross_entropy = torch.nn.functional.cross_entropy(logits, target_index, reduction="none").mean(dim=(1, 2))
    return ((1 - dice.mean(dim=1)) + cross_entropy).mean()


def fit_segmentation(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, *, epochs: int,
                     sample_rate: float, lr: float, noise_multiplier: float | None = None,
                     max_grad_norm: float | None = None, accountant: list | None = None, prox_mu: float = 0.0,
                     anchor: dict | None = None, seed: int = 0) -> dict:
    """Train ``model`` in place on ``images`` ``[N, 4, H, W]`` and BraTS ``labels`` ``[N, H, W]``
    with Adam and :func:`dice_ce_loss`; DP-SGD when ``noise_multiplier`` is given, plain
    training (non-private baselines) otherwise. The same schedule and randomness as
    ``training.fit``: ``round(1/sample_rate)`` steps an epoch; under DP-SGD Poisson batches
    and noise from :func:`training.secret_generator`, never from ``seed``. Returns
    ``{"steps", "loss" (mean training loss, never released by the jobs), "seconds"}`` and,
    under DP-SGD, the continued ``accountant`` history."""
    from opacus.data_loader import DPDataLoader

    torch.manual_seed(seed)
    private = noise_multiplier is not None
    generator = secret_generator() if private else torch.Generator().manual_seed(seed)
    data = torch.utils.data.TensorDataset(torch.from_numpy(np.asarray(images, np.float32)),
                                          torch.from_numpy(to_index(labels)))
    steps_per_epoch, rate = schedule(sample_rate)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if private:
        if max_grad_norm is None or not max_grad_norm > 0:
            raise ValueError("DP-SGD needs a positive max_grad_norm (the per-sample clipping bound)")
        loader = DPDataLoader(data, sample_rate=rate, generator=generator)
        engine, trained, optimizer, loader = _make_private(
            model, optimizer, loader, generator=generator, noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm, history=accountant or [])
    else:
        batch = max(1, round(len(data) / steps_per_epoch))
        loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, generator=generator)
        trained = model
    anchors = None
    if prox_mu and anchor:  # FedProx's pull to the global model: no data, no privacy cost
        anchors = [(p, torch.from_numpy(np.asarray(anchor[n], dtype=np.float32)))
                   for n, p in model.named_parameters() if n in anchor]
    losses, steps = [], 0
    t0 = time.perf_counter()
    trained.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            if len(x):
                loss = dice_ce_loss(trained(x), y)
                with warnings.catch_warnings():  # Opacus' hooks on a first layer whose input needs no grad
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    loss.backward()
                losses.append(float(loss.detach()))
            elif private:  # an empty Poisson batch still takes its step: noise only, as accounted
                for p in trained.parameters():
                    if p.requires_grad:
                        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
            optimizer.step()
            steps += 1
            if anchors:
                with torch.no_grad():
                    for p, a in anchors:
                        p.sub_(lr * prox_mu * (p - a))
    result = {"steps": steps, "loss": float(np.mean(losses)) if losses else math.nan,
              "seconds": time.perf_counter() - t0}
    if private:
        result["accountant"] = [list(h) for h in engine.accountant.history]
        trained.remove_hooks()
    return result


# ---- the vetted jobs -------------------------------------------------------------------

def check_imaging_asset(asset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images, labels, test)`` of an imaging asset, its shapes, values and types checked."""
    if not isinstance(asset, dict) or not {"images", "labels", "test"} <= set(asset):
        raise ValueError("the imaging asset is a dict with 'images', 'labels' and 'test'")
    images = np.asarray(asset["images"], dtype=np.float32)
    labels, test = np.asarray(asset["labels"]), np.asarray(asset["test"])
    if images.ndim != 4 or images.shape[1] != 4 or labels.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError("expected images [N, 4, H, W] and labels [N, H, W] (sizes not repeated here: N is the site's)")
    if test.dtype != bool or test.shape != (len(images),):
        raise ValueError("'test' must be a boolean flag per case")
    if not np.isfinite(images).all():
        raise ValueError("the images hold NaN or infinite values")
    to_index(labels)
    return images, labels, test


def _check_plan(plan: dict) -> None:
    missing = [k for k in PLAN_KEYS if k not in plan]
    if missing:
        raise ValueError(f"the study plan lacks {missing}")
    if plan.get("task", "segmentation") != "segmentation":
        raise Refused(f"this job runs segmentation plans, not {plan.get('task')!r}")
    # privacy.bounds lists the sepsis models as the default allowed ones; every other bound
    # is the same for a U-Net, so the widest bounds are applied with the model list swapped
    # for the segmentation models: a sepsis model name is refused here, and vice versa there.
    problems = plan_problems(plan, PlanBounds(models=tuple(SEG_MODELS)))
    if problems:
        raise Refused("the plan is outside what this site allows: " + "; ".join(problems))


def dp_segmentation_train(asset, weights: dict, plan: dict) -> dict:
    """One federated round at this imaging centre, released as plain weights (a study
    without secure aggregation). A plan approved with secure aggregation trains only
    through ``secure_round.secure_train``, which never lets the plain weights out."""
    if plan.get("secure_aggregation"):
        raise Refused("this study was approved with secure aggregation: its updates leave the site only masked")
    return segmentation_round(asset, weights, plan)


def segmentation_round(asset, weights: dict, plan: dict) -> dict:
    """The round itself (shared by the plain and the securely aggregated paths): DP-SGD on
    the non-test cases from the global ``weights``. Same rules as ``training.train_round``: refuses past ``plan["rounds"]``
    or ``plan["epsilon"]``; the round is paid once (reference ``<study>/round-<r>``) before
    any step; ``weights`` may carry ``ROUND_KEY``, and a repeat of the last round returns its
    reply again, unpaid. Weights that are malformed or not finite are refused before the
    debit; a round whose result is not finite is paid but never released."""
    _check_plan(plan)
    weights = dict(weights)
    wanted = weights.pop(ROUND_KEY, None)
    images, labels, test = check_imaging_asset(asset)
    site = hospital()
    state = site.load(plan["study"], "state") or {}
    last = int(state.get("last_round", state.get("rounds_done", 0)))
    if wanted is not None:
        if isinstance(wanted, bool) or not isinstance(wanted, int) or not 1 <= wanted <= plan["rounds"]:
            raise Refused(f"the round must be a whole number from 1 to {plan['rounds']}")
        if wanted == last and state.get("reply") is not None:
            return state["reply"]  # the same reply again: nothing new leaves, nothing is paid
        if wanted <= last:
            raise Refused(f"this site already ran round {last}; round {wanted} cannot run again")
    train = ~test
    if train.sum() < MIN_TRAIN_CASES:
        raise ValueError(f"fewer than {MIN_TRAIN_CASES} training cases at this site: DP-SGD would be all noise")
    rounds_done, accountant = int(state.get("rounds_done", 0)), [tuple(h) for h in state.get("accountant", [])]
    spent, local = float(state.get("epsilon", 0.0)), tuple(plan["local_layers"])
    local_layers = dict(state.get("local_layers", {}))
    if rounds_done >= plan["rounds"]:
        raise Refused(f"study {plan['study']} planned {plan['rounds']} rounds and all have run here")
    model = build_segmentation_model(plan["model"], seed=plan["seed"])
    set_weights(model, weights)  # shapes and finiteness checked before anything is paid
    set_weights(model, local_layers)  # FedBN: this centre's own norm layers, never sent
    round_no = wanted if wanted is not None else last + 1
    per_epoch, rate = schedule(plan["sample_rate"])
    projected = accountant + [(plan["noise_multiplier"], rate, plan["local_epochs"] * per_epoch)]
    epsilon_after = epsilon_spent(history_key(projected), plan["delta"])
    if epsilon_after > plan["epsilon"] * (1 + 1e-6):
        raise Refused(f"another round would exceed this study's epsilon={plan['epsilon']} at delta={plan['delta']}")
    # paid before any step, once per round: a run cut short after paying and repeated is not paid twice
    budget_left = site.debit(epsilon_after - spent, reference=f"{plan['study']}/round-{round_no}", once=True)
    anchor = get_weights(model)
    run = fit_segmentation(model, images[train], labels[train], epochs=plan["local_epochs"],
                           sample_rate=plan["sample_rate"], lr=plan["lr"], noise_multiplier=plan["noise_multiplier"],
                           max_grad_norm=plan["max_grad_norm"], accountant=accountant, prox_mu=plan["prox_mu"],
                           anchor=anchor, seed=plan["seed"])
    new = bounded_update(anchor, get_weights(model), plan.get("update_norm"), local=local)
    accountant = [tuple(h) for h in run["accountant"]]
    if merged_history(accountant) != merged_history(projected):  # e.g. a step skipped: recompute
        epsilon_after = epsilon_spent(history_key(accountant), plan["delta"])
    finite = all(np.all(np.isfinite(v)) for v in new.values())
    reply = None if not finite else {
        "round": round_no,
        "weights": {k: v for k, v in new.items() if not is_local(k, local)},
        "num_samples": int(train.sum()),
        "epsilon": epsilon_after,
        "delta": plan["delta"],
        "accountant": [list(h) for h in accountant],
        "budget_remaining": budget_left,
        "receipt": receipt("DP-SGD (Opacus, Poisson sampling, Gaussian noise, RDP accountant), Dice + CE loss",
                           epsilon=epsilon_after - spent, delta=plan["delta"], budget_remaining=budget_left,
                           study_epsilon=epsilon_after, noise_multiplier=plan["noise_multiplier"],
                           max_grad_norm=plan["max_grad_norm"]),
        "metrics": {"steps": run["steps"]},
    }
    site.save(plan["study"], "state", {
        "rounds_done": rounds_done + 1, "last_round": round_no, "accountant": [list(h) for h in accountant],
        "epsilon": epsilon_after, "reply": None if plan.get("secure_aggregation") else reply,
        "local_layers": ({k: v for k, v in new.items() if is_local(k, local)} if local and finite
                         else local_layers)})
    if reply is None:  # paid and counted, but a model that diverged is never released
        raise Refused(f"round {round_no} diverged here (non-finite weights); nothing was released, the global "
                      "model is unchanged at this site")
    return reply


def _dp():
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


@lru_cache(maxsize=64)
def _dice_measurements(epsilon: float) -> tuple:
    """OpenDP measurements, one shared noise scale: a bounded sum in [0, 1] (Laplace, sampled
    exactly on a grid, so no floating-point attack) for each region's per-case Dice, and the
    case count (discrete Laplace). One case added or removed moves each sum by at most 1 and
    the count by 1; the scale is the smallest at which OpenDP's four privacy maps, summed
    (sequential composition), are at most ``epsilon`` (about ``4 / epsilon``)."""
    dp = _dp()
    space = (dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance())
    summer = space >> dp.t.then_clamp((0.0, 1.0)) >> dp.t.then_sum()
    counter = space >> dp.t.then_count()

    def build(scale):
        return [summer >> dp.m.then_laplace(scale)] * len(REGIONS) + [counter >> dp.m.then_laplace(scale)]

    scale = sum(float(m.map(1)) for m in build(1.0)) / epsilon  # each map is inverse in the scale
    for _ in range(32):
        measurements = build(scale)
        if sum(float(m.map(1)) for m in measurements) <= epsilon:
            return scale, measurements
        scale *= 1 + 1e-9
    raise RuntimeError("OpenDP could not calibrate the noise to the stated epsilon")


def noised_dice(dice: np.ndarray, *, epsilon: float) -> tuple[dict, int, float]:
    """``({region: noised mean Dice}, noised case count, scale)`` of per-case Dice ``[N, 3]``.
    Each mean is its noised sum over the noised count (at least 1): post-processing, free.
    Means are not clipped to [0, 1], so that pooling sites' means stays unbiased."""
    scale, measurements = _dice_measurements(float(epsilon))
    sums = [float(m([float(v) for v in dice[:, k]])) for k, m in enumerate(measurements[:-1])]
    count = int(measurements[-1]([float(v) for v in dice[:, 0]]))
    return {region: s / max(count, 1) for region, s in zip(REGIONS, sums)}, count, scale


def dp_segmentation_evaluate(asset, weights: dict, plan: dict) -> dict:
    """Noised mean Dice (WT, TC, ET) and noised case count of the researcher's ``weights`` on
    this centre's test cases; the k-th call of a study costs ``plan["eval_epsilons"][k]``
    (pure DP, delta 0), paid before the data is read.

    Why noise: the researcher chooses the weights, so an exact Dice is a query they designed
    (crafted weights can ask about one patient's scan). Sensitivity: a case's Dice is in
    [0, 1], so adding or removing one case moves each region's sum by at most 1 and the count
    by exactly 1 (L1 sensitivity 4 over the four numbers), whatever the weights.

    ``weights`` may name the round evaluated (``ROUND_KEY``): a repeat of the last one gets the
    same reply again, and one cut short after its payment, before any release, runs again unpaid."""
    _check_plan(plan)
    evaluations = evaluation_schedule(plan)
    images, labels, test = check_imaging_asset(asset)
    from .evaluation import _secure_round, evaluation_index, tagged_evaluation

    site = hospital()
    weights, wanted, history, released = tagged_evaluation(site, plan, weights)
    if released is not None:
        return released  # the same release again: nothing computed, nothing paid
    if plan["local_layers"]:  # FedBN: the centre's own norm layers
        weights.update((site.load(plan["study"], "state") or {}).get("local_layers", {}))
    model = build_segmentation_model(plan["model"], seed=plan["seed"])
    set_weights(model, weights)  # shapes and finiteness checked before anything is paid
    secure = None
    if plan.get("secure_aggregation"):  # masked with the last round's keys; checked before anything is paid
        secure = _secure_round(site, plan, int((site.load(plan["study"], "state") or {}).get("rounds_done", 0)))
    done = evaluation_index(history, wanted)
    if done >= len(evaluations):
        raise Refused(f"study {plan['study']} planned {len(evaluations)} evaluations and all have run here")
    epsilon = evaluations[done]
    left = site.debit(epsilon, reference=f"{plan['study']}/evaluation-{done + 1}", once=True)  # before reading
    site.save(plan["study"], "evaluations", {"done": done + 1, "round": wanted})
    dice = dice_per_case(predict_labels(model, images[test]), labels[test])
    means, count, scale = noised_dice(dice, epsilon=epsilon)
    reply = {"evaluation": done + 1,
             "receipt": receipt("OpenDP: Laplace on the sums of per-case Dice (WT, TC, ET, each clamped to [0, 1]) "
                                "and discrete Laplace on the case count, one scale; means = sums / count",
                                epsilon=epsilon, budget_remaining=left, scale=scale,
                                sensitivity="one case moves each Dice sum by at most 1 and the count by 1 (L1 4)",
                                evaluations_left=len(evaluations) - done - 1)}
    if secure is None:
        reply.update(dice=means, cases=count)
    else:  # only the sum over the round's agreed survivors opens: noised Dice sums and the count
        party, round_no, document = secure
        sums = np.array([means[r] * max(count, 1) for r in REGIONS], dtype=np.float64)
        masked = party.masked_extra({"dice_sum": sums, "cases": np.array([float(count)])}, purpose="evaluation")
        site.save(plan["study"], document, party.to_state())  # before anything leaves: once a round
        reply.update(round=round_no, site=party.id, masked=masked)
    site.save(plan["study"], "evaluations", {"done": done + 1, "round": wanted, "reply": reply})
    return reply

"""DP-SGD at a hospital: the vetted ``dp_train`` job and the training loop it runs.

``dp_train`` is what an approved training request calls. It trains on the site's own
train split with Opacus (Poisson sampling, per-sample clipping to ``max_grad_norm``,
Gaussian noise ``noise_multiplier``), continues the site's RDP accountant from the
previous rounds, and returns the model weights, the sample count and a privacy receipt.
Never rows, never per-patient values, never the training loss (an exact function of the
data).

Nothing the researcher sends is trusted: the plan is checked against the site's bounds
(``privacy.bounds``), the incoming weights for shape and finiteness, and every random
draw that protects patients (Poisson sampling, the Gaussian noise) comes from a
generator seeded with 64 fresh bits of ``os.urandom`` per call, through Opacus' secure
noise path (four draws per coordinate, robust to floating-point attacks). The plan's
``seed`` seeds only the model's initial weights, which are public anyway.

The accountant lives at the hospital: the job reads it from, and hands it back to, the
datasite (``site.hospital()``), which also debits the round's epsilon before any step.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np

from privacy.accounting import epsilon_spent, history_key, merged_history, schedule
from privacy.bounds import plan_problems

from .cohort import check_frame, split_rows
from .compliance import require_compliant
from .models import build_model, get_weights, is_local, model_inputs, set_weights
from .receipt import receipt
from .site import Refused, hospital

__all__ = ["dp_train", "train_round", "fit", "bounded_update", "secret_generator", "PLAN_KEYS", "ROUND_KEY"]

ROUND_KEY = "~round"  # in the weights a researcher sends: the round they mean (see train_round)

PLAN_KEYS = ("study", "dataset", "model", "rounds", "local_epochs", "lr", "sample_rate", "noise_multiplier",
             "max_grad_norm", "epsilon", "delta", "prox_mu", "local_layers", "seed")


def secret_generator():
    """A PyTorch generator seeded from the operating system's CSPRNG, fresh per call.

    torchcsprng (Opacus' secure_mode source) is not in the pinned stack; a Mersenne
    Twister seeded with 64 secret bits is unpredictable to a researcher, who sees only
    noised weights, and no two calls share a stream.
    """
    import torch

    return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") & (2**63 - 1))


def _make_private(model, optimizer, loader, *, generator, noise_multiplier, max_grad_norm, history):
    """Opacus with ``generator`` as the noise source and its secure-mode noise (four draws
    per coordinate); the loader already samples with the same secret generator."""
    from opacus import PrivacyEngine

    with warnings.catch_warnings():  # "secure_mode is off": its cause (a known seed) is fixed here
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
    engine.accountant.history = [tuple(h) for h in history]
    trained, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm, poisson_sampling=False, noise_generator=generator)
    optimizer.secure_mode = True
    return engine, trained, optimizer, loader


def fit(model, inputs: np.ndarray, labels: np.ndarray, *, epochs: int, sample_rate: float, lr: float,
        noise_multiplier: float | None = None, max_grad_norm: float | None = None,
        accountant: list | None = None, prox_mu: float = 0.0, anchor: dict | None = None,
        seed: int = 0) -> dict:
    """Train ``model`` in place; DP-SGD when ``noise_multiplier`` is given, plain SGD otherwise.

    Both modes take ``round(1/sample_rate)`` steps per epoch on batches of expected size
    ``sample_rate * n``, so their cost and their result are comparable. FedProx's proximal
    pull towards ``anchor`` is applied after each optimiser step: it uses no data, so it
    costs no privacy and does not disturb per-sample clipping. ``seed`` seeds the model's
    own randomness; under DP-SGD batches and noise come from :func:`secret_generator`
    (never from ``seed``), in plain SGD (non-private baselines) from ``seed``.
    """
    import torch
    from opacus.data_loader import DPDataLoader

    torch.manual_seed(seed)
    private = noise_multiplier is not None
    generator = secret_generator() if private else torch.Generator().manual_seed(seed)
    data = torch.utils.data.TensorDataset(torch.from_numpy(inputs), torch.from_numpy(labels))
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
    if prox_mu and anchor:
        anchors = [(p, torch.from_numpy(np.asarray(anchor[n], dtype=np.float32)))
                   for n, p in model.named_parameters() if n in anchor]
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses, steps = [], 0
    t0 = time.perf_counter()
    trained.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            if len(x):
                loss = loss_fn(trained(x), y)
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


def bounded_update(start: dict, new: dict, bound: float | None, *, local: tuple = ()) -> dict:
    """``new`` with its shared layers moved back toward ``start`` so that the update's L2
    norm is at most ``bound`` (norm bounding, Sun et al. 2019). Done here, at the site,
    because under secure aggregation nobody else ever sees a single update; it is
    post-processing of the DP output, so it costs no epsilon."""
    if bound is None:
        return new
    shared = [k for k in new if not is_local(k, local)]
    norm = float(np.sqrt(sum(np.sum((np.asarray(new[k], np.float64) - start[k]) ** 2) for k in shared)))
    if not np.isfinite(norm) or norm <= bound:
        return new  # a non-finite update is refused by the caller, never released
    factor = bound / norm
    return {k: (start[k] + factor * (new[k] - start[k])).astype(new[k].dtype) if k in shared else v
            for k, v in new.items()}


def _check_plan(plan: dict) -> None:
    missing = [k for k in PLAN_KEYS if k not in plan]
    if missing:
        raise ValueError(f"the study plan lacks {missing}; build it with federation.StudyPlan")
    problems = plan_problems(plan)  # the widest bounds any site may set; the datasite applies its own
    if problems:
        raise Refused("the plan is outside what this site allows: " + "; ".join(problems))


def dp_train(cohort, weights: dict, plan: dict) -> dict:
    """One federated round at this hospital: DP-SGD from the global ``weights``.

    ``plan`` is the study plan approved with the request (fixed; the researcher cannot
    change it per round). Refuses to run past ``plan["rounds"]`` or past ``plan["epsilon"]``.
    A plan approved with secure aggregation only trains through
    ``datasites.secure_round.secure_train``, which never lets the plain weights out.
    """
    if plan.get("secure_aggregation"):
        raise Refused("this study was approved with secure aggregation: its updates leave the site only masked")
    return train_round(cohort, weights, plan)


def train_round(cohort, weights: dict, plan: dict) -> dict:
    """The round itself (shared by the plain and the securely aggregated paths).

    ``weights`` may carry the round the researcher means (``ROUND_KEY``): a repeat of the
    round this site ran last returns that round's reply again (the same release, nothing
    paid or trained twice: a reply lost to a crash or a timeout is fetched, not re-made);
    an older round is refused; a later one is this site's next training (a site that
    missed rounds rejoins)."""
    _check_plan(plan)
    weights = dict(weights)
    wanted = weights.pop(ROUND_KEY, None)
    cohort = check_frame(cohort)
    require_compliant(cohort, name="sepsis_cohort")
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
    train = split_rows(cohort, "train")
    if len(train) < 20:
        raise ValueError("fewer than 20 training patients at this site: DP-SGD would be all noise")
    inputs, labels = model_inputs(train, plan["model"])
    local = tuple(plan["local_layers"])
    rounds_done, accountant = int(state.get("rounds_done", 0)), [tuple(h) for h in state.get("accountant", [])]
    spent, local_layers = float(state.get("epsilon", 0.0)), dict(state.get("local_layers", {}))
    if rounds_done >= plan["rounds"]:
        raise Refused(f"study {plan['study']} planned {plan['rounds']} rounds and all have run here")
    round_no = wanted if wanted is not None else last + 1
    per_epoch, rate = schedule(plan["sample_rate"])
    projected = accountant + [(plan["noise_multiplier"], rate, plan["local_epochs"] * per_epoch)]
    epsilon_after = epsilon_spent(history_key(projected), plan["delta"])
    if epsilon_after > plan["epsilon"] * (1 + 1e-6):
        raise Refused(f"another round would exceed this study's epsilon={plan['epsilon']} at delta={plan['delta']}")
    # the site's budget pays for this round before any step is taken; the reference is the
    # round's, so a run cut short after paying and repeated is not paid twice
    budget_left = site.debit(epsilon_after - spent, reference=f"{plan['study']}/round-{round_no}", once=True)
    model = build_model(plan["model"], seed=plan["seed"])
    set_weights(model, weights)
    set_weights(model, local_layers)
    anchor = get_weights(model)
    run = fit(model, inputs, labels, epochs=plan["local_epochs"], sample_rate=plan["sample_rate"],
              lr=plan["lr"], noise_multiplier=plan["noise_multiplier"], max_grad_norm=plan["max_grad_norm"],
              accountant=accountant, prox_mu=plan["prox_mu"], anchor=anchor, seed=plan["seed"])
    new = bounded_update(anchor, get_weights(model), plan.get("update_norm"), local=local)
    accountant = [tuple(h) for h in run["accountant"]]
    if merged_history(accountant) != merged_history(projected):  # e.g. a step skipped: recompute
        epsilon_after = epsilon_spent(history_key(accountant), plan["delta"])
    finite = all(np.all(np.isfinite(v)) for v in new.values())
    reply = None if not finite else {
        "round": round_no,
        "weights": {k: v for k, v in new.items() if not is_local(k, local)},
        "num_samples": int(len(train)),
        "epsilon": epsilon_after,
        "delta": plan["delta"],
        "accountant": [list(h) for h in accountant],
        "budget_remaining": budget_left,
        "receipt": receipt("DP-SGD (Opacus, Poisson sampling, Gaussian noise, RDP accountant)",
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

"""DP evaluation at a hospital: the vetted ``evaluate`` job.

The researcher chooses the weights, so any exact number computed from them is a query
they designed: with crafted weights exact ROC counts answer "is the youngest patient
septic?". ``evaluate`` therefore releases only two histograms of the model's scores on
the site's held-out split, one for septic and one for other patients, over a fixed
public grid of score bins (``BIN_EDGES``), each cell with discrete Laplace noise from
OpenDP (the site's CSPRNG).

Sensitivity: adding or removing one test patient moves exactly one cell of one histogram
by one, whatever the weights, so the L1 sensitivity is 1 and noise of scale
``1 / epsilon`` makes each call epsilon-DP (pure, delta 0). Every call is paid from the
site's budget before the data is read, and the approved plan fixes how many calls a
study gets and what each costs (``eval_epsilons``). ROC curves, AUROC and calibration are
computed by the researcher from the noised counts (``federation.metrics``): post-processing,
free. ``site_metrics`` (exact) is for non-private baselines on data one already holds.
"""

from __future__ import annotations

import numpy as np

from privacy.bounds import evaluation_schedule, plan_problems

from .cohort import check_frame, split_rows
from .models import build_model, model_inputs, set_weights
from .receipt import receipt
from .site import Refused, hospital

__all__ = ["evaluate", "tagged_evaluation", "evaluation_index", "score_histograms", "site_metrics", "predict", "auroc", "THRESHOLDS", "BIN_EDGES",
           "MIN_CELL"]

MIN_CELL = 10
# 241 thresholds, evenly spaced in logit space (0.05 apart): fine where DP models put their
# scores, and short enough for the release policy (no list longer than 256 leaves a site).
THRESHOLDS = 1 / (1 + np.exp(-np.linspace(-6, 6, 241)))
# The DP histograms' bins: predicted probabilities cut at 31 public logits (-6 to 3, 0.3
# apart; sepsis models put few scores above 0.95). Few bins keep the noise of the pooled
# counts low; a patient's score falls in exactly one bin whatever the edges.
BIN_EDGES = 1 / (1 + np.exp(-np.linspace(-6, 3, 31)))


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


def score_histograms(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact counts of positives' and negatives' scores per bin of ``BIN_EDGES`` (32 bins)."""
    which = np.searchsorted(BIN_EDGES, np.asarray(scores, float), side="right")
    labels = np.asarray(labels).astype(bool)
    size = len(BIN_EDGES) + 1
    return (np.bincount(which[labels], minlength=size).astype(np.int64),
            np.bincount(which[~labels], minlength=size).astype(np.int64))


def _discrete_laplace(counts: np.ndarray, *, epsilon: float) -> list[int]:
    """OpenDP's discrete Laplace, scale 1/epsilon, on each count (L1 sensitivity 1)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    measurement = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int),
                                    scale=1.0 / epsilon)
    assert measurement.map(1) <= epsilon * (1 + 1e-9)  # the privacy map agrees with the stated epsilon
    return [int(v) for v in measurement([int(c) for c in counts])]


def evaluate(cohort, weights: dict, plan: dict) -> dict:
    """Noised score histograms of the global ``weights`` (plus this site's local layers, if
    the study keeps any) on this hospital's held-out split; the k-th call of a study costs
    ``plan["eval_epsilons"][k]``. In a secure-aggregation study they leave masked with the
    last round's keys (``_masked_round``), so the researcher sees only their sum.

    ``weights`` may name the round evaluated (``ROUND_KEY``): a repeat of the last one gets
    the same reply again (a reply lost on the way is fetched, not re-made and re-paid), and
    one cut short after its payment, before anything was released, runs again unpaid."""
    problems = plan_problems(plan)
    if problems:
        raise Refused("the plan is outside what this site allows: " + "; ".join(problems))
    schedule = evaluation_schedule(plan)
    cohort = check_frame(cohort)
    site = hospital()
    weights, wanted, history, released = tagged_evaluation(site, plan, weights)
    if released is not None:
        return released  # the same release again: nothing computed, nothing paid
    state = site.load(plan["study"], "state") or {}
    if plan.get("local_layers"):
        weights.update(state.get("local_layers", {}))
    model = build_model(plan["model"], seed=plan["seed"])
    set_weights(model, weights)  # shapes and finiteness checked before anything is paid
    done = evaluation_index(history, wanted)
    if done >= len(schedule):
        raise Refused(f"study {plan['study']} planned {len(schedule)} evaluations and all have run here")
    secure = _secure_round(site, plan, int(state.get("rounds_done", 0))) if plan.get("secure_aggregation") else None
    epsilon = schedule[done]
    left = site.debit(epsilon, reference=f"{plan['study']}/evaluation-{done + 1}", once=True)  # before reading
    site.save(plan["study"], "evaluations", {"done": done + 1, "round": wanted})
    test = split_rows(cohort, "test")
    inputs, labels = model_inputs(test, plan["model"])
    scores = predict(plan["model"], weights, inputs, seed=plan["seed"])
    positive, negative = score_histograms(scores, labels)
    noised = {"positive": _discrete_laplace(positive, epsilon=epsilon),
              "negative": _discrete_laplace(negative, epsilon=epsilon)}
    reply = {"evaluation": done + 1,
             "receipt": receipt("discrete Laplace (OpenDP) on score histograms, L1 sensitivity 1", epsilon=epsilon,
                                budget_remaining=left, scale=1.0 / epsilon, evaluations_left=len(schedule) - done - 1)}
    if secure is None:
        reply["histogram"] = {"edges": [float(e) for e in BIN_EDGES], **noised}
    else:
        party, round_no, document = secure
        masked = party.masked_extra({k: np.asarray(v, dtype=np.float64) for k, v in noised.items()},
                                    purpose="evaluation")
        site.save(plan["study"], document, party.to_state())  # before anything leaves: once a round
        reply.update(round=round_no, site=party.id, masked=masked)
    site.save(plan["study"], "evaluations", {"done": done + 1, "round": wanted, "reply": reply})
    return reply


def tagged_evaluation(site, plan: dict, weights: dict) -> tuple[dict, int | None, dict, dict | None]:
    """``(weights without the tag, the round they name, the study's evaluation record, the
    reply already released for that round or None)``: a repeat is fetched, never re-made."""
    from .training import ROUND_KEY

    weights = dict(weights)
    wanted = weights.pop(ROUND_KEY, None)
    if wanted is not None and (isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1):
        raise Refused("the round evaluated must be a whole number from 1")
    history = site.load(plan["study"], "evaluations") or {}
    same = wanted is not None and history.get("round") == wanted
    return weights, wanted, history, history.get("reply") if same else None


def evaluation_index(history: dict, wanted: int | None) -> int:
    """Which planned evaluation (0-based) this call is: the next one, or the same one again
    when this round's was paid and then cut short before anything was released (unpaid)."""
    done = int(history.get("done", 0))
    if wanted is not None and history.get("round") == wanted and history.get("reply") is None and done > 0:
        return done - 1
    return done


def _secure_round(site, plan: dict, round_no: int):
    """The keys of this site's last secure round (its last attempt), checked before anything
    is paid: the round must be agreed (its survivor set signed) and not yet evaluated here."""
    from secagg import SecAggSite

    from .secure_round import latest_attempt, round_document

    attempt, saved = latest_attempt(site, plan["study"], round_no) if round_no else (0, None)
    if saved is None:
        raise Refused("a secure-aggregation study is evaluated after a secure round, masked with its keys; "
                      "run a round first")
    party = SecAggSite.from_state(saved)
    if party.session != site.researcher() or party.name != site.name:
        raise Refused(f"round {round_no}'s keys here were made for another request")
    if party.stage not in ("agreed", "unmasked"):
        raise Refused(f"round {round_no} is not agreed here yet: its evaluation is masked with the survivors "
                      "this site signed")
    if "evaluation" in party.to_state()["extras"]:
        raise Refused(f"round {round_no} was already evaluated here; one evaluation a round under its keys")
    return party, round_no, round_document(round_no, attempt)

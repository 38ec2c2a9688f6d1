"""Vetted job: a federated round whose update leaves the hospital only masked.

The researcher drives the four steps of secure aggregation (``secagg``) through one
approved request, one call per step: ``advertise`` (fresh keys), ``share`` (encrypted
Shamir shares for the other sites), ``mask`` (train with DP-SGD, then mask
``num_samples * weights`` and ``num_samples``), ``unmask`` (shares that remove the
survivors' self-masks and the dropped sites' pairwise masks). The site's secrets for the
round stay at the hospital (its study document ``secagg-round-N``, kept by the datasite);
each step runs at most once per round, so a replay cannot make the site mask twice or
reveal both shares.
"""

from __future__ import annotations

import numpy as np

from .cohort import check_frame
from .site import Refused, hospital
from .training import train_round

__all__ = ["secure_train", "SECURE_STEPS"]

SECURE_STEPS = ("advertise", "share", "mask", "unmask")


def secure_train(cohort, message: dict, plan: dict) -> dict:
    """One step of a securely aggregated round; ``message["step"]`` says which."""
    from secagg import AggregationFailed, FixedPoint, SecAggSite

    if not plan.get("secure_aggregation"):
        raise Refused("this study was not approved with secure aggregation")
    step, round_no = message.get("step"), int(message.get("round", 0))
    if step not in SECURE_STEPS:
        raise ValueError(f"step must be one of {SECURE_STEPS}, got {step!r}")
    if not 1 <= round_no <= plan["rounds"]:
        raise Refused(f"round {round_no} is outside the approved plan's {plan['rounds']} rounds")
    frame = check_frame(cohort)
    site = hospital()
    if site.dry_run:  # a dry run on the mock: no keys, no training
        return {"dry_run": True, "step": step, "round": round_no}
    document = f"secagg-round-{round_no}"
    saved = site.load(plan["study"], document)
    if step == "advertise":
        if saved is not None:
            raise Refused(f"round {round_no} keys were already made here; a round's keys are made once")
        party = SecAggSite(int(message["site_id"]), context=f"{plan['study']}/round-{round_no}",
                           codec=FixedPoint(int(plan.get("fraction_bits", 24))))
        reply = party.advertise()
    else:
        if saved is None:
            raise Refused(f"round {round_no} has no keys here yet; start with the advertise step")
        party = SecAggSite.from_state(saved)
        try:
            if step == "share":
                reply = {"shares": party.share_keys(message["roster"], threshold=int(plan["secagg_threshold"]))}
            elif step == "mask":
                if party.stage != "shared":
                    raise AggregationFailed(f"this site already masked its update for round {round_no}")
                if party.id not in {int(k) for k in message["inbox"]}:
                    raise AggregationFailed("the inbox lacks this site's own share")
                done = int((site.load(plan["study"], "state") or {}).get("rounds_done", 0))
                if done + 1 != round_no:  # checked before any epsilon is spent
                    raise Refused(f"this site's next round is {done + 1}, not {round_no}")
                result = train_round(frame, message["weights"], plan)
                n = float(result["num_samples"])
                update = {k: n * np.asarray(v, dtype=np.float64) for k, v in result["weights"].items()}
                update["~n"] = np.array([n])
                reply = {k: result[k] for k in ("round", "epsilon", "delta", "budget_remaining", "metrics")}
                reply["masked"] = party.masked_input(update, inbox=message["inbox"])
            else:
                reply = party.unmask(survivors=message["survivors"], dropped=message["dropped"])
        except AggregationFailed as exc:
            raise Refused(str(exc)) from None
    site.save(plan["study"], document, party.to_state())
    return reply

"""Vetted job: a federated round whose update leaves the hospital only masked.

The researcher drives the four steps of secure aggregation (``secagg``) through one
approved request, one call per step: ``advertise`` (fresh keys), ``share`` (encrypted
Shamir shares for the other sites), ``mask`` (train with DP-SGD, then mask
``num_samples * weights`` and ``num_samples``), ``unmask`` (shares that remove the
survivors' self-masks and the dropped sites' pairwise masks). The site's secrets for the
round stay in ``<site>/jobs/<study>/secagg/round-N.json`` (mode 0600); each step runs at
most once per round, so a replay cannot make the site mask twice or reveal both shares.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from syft_policies.refusals import Refused

from .cohort_asset import check_frame
from .jobstate import site_directory, study_state
from .training import train_round

__all__ = ["secure_train", "SECURE_STEPS"]

SECURE_STEPS = ("advertise", "share", "mask", "unmask")


def _state_file(site_uid: str, study: str, round_no: int) -> Path | None:
    base = site_directory(site_uid)
    return None if base is None else base / "jobs" / study / "secagg" / f"round-{round_no}.json"


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)
    os.replace(tmp, path)


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
    site_uid = str(frame["site_uid"].iloc[0])
    path = _state_file(site_uid, plan["study"], round_no)
    if path is None:  # the mock twin (Syft also runs approved code on it) or a dry run: no keys, no training
        return {"dry_run": True, "step": step, "round": round_no}
    if step == "advertise":
        if path.exists():
            raise Refused(f"round {round_no} keys were already made here; a round's keys are made once")
        site = SecAggSite(int(message["site_id"]), context=f"{plan['study']}/round-{round_no}",
                          codec=FixedPoint(int(plan.get("fraction_bits", 24))))
        reply = site.advertise()
    else:
        if not path.exists():
            raise Refused(f"round {round_no} has no keys here yet; start with the advertise step")
        site = SecAggSite.from_state(json.loads(path.read_text()))
        try:
            if step == "share":
                reply = {"shares": site.share_keys(message["roster"], threshold=int(plan["secagg_threshold"]))}
            elif step == "mask":
                if site.stage != "shared":
                    raise AggregationFailed(f"this site already masked its update for round {round_no}")
                if site.id not in {int(k) for k in message["inbox"]}:
                    raise AggregationFailed("the inbox lacks this site's own share")
                with study_state(site_uid, plan["study"]) as state:
                    if state.rounds_done + 1 != round_no:  # checked before any epsilon is spent
                        raise Refused(f"this site's next round is {state.rounds_done + 1}, not {round_no}")
                result = train_round(frame, message["weights"], plan)
                n = float(result["num_samples"])
                update = {k: n * np.asarray(v, dtype=np.float64) for k, v in result["weights"].items()}
                update["~n"] = np.array([n])
                reply = {k: result[k] for k in ("round", "epsilon", "delta", "budget_remaining", "metrics")}
                reply["masked"] = site.masked_input(update, inbox=message["inbox"])
            else:
                reply = site.unmask(survivors=message["survivors"], dropped=message["dropped"])
        except AggregationFailed as exc:
            raise Refused(str(exc)) from None
    _save(path, site.to_state())
    return reply

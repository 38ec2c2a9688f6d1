"""Vetted job: a federated round whose update leaves the hospital only masked.

The researcher relays the five steps of secure aggregation (``secagg``) through one
approved request, one call per step: ``advertise`` (fresh keys, signed with the
hospital's long-term key), ``share`` (encrypted Shamir shares for the other sites, once
every advert's signature checks out against the keys this datasite trusts: ``peers()``,
never the message), ``mask`` (train with DP-SGD, then mask ``num_samples * weights`` and
``num_samples``), ``consistency`` (sign the survivor set it was told, with the sites it
masked with) and ``unmask`` (shares that remove the survivors' self-masks and the dropped
sites' pairwise masks, only once every survivor signed that same agreement). Site ids are
bound to site names by the signed adverts; names must be sites of the approved plan, and
the threshold more than half of them. Everything signed names the researcher the datasite
runs the request for, so nothing from another researcher's study of the same name counts.

A round that fails (a site dies, a relay lies) is tried again as a new ``attempt`` with
fresh keys and a context of its own. A site takes part in a new attempt only if it
revealed no share in an earlier attempt of the round, and it masks the same update it
trained for the round (never a second training): fewer than ``t`` sites can have revealed
anything in an attempt a new one can still complete, so no earlier sum was ever opened
to compare with, and the update is paid and trained once.

A relay that tells sites different survivor sets, shrinks a site's set of peers, swaps a
site's keys or replays a step gets a refusal and no share. The site's secrets for the
round stay at the hospital (its study document ``secagg-round-N``, kept by the datasite);
each step runs at most once per round. The masked reply carries nothing else of the site
but public plan numbers and a privacy receipt: no loss, no sample count, no timing.
"""

from __future__ import annotations

import numpy as np

from .cohort import check_frame
from .site import Refused, hospital
from .training import train_round

__all__ = ["secure_train", "SECURE_STEPS", "MAX_ATTEMPTS", "round_document", "round_context", "latest_attempt"]

SECURE_STEPS = ("advertise", "share", "mask", "consistency", "unmask")
MAX_ATTEMPTS = 5  # of one round


def round_document(round_no: int, attempt: int = 1) -> str:
    """The study document holding this site's secrets of one attempt of a round."""
    return f"secagg-round-{round_no}" + (f"-attempt-{attempt}" if attempt > 1 else "")


def round_context(study: str, round_no: int, attempt: int = 1) -> str:
    """What the attempt's keys, shares and signatures are bound to."""
    return f"{study}/round-{round_no}" + (f"/attempt-{attempt}" if attempt > 1 else "")


def latest_attempt(site, study: str, round_no: int):
    """(attempt, saved state) of the last attempt of ``round_no`` this site took part in, or (0, None)."""
    for attempt in range(MAX_ATTEMPTS, 0, -1):
        saved = site.load(study, round_document(round_no, attempt))
        if saved is not None:
            return attempt, saved
    return 0, None
_FIELDS = {"advertise": ("site_id",), "share": ("roster",), "mask": ("weights", "inbox"),
           "consistency": ("survivors",), "unmask": ("survivors", "dropped", "signatures")}


def _verifier(plan: dict, site):
    """``verify(name, message, signature)`` under the keys this datasite trusts (``peers()``),
    for the approved plan's sites only."""
    from secagg.protocol import trusting

    trusted = site.peers()
    return trusting({name: trusted[name] for name in plan.get("sites", ()) if name in trusted})


def _threshold(plan: dict) -> int:
    sites, threshold = list(plan.get("sites") or ()), plan.get("secagg_threshold")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or len(set(sites)) != len(sites) \
            or not 2 <= threshold <= len(sites) or 2 * threshold <= len(sites):
        raise Refused("the approved plan must list its sites and a secure-aggregation threshold of more than "
                      "half of them")
    return threshold


def secure_train(cohort, message: dict, plan: dict) -> dict:
    """One step of a securely aggregated round; ``message["step"]`` says which."""
    from secagg import AggregationFailed, FixedPoint, SecAggSite

    if not plan.get("secure_aggregation"):
        raise Refused("this study was not approved with secure aggregation")
    if not isinstance(message, dict):
        raise Refused("a secure-aggregation message is a dict with a step and a round")
    step, round_no, attempt = message.get("step"), message.get("round", 0), message.get("attempt", 1)
    if step not in SECURE_STEPS:
        raise Refused(f"step must be one of {SECURE_STEPS}, got {step!r}")
    if not isinstance(round_no, int) or isinstance(round_no, bool) or not 1 <= round_no <= plan["rounds"]:
        raise Refused(f"round {round_no!r} is outside the approved plan's {plan['rounds']} rounds")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or not 1 <= attempt <= MAX_ATTEMPTS:
        raise Refused(f"attempt must be a whole number from 1 to {MAX_ATTEMPTS}")
    missing = [f for f in _FIELDS[step] if f not in message]
    if missing:
        raise Refused(f"the {step} step needs {', '.join(missing)}")
    threshold = _threshold(plan)
    frame = cohort if plan.get("task") == "segmentation" else check_frame(cohort)  # checked by its round
    site = hospital()
    if site.dry_run:  # a dry run on the mock: no keys, no training
        return {"dry_run": True, "step": step, "round": round_no}
    if site.name not in plan["sites"]:
        raise Refused(f"{site.name} is not one of this study's sites")
    document = round_document(round_no, attempt)
    saved = site.load(plan["study"], document)
    if step == "advertise":
        if saved is not None:
            raise Refused(f"round {round_no} keys were already made here; a round's keys are made once")
        for earlier in range(1, attempt):  # a site that revealed shares once never re-masks the round
            before = site.load(plan["study"], round_document(round_no, earlier))
            if before is not None and before.get("unmasked"):
                raise Refused(f"this site revealed its shares in attempt {earlier} of round {round_no}; another "
                              "attempt could let the relay compare two sums, so it is refused")
    elif saved is None:
        raise Refused(f"round {round_no} has no keys here yet; start with the advertise step")
    try:
        if step == "advertise":
            party = SecAggSite(message["site_id"], context=round_context(plan["study"], round_no, attempt), name=site.name,
                               session=site.researcher(), codec=FixedPoint(int(plan.get("fraction_bits", 24))))
            reply = party.advertise(site.sign)
        else:
            party = SecAggSite.from_state(saved)
            if party.session != site.researcher() or party.name != site.name:
                raise Refused(f"round {round_no}'s keys here were made for another request")
            if step == "share":
                reply = {"shares": party.share_keys(message["roster"], threshold=threshold,
                                                    verify=_verifier(plan, site))}
            elif step == "mask":
                reply = _mask(party, frame, message, plan, site, round_no, attempt)
            elif step == "consistency":
                reply = {"site": party.id, "signature": site.sign(party.agree(message["survivors"]))}
            else:
                reply = party.unmask(survivors=message["survivors"], dropped=message["dropped"],
                                     signatures=message["signatures"], verify=_verifier(plan, site))
    except (AggregationFailed, ValueError) as exc:  # the protocol's own checks: safe to say why
        raise Refused(f"{step}: {exc}") from None
    site.save(plan["study"], document, party.to_state())
    return reply


def _round_job(plan: dict):
    """The task's round (sepsis DP-SGD, or the imaging centres' segmentation)."""
    if plan.get("task") == "segmentation":
        from .segmentation import segmentation_round

        return segmentation_round
    return train_round


def _mask(party, frame, message: dict, plan: dict, site, round_no: int, attempt: int) -> dict:
    """Train (once a round), then mask; the reply is the masked vector and public plan numbers only."""
    from secagg import AggregationFailed

    if party.stage != "shared":
        raise AggregationFailed(f"this site already masked its update for round {round_no}")
    inbox = message["inbox"]
    if not isinstance(inbox, dict) or party.id not in inbox:
        raise AggregationFailed("the inbox lacks this site's own share")
    if not isinstance(message["weights"], dict):
        raise ValueError("weights must map layer names to arrays")
    done = int((site.load(plan["study"], "state") or {}).get("rounds_done", 0))
    trained = site.load(plan["study"], f"secagg-update-{round_no}")
    if trained is None:
        if done + 1 != round_no:  # checked before any epsilon is spent
            raise Refused(f"this site's next round is {done + 1}, not {round_no}")
        try:
            result = _round_job(plan)(frame, message["weights"], plan)
        except ValueError as exc:  # not the protocol's: its detail stays at the site, like any job error
            raise RuntimeError("training failed") from exc
        n = float(result["num_samples"])
        update = {k: n * np.asarray(v, dtype=np.float64) for k, v in result["weights"].items()}
        update["~n"] = np.array([n])
        trained = {"update": update, "reply": {k: result[k] for k in ("round", "epsilon", "delta", "budget_remaining",
                                                                      "receipt")}}
        site.save(plan["study"], f"secagg-update-{round_no}", trained)  # a later attempt masks this, never retrains
    elif attempt == 1:
        raise Refused(f"this site already trained round {round_no}; a new attempt of the round masks it again")
    reply = dict(trained["reply"])
    reply["masked"] = party.masked_input(trained["update"], inbox=inbox)
    return reply

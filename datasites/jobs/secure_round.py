"""Vetted job: a federated round whose update leaves the hospital only masked.

The researcher relays the five steps of secure aggregation (``secagg``) through one
approved request, one call per step: ``advertise`` (fresh keys, signed with the
hospital's long-term key), ``share`` (encrypted Shamir shares for the other sites, once
every advert's signature checks out against the keys this datasite trusts), ``mask``
(train with DP-SGD, then mask ``num_samples * weights`` and ``num_samples``),
``consistency`` (sign the survivor set it was told) and ``unmask`` (shares that remove the
survivors' self-masks and the dropped sites' pairwise masks, only with ``t`` valid
signatures of distinct sites on that same set). A relay that tells sites different
survivor sets gets no shares at all. The site's secrets for the round stay at the
hospital (its study document ``secagg-round-N``, kept by the datasite); each step runs at
most once per round. The masked reply carries nothing else of the site but public plan
numbers and a privacy receipt.
"""

from __future__ import annotations

import numpy as np

from .cohort import check_frame
from .site import Refused, hospital
from .training import train_round

__all__ = ["secure_train", "SECURE_STEPS"]

SECURE_STEPS = ("advertise", "share", "mask", "consistency", "unmask")


def _verifier(plan: dict, roster: dict[int, dict], site):
    """``verify(site_id, message, signature)`` with the keys the datasite trusts for the
    study's sites, each id bound to the site name its signed advert gave."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    trusted = site.peers()

    def verify(site_id: int, message: bytes, signature: bytes) -> bool:
        name = (roster.get(int(site_id)) or {}).get("name")
        if name not in plan.get("sites", ()) or name not in trusted:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(trusted[name]).verify(signature, message)
            return True
        except (InvalidSignature, ValueError):
            return False
    return verify


def _check_roster(plan: dict, roster: list, site, context: str) -> dict[int, dict]:
    """Every advert signed by a distinct site of the approved plan, with keys the datasite trusts."""
    from secagg.protocol import advert_message

    by_id, names = {}, set()
    for advert in roster:
        site_id, name = int(advert["site"]), str(advert.get("name", ""))
        if site_id in by_id or name in names:
            raise Refused("the roster lists a site twice")
        by_id[site_id], names = {**advert, "name": name}, names | {name}
    verify = _verifier(plan, by_id, site)
    for site_id, advert in by_id.items():
        if not verify(site_id, advert_message(context, advert), bytes(advert.get("signature", b""))):
            raise Refused(f"the advert of site {site_id} ({advert['name'] or 'unnamed'}) is not signed by a site "
                          "of this study with the key this hospital trusts: its keys may have been replaced")
    threshold = int(plan["secagg_threshold"])
    if 2 * threshold <= len(plan.get("sites", ())):
        raise Refused("the secure-aggregation threshold must be more than half of the study's sites")
    return by_id


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
    context = f"{plan['study']}/round-{round_no}"
    if step == "advertise":
        from secagg.protocol import advert_message

        if saved is not None:
            raise Refused(f"round {round_no} keys were already made here; a round's keys are made once")
        if site.name not in plan.get("sites", ()):
            raise Refused(f"{site.name} is not one of this study's sites")
        party = SecAggSite(int(message["site_id"]), context=context,
                           codec=FixedPoint(int(plan.get("fraction_bits", 24))))
        reply = {**party.advertise(), "name": site.name}
        reply["signature"] = site.sign(advert_message(context, reply))
    else:
        if saved is None:
            raise Refused(f"round {round_no} has no keys here yet; start with the advertise step")
        party = SecAggSite.from_state(saved)
        try:
            if step == "share":
                roster = _check_roster(plan, message["roster"], site, context)
                own = roster.get(party.id) or {}
                if own.get("name") != site.name or bytes(own.get("s_pk", b"")) != party.advertise()["s_pk"]:
                    raise Refused("the roster does not carry this site's own advert")
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
                reply = {k: result[k] for k in ("round", "epsilon", "delta", "budget_remaining", "receipt")}
                reply["masked"] = party.masked_input(update, inbox=message["inbox"])
            elif step == "consistency":
                signed = party.agree(message["survivors"], threshold=int(plan["secagg_threshold"]))
                reply = {"site": party.id, "signature": site.sign(signed)}
            else:
                roster = {int(i): {"name": r.get("name")} for i, r in party.roster_names().items()}
                reply = party.unmask(survivors=message["survivors"], dropped=message["dropped"],
                                     signatures={int(k): bytes(v) for k, v in (message.get("signatures") or {}).items()},
                                     verify=_verifier(plan, roster, site), threshold=int(plan["secagg_threshold"]))
        except AggregationFailed as exc:
            raise Refused(str(exc)) from None
    site.save(plan["study"], document, party.to_state())
    return reply

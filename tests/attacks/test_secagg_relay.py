"""The researcher relays secure aggregation: every protocol message passes through their
client. Here they drive the approved secure-training request by hand and lie.

Red team's attack: tell one hospital that a third one dropped (it then reveals its share of
that hospital's pairwise key) and another that it survived (it reveals its share of that
hospital's self-mask); with both keys the third hospital's update is unmasked alone.
"""

from __future__ import annotations

import pytest

from federation import Study, StudyPlan
from syft_policies import approve_request, list_requests


def _secure_study(network, tmp_path, study: str) -> Study:
    _, sites = network
    names = sorted(sites)
    plan = StudyPlan(study=study, sites=names, rounds=1, epsilon=1.0, model="mlp", sample_rate=0.1,
                     secure_aggregation=True)
    study = Study(plan, {n: sites[n].researcher() for n in names}, directory=tmp_path / study,
                  echo=lambda *_: None, progress=False)
    study.submit()
    for site in sites.values():
        officer = site.officer()
        for request in list_requests(officer, status="pending"):
            if request.function.startswith(plan.study.replace("-", "_")):
                approve_request(officer, request.id)
    study.wait_for_approvals()
    return study


def _step(study, site, **message):
    return study._call(site, study.train_function, message={"round": 1, **message})


def test_different_survivor_sets_make_the_honest_sites_refuse(network, tmp_path):
    from secagg import SecAggServer

    study = _secure_study(network, tmp_path, "relay-lies")
    a, b, c = sorted(study.participants)
    ids = {a: 1, b: 2, c: 3}
    server = SecAggServer(context="relay-lies/round-1", threshold=study.plan.secagg_threshold)
    roster = server.collect_adverts([_step(study, s, step="advertise", site_id=ids[s]) for s in ids])
    inboxes = server.route_shares({ids[s]: _step(study, s, step="share", roster=roster)["shares"] for s in ids})
    masked = {s: _step(study, s, step="mask", weights=study.weights, inbox=inboxes[ids[s]]) for s in ids}
    assert all(set(r) == {"round", "epsilon", "delta", "budget_remaining", "receipt", "masked"}
               for r in masked.values())  # nothing per site in the clear: no loss, no count

    told = {a: [1, 2], b: [1, 2, 3], c: [1, 2, 3]}  # a hears that c dropped; b and c that it survived
    signatures = {ids[s]: _step(study, s, step="consistency", survivors=told[s])["signature"] for s in ids}
    with pytest.raises(RuntimeError, match="valid signatures|differs"):  # a alone signed [1, 2]
        _step(study, a, step="unmask", survivors=[1, 2], dropped=[3], signatures=signatures)
    with pytest.raises(RuntimeError, match="differs from the one this site signed"):
        _step(study, c, step="unmask", survivors=[1, 2], dropped=[3], signatures=signatures)
    # b answers only the set it signed, and then reveals no share of any pairwise key (each
    # site's request allows the five steps once: a, c have used theirs on the refused asks)
    honest = _step(study, b, step="unmask", survivors=[1, 2, 3], dropped=[], signatures=signatures)
    assert honest["s"] == {}  # c's pairwise key stays unshared: c's update cannot be unmasked alone


def test_a_relay_that_replaces_a_sites_keys_gets_no_shares(network, tmp_path):
    """Man in the middle: the relay swaps b's advertised keys for its own, so that b's shares
    would be encrypted to the relay. Every advert is signed with the hospital's long-term key,
    checked against the keys the datasites publish to each other: the swap is refused."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from secagg.protocol import _raw

    study = _secure_study(network, tmp_path, "relay-swaps")
    a, b, c = sorted(study.participants)
    ids = {a: 1, b: 2, c: 3}
    adverts = [_step(study, s, step="advertise", site_id=ids[s]) for s in ids]
    own = X25519PrivateKey.generate()
    forged = [dict(ad, c_pk=_raw(own.public_key()), s_pk=_raw(own.public_key())) if ad["site"] == 2 else ad
              for ad in adverts]
    for site in (a, c):
        with pytest.raises(RuntimeError, match="not signed by a site of this study"):
            _step(study, site, step="share", roster=forged)
    unsigned = [dict(ad, signature=b"") for ad in adverts]
    with pytest.raises(RuntimeError, match="not signed by a site of this study"):
        _step(study, a, step="share", roster=unsigned)

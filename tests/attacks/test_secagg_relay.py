"""The researcher relays secure aggregation: every protocol message passes through their
client. Here they drive the approved secure-training requests by hand, on real datasites,
and lie.

- Red team's attack: tell one hospital that a third one dropped (it would reveal its share
  of that hospital's pairwise key) and the others that it survived (they would reveal their
  shares of its self-mask); with both keys the third hospital's update is unmasked alone.
- Starve one hospital of a peer's share, so that it masks with fewer keys, then have the
  others reveal its self-mask.
- Man in the middle: swap a hospital's advertised keys for the relay's own.

Each site's request allows each step once per round (a refused step is used up), so each
attack gets its own study. A normal secure study on the same datasites still gives FedAvg.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from federation import Study, StudyPlan
from syft_policies import approve_request, list_requests

STUDIES = ("relay-lies", "relay-starves", "relay-swaps", "relay-honest", "relay-plain")
COMMON = dict(rounds=1, epsilon=1.0, model="mlp", sample_rate=0.1)


@pytest.fixture(scope="module")
def studies(network, tmp_path_factory):
    """One approved study per attack (and an honest secure one and its plain twin)."""
    _, sites = network
    names = sorted(sites)
    directory = tmp_path_factory.mktemp("relay")
    out = {}
    for study in STUDIES:
        plan = StudyPlan(study=study, sites=names, secure_aggregation=study != "relay-plain", **COMMON)
        out[study] = Study(plan, {n: sites[n].researcher() for n in names}, directory=directory / study,
                           echo=lambda *_: None, progress=False)
        out[study].submit()
    prefixes = tuple(s.replace("-", "_") for s in STUDIES)
    for site in sites.values():
        officer = site.officer()
        for request in list_requests(officer, status="pending"):
            if request.function.startswith(prefixes):
                approve_request(officer, request.id)
    for study in out.values():
        study.wait_for_approvals()
    return out


def _step(study, site, **message):
    return study._call(site, study.train_function, message={"round": 1, **message})


def _refusal(study, site, **message) -> str:
    with pytest.raises(RuntimeError) as caught:
        _step(study, site, **message)
    return str(caught.value)


def _up_to_masking(study, inboxes=None):
    """The honest first three steps (``inboxes``: what the relay delivers instead)."""
    from secagg import SecAggServer

    a, b, c = sorted(study.participants)
    ids = {a: 1, b: 2, c: 3}
    server = SecAggServer(context=f"{study.plan.study}/round-1", threshold=study.plan.secagg_threshold)
    roster = server.collect_adverts([_step(study, s, step="advertise", site_id=ids[s]) for s in ids])
    routed = server.route_shares({ids[s]: _step(study, s, step="share", roster=roster)["shares"] for s in ids})
    routed = (inboxes or (lambda r: r))(routed)
    masked = {s: _step(study, s, step="mask", weights=study.weights, inbox=routed[ids[s]]) for s in ids}
    return (a, b, c), roster, masked


def test_different_survivor_sets_make_every_hospital_refuse(studies):
    study = studies["relay-lies"]
    (a, b, c), _, masked = _up_to_masking(study)
    for reply in masked.values():  # nothing per site in the clear: no loss, no count, no timing
        assert set(reply) == {"round", "epsilon", "delta", "budget_remaining", "receipt", "masked"}
        assert set(reply["receipt"]) <= {"mechanism", "epsilon", "delta", "budget_remaining", "study_epsilon",
                                         "noise_multiplier", "max_grad_norm"}

    told = {a: [1, 2], b: [1, 2, 3], c: [1, 2, 3]}  # a hears that c dropped; b and c that it survived
    signatures = {i: _step(study, s, step="consistency", survivors=told[s])["signature"]
                  for i, s in enumerate((a, b, c), start=1)}
    refusals = {a: _refusal(study, a, step="unmask", survivors=[1, 2], dropped=[3], signatures=signatures),
                b: _refusal(study, b, step="unmask", survivors=[1, 2], dropped=[3], signatures=signatures),
                c: _refusal(study, c, step="unmask", survivors=[1, 2, 3], dropped=[], signatures=signatures)}
    assert "sites [2] did not sign" in refusals[a]  # a alone signed [1, 2]
    assert "differs from the one this site signed" in refusals[b]
    assert "sites [1] did not sign" in refusals[c]  # not even the b-shares of the set c was told


def test_starving_a_hospital_of_a_peers_share_gets_nothing(studies):
    """The relay keeps c's share from a, so a masks with b only; if b and c then revealed a's
    self-mask, one pairwise key would be all that hides a's update."""
    study = studies["relay-starves"]

    def starve(routed):
        return {**routed, 1: {k: v for k, v in routed[1].items() if k != 3}}

    (a, b, c), _, _ = _up_to_masking(study, starve)
    assert "does not match the sites this site masked with" in _refusal(study, a, step="consistency",
                                                                        survivors=[1, 2, 3])
    signatures = {2: _step(study, b, step="consistency", survivors=[1, 2, 3])["signature"],
                  3: _step(study, c, step="consistency", survivors=[1, 2, 3])["signature"]}
    for site in (b, c):
        assert "sites [1] did not sign" in _refusal(study, site, step="unmask", survivors=[1, 2, 3], dropped=[],
                                                    signatures=signatures)


def test_a_relay_that_replaces_a_sites_keys_gets_no_shares(studies, network):
    """Man in the middle: the relay swaps b's advertised keys for its own, so that shares for b
    would be encrypted to the relay. Adverts are signed with the hospitals' long-term keys and
    checked against the keys the datasites publish to each other: the swap is refused. The
    signature names the researcher (from the datasite), so it counts in this researcher's
    study only."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from datasites.isolation.mediator import federation_keys
    from secagg.protocol import _raw, advert_message

    home, sites = network
    study = studies["relay-swaps"]
    a, b, c = sorted(study.participants)
    ids = {a: 1, b: 2, c: 3}
    adverts = [_step(study, s, step="advertise", site_id=ids[s]) for s in ids]
    session = hashlib.sha256(sites[a].spec.researchers[0].email.lower().encode()).hexdigest()
    published = federation_keys(home)
    for advert in adverts:
        Ed25519PublicKey.from_public_bytes(published[advert["name"]]).verify(
            advert["signature"], advert_message("relay-swaps/round-1", session, advert))

    own = _raw(X25519PrivateKey.generate().public_key())
    forged = [dict(ad, c_pk=own, s_pk=own) if ad["site"] == 2 else ad for ad in adverts]
    for site in (a, c):
        assert "advert of site 2 (" in _refusal(study, site, step="share", roster=forged)
    assert "is not signed by that site" in _refusal(study, b, step="share",
                                                    roster=[dict(ad, signature=b"") for ad in adverts])


def test_an_honest_relay_still_gets_fedavg(studies):
    """The normal path (``Study.secure_round``) through the consistency round: a FedAvg step."""
    secure, plain = studies["relay-honest"], studies["relay-plain"]
    names = sorted(secure.participants)
    start = {k: v.copy() for k, v in plain.weights.items()}
    expected = plain.strategy.aggregate(start, {n: plain.train_round(n, start, 1) for n in names})
    weights, replies = secure.secure_round(secure.weights, 1)
    moved = 2 * secure.plan.lr * secure.plan.steps_per_round * 1.05  # fresh DP noise in each run
    for k in expected:
        assert np.max(np.abs(weights[k] - expected[k])) <= moved, k
        assert np.max(np.abs(weights[k] - start[k])) > 0, k
    assert all("num_samples" not in r and "metrics" not in r for r in replies.values())
    # the round's evaluation: each hospital's noised histograms leave masked, only their sum opens
    pooled, spent = secure.secure_evaluation(weights, 1)
    assert set(spent) == set(names) and all(eps > 0 for eps in spent.values())
    assert len(pooled["histogram"]["positive"]) == len(pooled["histogram"]["negative"]) == 32
    assert sum(pooled["histogram"]["positive"]) + sum(pooled["histogram"]["negative"]) > 100


def test_a_hospital_that_has_not_agreed_a_round_does_not_evaluate(studies, network):
    """In the starved study a hospital refused to sign (it masked with fewer peers); its noised
    evaluation would have to be masked with keys of a round that never closes: refused unpaid."""
    _, sites = network
    study = studies["relay-starves"]
    a = sorted(study.participants)[0]
    before = sites[a].ledger().spent(study.plan.dataset)
    with pytest.raises(RuntimeError, match="not agreed here yet"):
        study.evaluate(a, study.weights)
    assert sites[a].ledger().spent(study.plan.dataset) == before

"""Secure aggregation: the sum is exact, one masked update says nothing, dropouts recover."""

from __future__ import annotations

import numpy as np
import pytest

from secagg import AggregationFailed, FixedPoint, SecAggServer, SecAggSite, secure_sum
from secagg import shamir


def _updates(n, seed=0, shapes=None):
    rng = np.random.default_rng(seed)
    shapes = shapes or {"lstm.w": (64, 17), "head.bias": (1,)}
    return {i: {k: rng.normal(0, 0.05, s) for k, s in shapes.items()} for i in range(1, n + 1)}


def _plain(updates, sites):
    return {k: sum(updates[i][k] for i in sites) for k in updates[sites[0]]}


def test_the_unmasked_sum_equals_the_plain_sum():
    updates = _updates(5)
    total, _ = secure_sum(updates, threshold=3, context="t/round-1")
    for k, v in _plain(updates, [1, 2, 3, 4, 5]).items():
        assert np.max(np.abs(total[k] - v)) < 5 * 2 ** -24  # fixed-point error only


def test_a_masked_update_does_not_correlate_with_the_true_update():
    updates = _updates(3, seed=1, shapes={"w": (20000,)})
    _, masked = secure_sum(updates, threshold=2, context="t/round-2")
    for i in updates:
        x = FixedPoint().encode(updates[i]["w"]).view(np.int64).astype(np.float64)
        y = masked[i]["w"].view(np.int64).astype(np.float64)
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.03  # 1/sqrt(20000) = 0.007 for independent vectors
        spread = np.histogram(masked[i]["w"] >> np.uint64(60), bins=16, range=(0, 16))[0]
        assert spread.min() > 0.8 * len(y) / 16  # masked values fill the whole 2^64 range evenly


def test_a_site_dropping_after_masking_leaves_the_round_correct():
    updates = _updates(4, seed=2)
    total, arrived = secure_sum(updates, threshold=2, context="t/round-3", drop_after_masking={3})
    assert sorted(arrived) == [1, 2, 4]
    for k, v in _plain(updates, [1, 2, 4]).items():
        assert np.max(np.abs(total[k] - v)) < 5 * 2 ** -24


def test_survivor_updates_stay_hidden_when_a_site_drops():
    """What the aggregator learns for a dropout: the dropped site's key, never a survivor's self-mask
    without its masked input in the sum; asking a site for both is refused."""
    updates = _updates(3, seed=3)
    sites = {i: SecAggSite(i, context="t/r4") for i in updates}
    server = SecAggServer(context="t/r4", threshold=2)
    roster = server.collect_adverts([s.advertise() for s in sites.values()])
    inboxes = server.route_shares({i: s.share_keys(roster, threshold=2) for i, s in sites.items()})
    masked = {i: s.masked_input(updates[i], inbox=inboxes[i]) for i, s in sites.items()}
    with pytest.raises(AggregationFailed, match="both survivors and dropped"):
        sites[1].unmask(survivors=[1, 2], dropped=[2])
    survivors, dropped = server.collect_masked({1: masked[1], 2: masked[2]})
    responses = [sites[i].unmask(survivors=survivors, dropped=dropped) for i in survivors]
    assert all(set(r["b"]) == {1, 2} and set(r["s"]) == {3} for r in responses)
    with pytest.raises(AggregationFailed, match="already answered"):
        sites[1].unmask(survivors=[1, 3], dropped=[2])  # a second question would reveal more
    total = server.unmask(responses)
    assert np.allclose(total["lstm.w"], updates[1]["lstm.w"] + updates[2]["lstm.w"], atol=1e-6)
    # site 3's late masked input stays masked: its self-mask seed was never reconstructed
    late = FixedPoint().decode(masked[3]["lstm.w"].ravel())
    assert abs(np.corrcoef(late, updates[3]["lstm.w"].ravel())[0, 1]) < 0.2


def test_too_few_survivors_refuse_to_unmask():
    updates = _updates(3, seed=4)
    with pytest.raises(AggregationFailed, match="threshold is 3"):
        secure_sum(updates, threshold=3, context="t/r5", drop_after_masking={2})


def test_shamir_needs_the_threshold():
    secret = bytes(range(32))
    shares = shamir.split(secret, threshold=3, holders=[1, 2, 3, 4])
    assert shamir.combine({k: shares[k] for k in (1, 3, 4)}, threshold=3) == secret
    assert shamir.combine({k: shares[k] for k in (1, 2)} | {4: shares[4]}, threshold=3) == secret
    with pytest.raises(ValueError, match="need 3 shares"):
        shamir.combine({1: shares[1], 2: shares[2]}, threshold=3)


def test_fixed_point_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match="NaN"):
        FixedPoint().encode(np.array([np.nan]))
    with pytest.raises(ValueError, match="overflow"):
        FixedPoint().encode(np.array([1e13]))


def _signed_round(n=3, threshold=2, context="t/lying"):
    """Sites up to masking, with long-term Ed25519 keys the sites trust for each other."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    updates = _updates(n, seed=7)
    sites = {i: SecAggSite(i, context=context) for i in updates}
    keys = {i: Ed25519PrivateKey.generate() for i in updates}

    def verify(i, message, signature):
        try:
            keys[i].public_key().verify(signature, message)
            return True
        except (InvalidSignature, KeyError):
            return False

    server = SecAggServer(context=context, threshold=threshold)
    roster = server.collect_adverts([s.advertise() for s in sites.values()])
    inboxes = server.route_shares({i: s.share_keys(roster, threshold=threshold) for i, s in sites.items()})
    masked = {i: s.masked_input(updates[i], inbox=inboxes[i]) for i, s in sites.items()}
    return updates, sites, keys, verify, masked


def test_a_relay_telling_sites_different_survivor_sets_gets_no_share():
    """The attack: site 1 is told that 3 dropped (so it would reveal 3's pairwise key) and
    site 2 that 3 survived (so it would reveal 3's self-mask): both together unmask site 3's
    update alone. Each site signs only the set it was told; no set gathers t = 2 signatures
    from both, so every honest site refuses."""
    _, sites, keys, verify, _ = _signed_round()
    told = {1: [1, 2], 2: [1, 2, 3], 3: [1, 2, 3]}
    signatures = {i: keys[i].sign(sites[i].agree(told[i], threshold=2)) for i in sites}
    with pytest.raises(AggregationFailed, match="valid signatures"):  # only its own signature on [1, 2]
        sites[1].unmask(survivors=[1, 2], dropped=[3], signatures=signatures, verify=verify, threshold=2)
    with pytest.raises(AggregationFailed, match="differs from the one this site signed"):
        sites[2].unmask(survivors=[1, 2], dropped=[3], signatures=signatures, verify=verify, threshold=2)
    # site 2 can still reveal b-shares for the set it signed with 3 (2 and 3 agree): no s-share of 3
    reply = sites[2].unmask(survivors=[1, 2, 3], dropped=[], signatures=signatures, verify=verify, threshold=2)
    assert reply["s"] == {} and set(reply["b"]) == {1, 2, 3}


def test_forged_or_missing_signatures_and_a_second_agreement_are_refused():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _, sites, keys, verify, _ = _signed_round()
    message = sites[1].agree([1, 2, 3], threshold=2)
    with pytest.raises(AggregationFailed, match="already signed"):
        sites[1].agree([1, 2], threshold=2)  # one set per round
    relay_key = Ed25519PrivateKey.generate()  # the relay signs for site 2 with a key of its own
    forged = {1: keys[1].sign(message), 2: relay_key.sign(message), 3: b"\0" * 64}
    with pytest.raises(AggregationFailed, match="only 1 valid"):
        sites[1].unmask(survivors=[1, 2, 3], dropped=[], signatures=forged, verify=verify, threshold=2)
    with pytest.raises(AggregationFailed, match="has not masked"):
        SecAggSite(9, context="t/lying").agree([9], threshold=1)

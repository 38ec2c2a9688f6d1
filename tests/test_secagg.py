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
    total, arrived = secure_sum(updates, threshold=3, context="t/round-3", drop_after_masking={3})
    assert sorted(arrived) == [1, 2, 4]
    for k, v in _plain(updates, [1, 2, 4]).items():
        assert np.max(np.abs(total[k] - v)) < 5 * 2 ** -24


def test_survivor_updates_stay_hidden_when_a_site_drops():
    """What the aggregator learns for a dropout: the dropped site's key, never a survivor's self-mask
    without its masked input in the sum; asking a site for both is refused."""
    sites, keys, verify, server, masked = _masked_round(context="t/r4")
    updates = _updates(3, seed=7)
    survivors, dropped = server.collect_masked({1: masked[1], 2: masked[2]})
    signatures = server.collect_signatures({i: keys[i].sign(sites[i].agree(survivors)) for i in survivors})
    with pytest.raises(AggregationFailed, match="both survivors and dropped"):
        sites[1].unmask(survivors=[1, 2], dropped=[2], signatures=signatures, verify=verify)
    responses = [sites[i].unmask(survivors=survivors, dropped=dropped, signatures=signatures, verify=verify)
                 for i in survivors]
    assert all(set(r["b"]) == {1, 2} and set(r["s"]) == {3} for r in responses)
    with pytest.raises(AggregationFailed, match="already answered"):
        sites[1].unmask(survivors=[1, 3], dropped=[2], signatures=signatures, verify=verify)  # would reveal more
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




# --- a lying relay (the malicious-server version of the protocol) -------------------------


def _federation(n=3, *, context="t/lying", session="ada"):
    """Sites with long-term Ed25519 keys, each trusting the others' (as the datasites do from
    the published federation keys), and their signed adverts."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from secagg.protocol import trusting

    sites = {i: SecAggSite(i, context=context, name=f"hospital-{i}", session=session) for i in range(1, n + 1)}
    keys = {i: Ed25519PrivateKey.generate() for i in sites}
    verify = trusting({sites[i].name: keys[i].public_key() for i in sites})
    return sites, keys, verify, [s.advertise(keys[i].sign) for i, s in sites.items()]


def _masked_round(n=3, threshold=2, *, context="t/lying", inboxes=None):
    """Sites up to masking (``inboxes``: what the relay delivers instead of the honest routing)."""
    sites, keys, verify, adverts = _federation(n, context=context)
    server = SecAggServer(context=context, threshold=threshold)
    roster = server.collect_adverts(adverts)
    routed = server.route_shares({i: s.share_keys(roster, threshold=threshold, verify=verify)
                                  for i, s in sites.items()})
    updates = _updates(n, seed=7)
    masked = {i: s.masked_input(updates[i], inbox=(inboxes or (lambda r: r))(routed)[i]) for i, s in sites.items()}
    return sites, keys, verify, server, masked


def _unmask_all(sites, asks, signatures, verify):
    """Every site asked what the relay chooses; the shares the relay gets and the refusals."""
    shares, refusals = [], {}
    for i, (survivors, dropped) in asks.items():
        try:
            shares.append(sites[i].unmask(survivors=survivors, dropped=dropped, signatures=signatures, verify=verify))
        except AggregationFailed as exc:
            refusals[i] = str(exc)
    return shares, refusals


def test_an_honest_relay_still_gets_the_exact_sum_through_the_consistency_round():
    updates = _updates(5, seed=11)
    total, _ = secure_sum(updates, threshold=3, context="t/honest", drop_after_masking={2})
    for k, v in _plain(updates, [1, 3, 4, 5]).items():
        assert np.max(np.abs(total[k] - v)) < 5 * 2 ** -24


def test_different_survivor_sets_make_every_honest_site_refuse():
    """The red team's attack: site 1 hears that 3 dropped (it would reveal 3's pairwise key),
    sites 2 and 3 that 3 survived (they would reveal 3's self-mask); with both, 3's update is
    unmasked alone. Each site signs the set it was told; no set is signed by all its
    survivors, so every site refuses and the relay gets no share at all."""
    sites, keys, verify, _, _ = _masked_round()
    told = {1: [1, 2], 2: [1, 2, 3], 3: [1, 2, 3]}
    signatures = {i: keys[i].sign(sites[i].agree(told[i])) for i in sites}
    asks = {1: ([1, 2], [3]), 2: ([1, 2], [3]), 3: ([1, 2, 3], [])}
    shares, refusals = _unmask_all(sites, asks, signatures, verify)
    assert shares == [] and set(refusals) == {1, 2, 3}
    assert "sites [2] did not sign" in refusals[1] and "differs from the one this site signed" in refusals[2]
    assert "sites [1] did not sign" in refusals[3]
    # the same for the survivor set each was told: still nobody answers
    shares, refusals = _unmask_all(sites, {2: ([1, 2, 3], [])}, signatures, verify)
    assert shares == [] and "sites [1] did not sign" in refusals[2]


def test_a_site_given_fewer_peers_to_mask_with_is_not_unmasked_alone():
    """The relay withholds site 3's share from site 1, so that 1 masks only with 2 and the
    relay could strip its masks with keys it gets revealed elsewhere. The set of peers is in
    the signed agreement: 1's signature differs from 2's and 3's, so nobody reveals anything."""
    def starve(routed):
        return {**routed, 1: {k: v for k, v in routed[1].items() if k != 3}}

    sites, keys, verify, _, _ = _masked_round(inboxes=starve)
    with pytest.raises(AggregationFailed, match="does not match the sites this site masked with"):
        sites[1].agree([1, 2, 3])  # 1 did not mask with 3
    told = {1: [1, 2], 2: [1, 2, 3], 3: [1, 2, 3]}
    signatures = {i: keys[i].sign(sites[i].agree(told[i])) for i in sites}
    shares, refusals = _unmask_all(sites, {1: ([1, 2], []), 2: ([1, 2, 3], []), 3: ([1, 2, 3], [])},
                                   signatures, verify)
    assert shares == [] and refusals[1].startswith("sites [2] did not sign")
    assert refusals[2].startswith("sites [1] did not sign") and refusals[3].startswith("sites [1] did not sign")
    with pytest.raises(AggregationFailed, match="shares from 1 sites cannot reach threshold 2"):
        _masked_round(inboxes=lambda routed: {**routed, 1: {1: routed[1][1]}})


def test_substituted_or_replayed_adverts_are_refused():
    """Man in the middle: the relay swaps site 2's keys for its own (keeping or re-making the
    signature), renames an advert, or brings one from another researcher's or round's run."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from secagg.protocol import _raw, advert_message

    sites, keys, verify, adverts = _federation()
    own = _raw(X25519PrivateKey.generate().public_key())
    relay = Ed25519PrivateKey.generate()
    swapped = dict(adverts[1], c_pk=own, s_pk=own)
    resigned = dict(swapped, signature=relay.sign(advert_message("t/lying", "ada", swapped)))
    renamed = dict(adverts[1], name="hospital-3")
    other_researcher = _federation(context="t/lying", session="eve")[3][1]
    other_round = _federation(context="t/lying-2")[3][1]
    for fake in (swapped, resigned, renamed, other_researcher, other_round, dict(adverts[1], signature=b"")):
        roster = [adverts[0], fake, adverts[2]]
        with pytest.raises(AggregationFailed, match="is not signed by that site|lists a site twice"):
            SecAggSite.from_state(sites[1].to_state()).share_keys(roster, threshold=2, verify=verify)
    with pytest.raises(AggregationFailed, match="own advert"):
        sites[1].share_keys([dict(adverts[0], s_pk=own), adverts[1], adverts[2]], threshold=2, verify=verify)


def test_missing_or_forged_signatures_are_refused():
    """Fewer signatures than survivors (fewer than t, or a survivor left out), or one the relay
    made with a key of its own: no share."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sites, keys, verify, server, masked = _masked_round(4, 3, context="t/forged")
    survivors, dropped = server.collect_masked(masked)
    messages = {i: sites[i].agree(survivors) for i in survivors}
    honest = {i: keys[i].sign(m) for i, m in messages.items()}
    relay = Ed25519PrivateKey.generate()
    for signatures in ({1: honest[1], 2: honest[2]}, {**honest, 4: relay.sign(messages[4])},
                       {**honest, 3: honest[2]}, {**honest, 4: b"\0" * 64}, {**honest, 4: "not bytes"}):
        with pytest.raises(AggregationFailed, match="did not sign"):
            sites[1].unmask(survivors=survivors, dropped=dropped, signatures=signatures, verify=verify)
    with pytest.raises(AggregationFailed, match="sites \\[3, 4\\] did not sign"):
        server.collect_signatures({1: honest[1], 2: honest[2]})
    assert set(sites[1].unmask(survivors=survivors, dropped=dropped, signatures=honest, verify=verify)["b"]) \
        == {1, 2, 3, 4}


def test_replayed_steps_and_signatures_from_another_run_are_refused():
    sites, keys, verify, server, masked = _masked_round(context="t/replay")
    survivors, dropped = server.collect_masked(masked)
    signatures = {i: keys[i].sign(sites[i].agree(survivors)) for i in survivors}
    with pytest.raises(AggregationFailed, match="already signed"):
        sites[1].agree([1, 2])  # one survivor set per round
    with pytest.raises(AggregationFailed, match="already masked"):
        sites[1].masked_input(_updates(3)[1], inbox={})
    # the same hospitals' signatures from another researcher's run of the same study and round
    others = _masked_round(context="t/replay")[0]
    for i in others:
        others[i].session = "eve"
    replayed = {i: keys[i].sign(others[i].agree(survivors)) for i in survivors}
    with pytest.raises(AggregationFailed, match="did not sign"):
        sites[1].unmask(survivors=survivors, dropped=dropped, signatures=replayed, verify=verify)
    sites[1].unmask(survivors=survivors, dropped=dropped, signatures=signatures, verify=verify)
    with pytest.raises(AggregationFailed, match="already answered"):
        sites[1].unmask(survivors=survivors, dropped=dropped, signatures=signatures, verify=verify)
    fresh = SecAggSite(1, context="t/replay")
    with pytest.raises(AggregationFailed, match="has not masked"):
        fresh.agree([1, 2])
    with pytest.raises(AggregationFailed, match="has not masked"):
        fresh.unmask(survivors=[1, 2], dropped=[], signatures={}, verify=verify)


def test_a_minority_threshold_and_malformed_messages_are_refused():
    """t at most half the roster would let two disjoint survivor sets both reach it."""
    sites, keys, verify, adverts = _federation(4)
    with pytest.raises(AggregationFailed, match="more than half"):
        sites[1].share_keys(adverts, threshold=2, verify=verify)
    for bad in ("3", 2.5, True, None):
        with pytest.raises(AggregationFailed, match="integer of at least 2"):
            sites[2].share_keys(adverts, threshold=bad, verify=verify)
    with pytest.raises(ValueError, match="roster must be a list"):
        sites[1].share_keys({"site": 1}, threshold=3, verify=verify)
    with pytest.raises(ValueError, match="c_pk must be 32 bytes"):
        sites[1].share_keys([dict(adverts[0], c_pk="ab")] + adverts[1:], threshold=3, verify=verify)
    sites, keys, verify, server, masked = _masked_round(context="t/malformed")
    for survivors, match in ((["1", "2"], "positive integers"), ([1, float("nan")], "positive integers"),
                             ([1, 1, 2], "lists a site twice"), ("12", "must be a list")):
        with pytest.raises(ValueError, match=match):
            sites[1].agree(survivors)
    with pytest.raises(ValueError, match="positive integers"):
        SecAggSite(0, context="t/x")


# --- a second vector under the round's keys (the round's noised evaluation) ---------------


def _agreed_round(n=4, threshold=3, drop=()):
    sites, keys, verify, server, masked = _masked_round(n, threshold, context="t/extra")
    survivors, dropped = server.collect_masked({i: y for i, y in masked.items() if i not in drop})
    signatures = server.collect_signatures({i: keys[i].sign(sites[i].agree(survivors)) for i in survivors})
    server.unmask([sites[i].unmask(survivors=survivors, dropped=dropped, signatures=signatures, verify=verify)
                   for i in survivors])
    return sites, server, survivors


def test_an_extra_vector_sums_over_the_survivors_and_hides_each_site():
    sites, server, survivors = _agreed_round(drop={2})
    extras = {i: {"h": np.arange(32.0) * i - 7} for i in sites}
    masked = {i: sites[i].masked_extra(extras[i], purpose="evaluation") for i in survivors}
    total = server.unmask_extra(masked, purpose="evaluation")
    assert np.array_equal(total["h"], sum(extras[i]["h"] for i in survivors))  # integers are exact
    for i in survivors:  # what the relay holds of one site: nothing like its vector
        seen = FixedPoint().decode(masked[i]["h"])
        assert np.max(np.abs(seen - extras[i]["h"])) > 1e6
    with pytest.raises(AggregationFailed, match="missing: sites \\[3\\]"):  # one survivor short: still masked
        server.unmask_extra({i: y for i, y in masked.items() if i != 3}, purpose="evaluation")
    with pytest.raises(AggregationFailed, match="already masked its evaluation"):
        sites[1].masked_extra(extras[1], purpose="evaluation")
    with pytest.raises(AggregationFailed, match="has not signed"):  # the dropped site never signed
        sites[2].masked_extra(extras[2], purpose="evaluation")


def test_an_extra_vector_under_the_training_masks_reveals_nothing():
    """The extra vector's masks are not the update's: the difference of the two masked
    vectors of one site looks like noise, not like the difference of what they hide."""
    sites, keys, verify, server, masked = _masked_round(3, 2, context="t/extra2")
    survivors, _ = server.collect_masked(masked)
    for i in survivors:
        sites[i].agree(survivors)
    update = _updates(3, seed=7)[1]
    extra = sites[1].masked_extra({k: np.zeros_like(v) for k, v in update.items()}, purpose="evaluation")
    difference = FixedPoint().decode(np.concatenate([(masked[1][k] - extra[k]).ravel() for k in sorted(update)]))
    true = np.concatenate([update[k].ravel() for k in sorted(update)])
    assert abs(np.corrcoef(true, difference)[0, 1]) < 5 / np.sqrt(len(true))


def test_what_norm_bounding_holds_under_secure_aggregation():
    """The limit, stated as a test: honest sites bound their own update in the vetted job
    (``update_norm``), so the sum of honest updates is bounded; a lying hospital masks
    whatever it likes and the relay, seeing only the sum, cannot tell or remove it. The
    sum's deviation is exactly the liar's excess, bounded only by the fixed-point range."""
    from datasites.jobs.training import bounded_update

    bound = 0.05
    start = {"w": np.zeros(500)}
    raw = _updates(4, seed=9, shapes={"w": (500,)})
    honest = {i: bounded_update(start, raw[i], bound) for i in raw}
    assert all(np.linalg.norm(honest[i]["w"]) <= bound * (1 + 1e-9) for i in honest)
    lying = dict(honest)
    lying[4] = {"w": honest[4]["w"] * 1000}  # a site that skips the bound and scales its update
    clean, _ = secure_sum(honest, threshold=3, context="t/bound-1")
    attacked, _ = secure_sum(lying, threshold=3, context="t/bound-2")
    assert np.linalg.norm(clean["w"]) <= 4 * bound * (1 + 1e-6)  # honest sites: the sum is bounded
    excess = np.linalg.norm(attacked["w"] - clean["w"])
    assert abs(excess - 999 * np.linalg.norm(honest[4]["w"])) < 1e-3  # the liar's excess passes unseen

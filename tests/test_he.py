"""HE analytics: encrypted sums equal plaintext sums; only multi-site sums are decrypted."""

from __future__ import annotations

import numpy as np
import pytest

from he import KeyCustodian, Signer, TooFewSites, combine, encrypt


@pytest.fixture(scope="module")
def study():
    custodian = KeyCustodian("rwe-2026", min_sites=2)
    sites = {name: Signer(name) for name in ("amsterdam", "lyon", "boston", "houston")}
    aggregators = {name: Signer(name) for name in ("eu-aggregator", "us-aggregator", "global-aggregator")}
    for s in sites.values():
        custodian.register(s.name, s.public_key, role="site")
    for a in aggregators.values():
        custodian.register(a.name, a.public_key, role="aggregator")
    keys = {n: x.public_key for n, x in {**sites, **aggregators}.items()}
    return custodian, sites, aggregators, keys


def _stats(rng):
    age = rng.normal(62, 9, 300)
    table = rng.integers(0, 80, 4)
    return {"n": 300.0, "sum_age": float(age.sum()), "sumsq_age": float((age ** 2).sum()),
            **{f"hist_{i}": float(c) for i, c in enumerate(np.histogram(age, bins=8, range=(20, 100))[0])},
            "or_a": float(table[0]), "or_b": float(table[1]), "or_c": float(table[2]), "or_d": float(table[3])}


def test_he_aggregates_equal_plaintext_aggregates(study):
    custodian, sites, aggs, keys = study
    public = custodian.public_context()
    rng = np.random.default_rng(0)
    stats = {name: _stats(rng) for name in sites}
    enc = {name: encrypt(stats[name], public=public, signer=sites[name], study="rwe-2026", query="q1")
           for name in sites}
    eu = combine([enc["amsterdam"], enc["lyon"]], public=public, signer=aggs["eu-aggregator"], keys=keys)
    us = combine([enc["boston"], enc["houston"]], public=public, signer=aggs["us-aggregator"], keys=keys)
    world = combine([eu, us], public=public, signer=aggs["global-aggregator"], keys=keys)
    out = custodian.decrypt(world)
    for cell in stats["lyon"]:
        plain = sum(s[cell] for s in stats.values())
        assert out[cell] == pytest.approx(plain, rel=1e-6, abs=1e-3), cell  # CKKS tolerance
    assert set(world.sites) == set(sites)


def test_the_custodian_never_decrypts_one_site(study):
    custodian, sites, aggs, keys = study
    public = custodian.public_context()
    one = encrypt({"n": 12.0}, public=public, signer=sites["lyon"], study="rwe-2026", query="q2")
    with pytest.raises(ValueError, match="not a registered party"):  # a site's own ciphertext
        custodian.decrypt(one)
    alone = combine([one], public=public, signer=aggs["eu-aggregator"], keys=keys)
    with pytest.raises(TooFewSites, match="over 1 site"):
        custodian.decrypt(alone)
    forged = alone.__class__(**{**alone.__dict__, "sites": ("lyon", "amsterdam")})  # claims a second site
    with pytest.raises(ValueError, match="bad signature"):
        custodian.decrypt(forged)


def test_aggregators_hold_no_secret_key(study):
    import tenseal as ts

    custodian, sites, _, _ = study
    public = custodian.public_context()
    c = encrypt({"n": 5.0}, public=public, signer=sites["boston"], study="rwe-2026", query="q3")
    vector = ts.ckks_vector_from(ts.context_from(public), c.ciphertext)
    with pytest.raises(ValueError, match="secret"):
        vector.decrypt()
    with pytest.raises(ValueError, match="counted twice"):
        combine([c, c], public=public, signer=Signer("x"), keys={"boston": sites["boston"].public_key})

"""The study's key custodian: the only holder of the CKKS secret key.

Who holds what:
- the custodian (e.g. the consortium's data-coordinating centre, neither a hospital nor
  the researcher) makes the key pair and keeps the secret key;
- sites and aggregators get the public context: they can encrypt and add, not decrypt;
- the custodian decrypts a ciphertext only if it is signed by a registered aggregator
  and covers at least ``min_sites`` registered sites, so it never decrypts one site.

What stops it from decrypting a single site's ciphertext: it never receives one (site
ciphertexts stop at their regional aggregator, which has no key), and its ``decrypt``
refuses anything covering fewer than ``min_sites`` sites. A custodian colluding with an
aggregator could still decrypt one site's ciphertext; that is why sites add DP noise
before they encrypt, so even that reveals only an epsilon-DP statistic.
"""

from __future__ import annotations

from .contribution import Contribution, verify

__all__ = ["KeyCustodian", "TooFewSites", "CKKS_PARAMETERS"]

CKKS_PARAMETERS = {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 40, 40, 60], "global_scale_bits": 40}


def parameter_context():
    """A throw-away public context with the study parameters: enough to read a ciphertext's size."""
    import tenseal as ts

    global _PARAMETER_CONTEXT
    if _PARAMETER_CONTEXT is None:
        p = CKKS_PARAMETERS
        context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=p["poly_modulus_degree"],
                             coeff_mod_bit_sizes=p["coeff_mod_bit_sizes"])
        context.make_context_public()
        _PARAMETER_CONTEXT = context
    return _PARAMETER_CONTEXT


_PARAMETER_CONTEXT = None


class TooFewSites(PermissionError):
    """The custodian refuses to decrypt a sum over fewer sites than the study requires."""


class KeyCustodian:
    def __init__(self, study: str, *, min_sites: int = 2):
        import tenseal as ts

        if min_sites < 2:
            raise ValueError("min_sites below 2 would let the custodian decrypt one site's statistics")
        self.study, self.min_sites = study, min_sites
        p = CKKS_PARAMETERS
        self._context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=p["poly_modulus_degree"],
                                   coeff_mod_bit_sizes=p["coeff_mod_bit_sizes"])
        self._context.global_scale = 2 ** p["global_scale_bits"]
        self.sites: dict[str, bytes] = {}
        self.aggregators: dict[str, bytes] = {}
        self.decrypted: list[dict] = []  # what was decrypted, for the privacy receipt

    def public_context(self) -> bytes:
        """The context sites and aggregators use: public key only (no secret, relinearisation or Galois keys)."""
        return self._context.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False,
                                       save_relin_keys=False)

    def register(self, name: str, public_key: bytes, *, role: str) -> None:
        """Out-of-band registration of a site's or an aggregator's signing key."""
        if role not in ("site", "aggregator"):
            raise ValueError("role must be 'site' or 'aggregator'")
        (self.sites if role == "site" else self.aggregators)[name] = bytes(public_key)

    def decrypt(self, contribution: Contribution) -> dict[str, float]:
        import tenseal as ts

        if contribution.study != self.study:
            raise ValueError(f"this custodian holds the key of {self.study!r}, not {contribution.study!r}")
        verify(contribution, self.aggregators)  # sites' own ciphertexts are never decrypted here
        unknown = set(contribution.sites) - set(self.sites)
        if unknown:
            raise ValueError(f"the sum claims unregistered sites {sorted(unknown)}")
        if len(set(contribution.sites)) < self.min_sites:
            raise TooFewSites(f"refusing to decrypt a sum over {len(set(contribution.sites))} site(s); "
                              f"study {self.study} requires at least {self.min_sites}")
        values = ts.ckks_vector_from(self._context, contribution.ciphertext).decrypt()
        self.decrypted.append({"query": contribution.query, "sites": sorted(contribution.sites),
                               "by": contribution.by})
        return dict(zip(contribution.cells, values))

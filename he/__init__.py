"""Homomorphic-encryption analytics (TenSEAL CKKS): sites encrypt aggregate statistics,
aggregators add ciphertexts, a key custodian decrypts only sums over enough sites."""

from .contribution import Contribution, Signer, combine, encrypt
from .custodian import KeyCustodian, TooFewSites

__all__ = ["KeyCustodian", "Contribution", "Signer", "encrypt", "combine", "TooFewSites"]

"""Signed encrypted contributions: what a site sends and what an aggregator forwards.

A contribution is a CKKS vector of named cells (counts, sums, sums of squares, histogram
bins, 2x2 table cells) encrypted under the study's public key, the sites it covers, and
an Ed25519 signature by whoever made it. A site signs its own; an aggregator verifies
the signatures of what it adds and signs the sum, so the custodian can check which
sites a sum covers without ever seeing a single site's ciphertext.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["Contribution", "Signer", "encrypt", "encrypt_cells", "combine", "verify", "public_context"]


class Signer:
    """An Ed25519 identity (a site or an aggregator); its public key is registered out of band."""

    def __init__(self, name: str, key: Ed25519PrivateKey | None = None):
        self.name, self._key = name, key or Ed25519PrivateKey.generate()

    @property
    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption())

    @classmethod
    def from_private_bytes(cls, name: str, raw: bytes) -> "Signer":
        return cls(name, Ed25519PrivateKey.from_private_bytes(raw))

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


@dataclass(frozen=True)
class Contribution:
    study: str
    query: str
    cells: tuple[str, ...]
    sites: tuple[str, ...]  # the sites whose statistics this ciphertext sums
    by: str  # who made and signed it
    ciphertext: bytes
    signature: bytes = b""

    def message(self) -> bytes:
        head = json.dumps([self.study, self.query, list(self.cells), sorted(self.sites), self.by])
        return head.encode() + hashlib.sha256(self.ciphertext).digest()

    def to_dict(self) -> dict:
        return {**asdict(self), "cells": list(self.cells), "sites": list(self.sites)}

    @classmethod
    def from_dict(cls, data: dict) -> "Contribution":
        fields = {k: data[k] for k in cls.__dataclass_fields__}  # a job's reply may carry more (epsilon ...)
        return cls(**{**fields, "cells": tuple(fields["cells"]), "sites": tuple(fields["sites"])})


def public_context(public: bytes):
    import tenseal as ts

    context = ts.context_from(public)
    if context.is_private():
        raise ValueError("this context holds the secret key; sites and aggregators get the public one only")
    return context


def verify(contribution: Contribution, keys: dict[str, bytes]) -> None:
    """Raise ValueError unless ``contribution`` is signed by its registered maker."""
    if contribution.by not in keys:
        raise ValueError(f"{contribution.by!r} is not a registered party of study {contribution.study!r}")
    try:
        Ed25519PublicKey.from_public_bytes(keys[contribution.by]).verify(contribution.signature,
                                                                          contribution.message())
    except InvalidSignature:
        raise ValueError(f"the contribution from {contribution.by!r} has a bad signature") from None


def encrypt_cells(values: dict[str, float], *, public: bytes, by: str, study: str, query: str) -> Contribution:
    """A site's statistics encrypted under the study key, not yet signed (``message()`` is
    what its signer signs)."""
    import tenseal as ts

    cells = tuple(values)
    vector = ts.ckks_vector(public_context(public), [float(values[c]) for c in cells])
    return Contribution(study, query, cells, (by,), by, vector.serialize())


def encrypt(values: dict[str, float], *, public: bytes, signer: Signer, study: str, query: str) -> Contribution:
    """A site's statistics, encrypted under the study key and signed by the site."""
    unsigned = encrypt_cells(values, public=public, by=signer.name, study=study, query=query)
    return Contribution(**{**unsigned.__dict__, "signature": signer.sign(unsigned.message())})


def combine(contributions: list[Contribution], *, public: bytes, signer: Signer,
            keys: dict[str, bytes]) -> Contribution:
    """The homomorphic sum of verified contributions (an aggregator; it never holds the secret key)."""
    import tenseal as ts

    if not contributions:
        raise ValueError("nothing to combine")
    first = contributions[0]
    seen: set[str] = set()
    context = public_context(public)
    total = None
    for c in contributions:
        verify(c, keys)
        if (c.study, c.query, c.cells) != (first.study, first.query, first.cells):
            raise ValueError(f"contribution from {c.by!r} answers a different query or cell layout")
        if seen & set(c.sites):
            raise ValueError(f"sites {sorted(seen & set(c.sites))} would be counted twice")
        seen |= set(c.sites)
        vector = ts.ckks_vector_from(context, c.ciphertext)
        total = vector if total is None else total + vector
    unsigned = Contribution(first.study, first.query, first.cells, tuple(sorted(seen)), signer.name,
                            total.serialize())
    return Contribution(**{**unsigned.__dict__, "signature": signer.sign(unsigned.message())})

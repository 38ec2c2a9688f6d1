"""t-of-n Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

Used to let the surviving sites reconstruct a dropped site's masking key (or a live
site's self-mask) for the aggregator; any t - 1 shares reveal nothing. Coefficients come
from ``secrets`` (the OS CSPRNG).
"""

from __future__ import annotations

import secrets

__all__ = ["split", "combine", "PRIME"]

PRIME = 2 ** 521 - 1


def split(secret: bytes, *, threshold: int, holders: list[int]) -> dict[int, int]:
    """Shares of ``secret`` for each holder id (ids are positive and distinct)."""
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold must be between 1 and {len(holders)}, got {threshold}")
    if len(set(holders)) != len(holders) or min(holders) < 1:
        raise ValueError("holder ids must be distinct positive integers")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: sum(c * pow(x, k, PRIME) for k, c in enumerate(coefficients)) % PRIME for x in holders}


def combine(shares: dict[int, int], *, threshold: int, size: int = 32) -> bytes:
    """The secret from at least ``threshold`` shares (Lagrange interpolation at 0)."""
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares to reconstruct, have {len(shares)}")
    points = list(shares.items())[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    return secret.to_bytes(size, "big")

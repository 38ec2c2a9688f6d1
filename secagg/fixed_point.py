"""Real vectors as integers modulo 2^64, so that masks add and cancel exactly.

numpy's uint64 arithmetic wraps modulo 2^64, which is the group the masks live in. With
``fraction_bits`` = 24 a value is kept to 6e-8; the sum of n values stays exact while
``n * max|x| < 2^(63 - fraction_bits)`` (about 5e11 for n = 1: model updates are tiny).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FixedPoint"]


@dataclass(frozen=True)
class FixedPoint:
    fraction_bits: int = 24

    @property
    def scale(self) -> float:
        return float(2 ** self.fraction_bits)

    @property
    def max_abs(self) -> float:
        return 2.0 ** (62 - self.fraction_bits)

    def encode(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot encode NaN or infinite values for secure aggregation")
        if x.size and np.max(np.abs(x)) >= self.max_abs:
            raise ValueError(f"values up to {np.max(np.abs(x)):.3g} overflow the fixed-point range "
                             f"(|x| < {self.max_abs:.3g}); lower fraction_bits")
        return np.round(x * self.scale).astype(np.int64).view(np.uint64)

    def decode(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(v, dtype=np.uint64).view(np.int64).astype(np.float64) / self.scale

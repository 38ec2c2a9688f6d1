"""Scratch networks of simulated hospitals for notebooks, labs and teaching.

``open_network()`` generates data and starts the shipped hospitals as in-process Syft
datasites in a scratch directory; ``MEDSYFT_FAST=1`` (set by the test suite) shrinks the
cohort and the rounds so every notebook runs in seconds.
"""

from .network import Network, fast_mode, open_network, sizes
from .officers import approve_anyway, review_queues

__all__ = ["open_network", "Network", "fast_mode", "sizes", "review_queues", "approve_anyway"]

"""Secure aggregation of model updates (Bonawitz et al., CCS 2017): the aggregator learns
the sum of the sites' updates and nothing about any single one, even when sites drop out."""

from .fixed_point import FixedPoint
from .protocol import AggregationFailed, SecAggServer, SecAggSite, secure_sum

__all__ = ["SecAggSite", "SecAggServer", "FixedPoint", "AggregationFailed", "secure_sum"]

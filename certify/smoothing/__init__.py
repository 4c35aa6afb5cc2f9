"""Randomized smoothing: certificates for the smoothed classifier (Cohen et al. 2019; Yang et al. 2020)."""

from certify.smoothing.results import ABSTAIN, SmoothingResult, SmoothingResults
from certify.smoothing.sequential import Schedule, SequentialResult, SequentialResults
from certify.smoothing.smoothed import Smoothed

__all__ = ["ABSTAIN", "Schedule", "SequentialResult", "SequentialResults", "Smoothed", "SmoothingResult",
           "SmoothingResults"]

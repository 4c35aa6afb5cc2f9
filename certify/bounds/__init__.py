"""Bound propagation: IBP, CROWN and CROWN-IBP bounds on a network's outputs over an input ball."""

from certify.bounds.bounded import BoundedModel, Bounds
from certify.bounds.graph import UnsupportedModelError, trace

__all__ = ["BoundedModel", "Bounds", "UnsupportedModelError", "trace"]

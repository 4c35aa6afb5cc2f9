"""Exact rationals (fractions.Fraction) rounded to floats in a chosen direction.

Used where a bound written exactly (a VNN-LIB literal such as 0.1) must be turned into floats
without losing soundness: the parser rounds input boxes outward, the property checker compares
bounds with the smallest float64 above a threshold and runs counterexamples on the float32 points
of an exact box.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = ["round_down", "round_up", "f32_at_least", "f32_at_most"]

_F32_MAX = float(np.finfo(np.float32).max)


def round_down(q: Fraction) -> float:
    """The largest float64 <= q (-inf below the range)."""
    try:
        f = float(q)
    except OverflowError:
        return -math.inf if q < 0 else math.nextafter(math.inf, 0)
    return math.nextafter(f, -math.inf) if Fraction(f) > q else f


def round_up(q: Fraction) -> float:
    """The smallest float64 >= q (+inf above the range)."""
    return -round_down(-q)


def f32_at_least(q: Fraction) -> float:
    """The smallest float32 >= q, as a float (inf when none)."""
    if q > _F32_MAX:
        return math.inf
    if q < -_F32_MAX:
        return -_F32_MAX
    f = np.float32(round_up(q))  # may round down by one float32 step
    if Fraction(float(f)) < q:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


def f32_at_most(q: Fraction) -> float:
    """The largest float32 <= q, as a float (-inf when none)."""
    return -f32_at_least(-q)

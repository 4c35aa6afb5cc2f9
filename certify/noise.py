"""Noise distributions for randomized smoothing, and the certified radius each one gives.

| noise | parameter | norm | radius at p = lower bound on P(top class) > 1/2 | source |
|---|---|---|---|---|
| Gaussian N(0, sigma^2 I) | sigma | l2 | sigma * Phi^{-1}(p) | Cohen et al. 2019, Thm. 1 |
| Laplace, iid per coordinate | scale lambda | l1 | -lambda * log(2 (1 - p)) | Yang et al. 2020, Table 1 |
| Uniform on [-lambda, lambda]^d | half_width lambda | l1 | 2 lambda (p - 1/2) | Yang et al. 2020, Table 1 |

The radii are computed in the C++ core (csrc/stats/radius.cpp) and rounded down past their
floating-point error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from certify import _checks
from certify._native import core

__all__ = ["Noise", "Gaussian", "Laplace", "Uniform", "TAIL_MASS"]

# (noise, backend) -> (ideal mass the sampler cannot produce per unit, coordinates per unit).
#   native Gaussian: Box-Muller pairs with u1 >= 2^-33 give R <= sqrt(66 ln 2) = 6.76, and
#     P(R > r) = exp(-r^2 / 2), so 2^-33 per pair of coordinates.
#   native Laplace: v >= 2^-32 gives |z| <= 32 ln 2 lambda, a mass of 2^-32 per coordinate.
#   torch's generator (the twin): float Box-Muller on 24-bit uniforms, 2^-24 per pair; its
#     exponential is taken to stop at the same 24-bit resolution, 2^-24 per coordinate.
#   Uniform noise: bounded, nothing cut.
TAIL_MASS = {
    ("Gaussian", "native"): (2.0**-33, 2),
    ("Laplace", "native"): (2.0**-32, 1),
    ("Uniform", "native"): (0.0, 1),
    ("Gaussian", "torch"): (2.0**-24, 2),
    ("Laplace", "torch"): (2.0**-24, 1),
    ("Uniform", "torch"): (0.0, 1),
}


class Noise:
    """Base of the noise families. `kind` is the C++ core's code, `scale` its one parameter."""

    kind: int  # code of the C++ core: 0 Gaussian, 1 Laplace, 2 uniform
    norm: str  # the norm of the certified ball
    scale: float  # the one parameter (sigma, scale or half_width)

    def radius(self, p_lower):
        """Certified radius for lower bound(s) `p_lower` on the top class's probability (0 where <= 1/2)."""
        p = np.asarray(p_lower, dtype=np.float64)
        if np.any((p < 0) | (p > 1)):
            raise ValueError("p_lower must lie in [0, 1]")
        return self._radius_from_complement(1.0 - p)

    def _radius_from_complement(self, q):  # pragma: no cover - overridden
        raise NotImplementedError

    def sample_torch(self, shape, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        """Noise from torch's own generator: the plain-PyTorch twin's source (not Philox)."""
        raise NotImplementedError  # pragma: no cover

    def tail_mass(self, dim: int, backend: str = "native") -> float:
        """Probability, under the ideal noise on `dim` coordinates, of the draws the sampler cannot
        produce (its tails stop where its uniforms do). Subtracted from p_lower: by coupling,
        P_ideal(f = A) >= P_sampler(f = A) - tail_mass. Values in TAIL_MASS below."""
        per_unit, coordinates_per_unit = TAIL_MASS[(type(self).__name__, backend)]
        units = -(-int(dim) // coordinates_per_unit)
        return min(1.0, units * per_unit)


@dataclass(frozen=True)
class Gaussian(Noise):
    """Isotropic Gaussian noise N(0, sigma^2 I): certificates in the l2 norm."""

    sigma: float
    kind = 0
    norm = "l2"

    def __post_init__(self):
        object.__setattr__(self, "sigma", _checks.positive_scale("sigma", self.sigma))

    @property
    def scale(self) -> float:
        return self.sigma

    def _radius_from_complement(self, q):
        return core.gaussian_l2_radius(self.sigma, q)

    def sample_torch(self, shape, generator, dtype):
        return torch.randn(shape, generator=generator, dtype=dtype) * self.sigma


@dataclass(frozen=True)
class Laplace(Noise):
    """Laplace noise with scale lambda, iid per coordinate: certificates in the l1 norm."""

    scale: float
    kind = 1
    norm = "l1"

    def __post_init__(self):
        object.__setattr__(self, "scale", _checks.positive_scale("scale", self.scale))

    def _radius_from_complement(self, q):
        return core.laplace_l1_radius(self.scale, q)

    def sample_torch(self, shape, generator, dtype):
        magnitude = torch.empty(shape, dtype=dtype).exponential_(generator=generator)
        sign = torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1
        return magnitude * sign * self.scale


@dataclass(frozen=True)
class Uniform(Noise):
    """Uniform noise on [-half_width, half_width]^d: certificates in the l1 norm."""

    half_width: float
    kind = 2
    norm = "l1"

    def __post_init__(self):
        object.__setattr__(self, "half_width", _checks.positive_scale("half_width", self.half_width))

    @property
    def scale(self) -> float:
        return self.half_width

    def _radius_from_complement(self, q):
        return core.uniform_l1_radius(self.half_width, q)

    def sample_torch(self, shape, generator, dtype):
        return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * self.half_width

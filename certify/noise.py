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

__all__ = ["Noise", "Gaussian", "Laplace", "Uniform"]


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

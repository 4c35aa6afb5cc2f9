"""certify: certified robustness guarantees for PyTorch models.

Randomized smoothing: certify.Smoothed with certify.Gaussian / Laplace / Uniform noise.
Bound propagation: certify.BoundedModel (IBP, CROWN, CROWN-IBP), sound in floating point.
"""

from certify import stats, train
from certify._native import core as _core
from certify.bounds import BoundedModel, Bounds, UnsupportedModelError
from certify.noise import Gaussian, Laplace, Noise, Uniform
from certify.smoothing import ABSTAIN, Smoothed, SmoothingResult, SmoothingResults

__version__ = "0.1.0"

__all__ = [
    "ABSTAIN",
    "BoundedModel",
    "Bounds",
    "UnsupportedModelError",
    "Gaussian",
    "Laplace",
    "Noise",
    "Smoothed",
    "SmoothingResult",
    "SmoothingResults",
    "Uniform",
    "cuda_available",
    "get_num_threads",
    "set_num_threads",
    "stats",
    "train",
]


def cuda_available() -> bool:
    """True when certify was built with its CUDA parts and a CUDA device is visible."""
    return bool(_core.built_with_cuda()) and _core.cuda_device_count() > 0


def get_num_threads() -> int:
    """Threads used by certify's native CPU kernels (OpenMP); torch's own threads are separate."""
    return int(_core.get_num_threads())


def set_num_threads(n: int) -> None:
    """Sets the threads of certify's native CPU kernels. Results do not depend on it: noise is a
    function of (seed, input, sample), not of which thread draws it."""
    _core.set_num_threads(int(n))

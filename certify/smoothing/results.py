"""What a smoothing certification returns, for one input and for a batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SmoothingResult", "SmoothingResults", "ABSTAIN"]

ABSTAIN = -1


@dataclass(frozen=True)
class SmoothingResult:
    """The certificate for one input.

    prediction: the smoothed classifier's class, or -1 (ABSTAIN) when the lower bound on
        its probability is <= 1/2.
    radius: the certified radius in `norm` (0.0 when abstaining). With probability at least
        1 - alpha over the sampling, the smoothed classifier predicts `prediction` at every
        point within `radius` of the input.
    p_lower: the one-sided Clopper-Pearson lower bound on P(f(x + noise) = prediction).
    counts: class counts of the estimation draw (length num_classes).
    num_samples: noise samples drawn for this input (selection n0 + estimation n).
    look_hits: budgeted sequential CERTIFY only: hits of the selected class at each look made.
    """

    prediction: int
    radius: float
    norm: str
    p_lower: float
    counts: np.ndarray
    num_samples: int
    alpha: float
    look_hits: tuple | None = None

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


@dataclass(frozen=True)
class SmoothingResults:
    """Certificates for a batch of inputs: the fields of SmoothingResult as arrays (one entry per input)."""

    prediction: np.ndarray  # (B,) int64
    radius: np.ndarray  # (B,) float64
    norm: str
    p_lower: np.ndarray  # (B,) float64
    counts: np.ndarray  # (B, num_classes) int64
    num_samples: np.ndarray  # (B,) int64
    alpha: float
    # Budgeted sequential CERTIFY only: the class the n0 draw chose, the hits of that class at each
    # look made ((B, K), -1 after the look an input stopped at) and the schedule.
    selected: np.ndarray | None = None
    look_hits: np.ndarray | None = None
    looks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.prediction)

    def __getitem__(self, i: int) -> SmoothingResult:
        return SmoothingResult(
            prediction=int(self.prediction[i]),
            radius=float(self.radius[i]),
            norm=self.norm,
            p_lower=float(self.p_lower[i]),
            counts=self.counts[i].copy(),
            num_samples=int(self.num_samples[i]),
            alpha=self.alpha,
            look_hits=None if self.look_hits is None else tuple(int(h) for h in self.look_hits[i] if h >= 0),
        )

    def __iter__(self):
        return (self[i] for i in range(len(self)))

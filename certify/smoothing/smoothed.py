"""The smoothed classifier g(x) = argmax_c P(f(x + noise) = c) and its CERTIFY / PREDICT procedures.

Cohen, Rosenfeld, Kolter, "Certified adversarial robustness via randomized smoothing", ICML 2019,
Algorithms CERTIFY and PREDICT; Yang et al. 2020 for the l1 noises (see certify.noise).
"""

from __future__ import annotations

import numpy as np

from certify import _checks, stats
from certify._native import core, require_native_device
from certify.noise import Noise
from certify.smoothing import reference
from certify.smoothing.results import ABSTAIN, SmoothingResult, SmoothingResults
from certify.smoothing.sampling import Progress, Stream, count_classes
from certify.smoothing.sequential import BOUNDARIES, Schedule, SequentialResult, SequentialResults, run_sequential

__all__ = ["Smoothed"]

BACKENDS = ("native", "torch")
SAMPLES_INDEPENDENT = ("batch-norm statistics in training mode couple the noisy samples of a batch and change the "
                       "model, and dropout makes the draws depend on the batch")


class Smoothed:
    """A base classifier `model` smoothed by `noise`.

    model: a callable from a batch of inputs (batch, *input_shape) to logits (batch, num_classes):
        an nn.Module in eval mode, or a function.
    num_classes: number of classes of the model's output.
    noise: certify.Gaussian(sigma) (l2 radii), certify.Laplace(scale) or certify.Uniform(half_width) (l1 radii).
    input_shape: optional; when given, inputs of any other shape are refused.
    backend: "native" (C++ Philox noise, fused into the model's input buffer; the default) or
        "torch" (the plain-PyTorch twin, noise from torch's generator: a reference, and the path
        for devices without native kernels). Both give the same guarantee, not the same samples.
    """

    def __init__(self, model, num_classes: int, noise: Noise, *, input_shape=None, backend: str = "native"):
        if not callable(model):
            raise TypeError(f"model must be callable (an nn.Module or a function), got {type(model).__name__}")
        if not isinstance(noise, Noise):
            raise TypeError(
                "noise must be certify.Gaussian(sigma), certify.Laplace(scale) or certify.Uniform(half_width), "
                f"got {type(noise).__name__}"
            )
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.model = model
        self.num_classes = _checks.positive_int("num_classes", num_classes, minimum=2)
        self.noise = noise
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.backend = backend

    def __repr__(self) -> str:
        return f"Smoothed(num_classes={self.num_classes}, noise={self.noise!r}, backend={self.backend!r})"

    # ------------------------------------------------------------------ CERTIFY
    def certify(
        self, x, n0: int = 100, n: int = 100_000, alpha: float = 0.001, batch_size: int = 1_000,
        seed: int = 0, *, input_index: int = 0, progress: Progress | None = None,
        target_radius: float | None = None, max_samples: int | None = None, sequential: bool = False,
        tolerance: float | None = None, schedule: Schedule | None = None, boundary: str | None = None,
    ) -> SmoothingResult | SequentialResult:
        """CERTIFY for one input x (the model's input shape, no batch dimension).

        The n0 draw picks the class c_A (argmax of counts); an independent n draw gives k_A hits of
        c_A and p_lower = the one-sided Clopper-Pearson lower bound at level alpha. Abstains (-1)
        when p_lower <= 1/2; otherwise the radius is the noise's radius at p_lower. With probability
        >= 1 - alpha the answer is not wrong (Cohen et al. 2019, Prop. 2).
        Noise is a function of (seed, input_index, sample index): the same arguments give the same
        certificate.

        Sequential modes (certify.smoothing.sequential; the same alpha guarantee, whatever the
        stopping time; samples drawn in looks on `schedule`):
        - target_radius=r: is the input certified at radius r? Stops as soon as the answer is
          settled, using at most max_samples (default n) estimation samples; returns a
          SequentialResult (certified, radius = r where certified, num_samples used).
          boundary: "exact" (default; error spending with its level computed exactly, looks
          100 then x1.1, max_samples <= 10^7) or "bonferroni" (Clopper-Pearson at alpha / K,
          looks 100 then x2).
        - sequential=True: CERTIFY with budget n that stops once the rest of the budget is
          unlikely to add more than `tolerance` (default 0.1 x the noise scale) to the radius: the
          radius at n samples, were the hit rate to stay at its current estimate, is within
          `tolerance` of the radius now. The radius returned is certified at level alpha (for the
          look it stopped at, by the union bound over looks); the tolerance only decides when to
          stop and promises nothing about the radius a full run would have given. Its bound is
          Bonferroni's confidence sequence (looks 100 then x2).
        """
        x = _checks.input_tensor("x", x, self.input_shape, batched=False)
        input_index = _checks.index("input_index", input_index)
        result = self.certify_batch(
            x.unsqueeze(0), n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed,
            start_index=input_index, progress=progress, target_radius=target_radius, max_samples=max_samples,
            sequential=sequential, tolerance=tolerance, schedule=schedule, boundary=boundary,
        )
        return result[0]

    def certify_batch(
        self, xs, n0: int = 100, n: int = 100_000, alpha: float = 0.001, batch_size: int = 1_000,
        seed: int = 0, *, start_index: int = 0, progress: Progress | None = None,
        target_radius: float | None = None, max_samples: int | None = None, sequential: bool = False,
        tolerance: float | None = None, schedule: Schedule | None = None, boundary: str | None = None,
    ) -> SmoothingResults | SequentialResults:
        """CERTIFY for each input of xs (first dimension = inputs), independently.

        Input i uses noise input index start_index + i, so a dataset certified in chunks gives the
        same certificates as in one call. Model batches are filled across inputs.
        progress(done, total) is called after each model batch (samples of both draws; for the
        sequential modes `total` is the most they can draw).
        target_radius, max_samples, sequential, tolerance, schedule, boundary: the sequential modes, as in
        certify().
        """
        xs = _checks.input_tensor("xs", xs, self.input_shape, batched=True)
        n0 = _checks.positive_int("n0", n0)
        n = _checks.positive_int("n", n)
        alpha = _checks.probability_level("alpha", alpha)
        batch_size = _checks.positive_int("batch_size", batch_size)
        seed = _checks.seed(seed)
        start_index = _checks.index("start_index", start_index, limit=2**32 - len(xs) + 1)
        _checks.eval_mode(self.model, SAMPLES_INDEPENDENT)
        _checks.model_dtype(self.model, xs.dtype)
        if self.backend == "torch":
            if target_radius is not None or sequential or boundary is not None:
                raise ValueError("sequential certification runs on the native backend (backend='native')")
            return reference.certify_batch(
                self.model, xs, self.num_classes, self.noise, n0, n, alpha, batch_size, seed, start_index
            )
        require_native_device(xs, "xs")
        if max(n0, n) > core.MAX_SAMPLE_INDEX:
            raise ValueError(f"n0 and n must be <= 2**48, got {max(n0, n)}")

        indices = np.arange(start_index, start_index + len(xs), dtype=np.int64)
        tail_mass = self.noise.tail_mass(xs[0].numel(), "native")
        if target_radius is not None or sequential:
            return self._sequential(xs, indices, n0, n, alpha, batch_size, seed, progress, target_radius,
                                    max_samples, sequential, tolerance, schedule, tail_mass, boundary)
        if boundary is not None or schedule is not None:
            raise ValueError("boundary and schedule apply to the sequential modes (target_radius or sequential=True)")
        total = len(xs) * (n0 + n)
        tick = None if progress is None else (lambda offset: lambda done, _: progress(offset + done, total))
        selection = count_classes(
            self.model, xs, indices, self.num_classes, self.noise, n0, Stream.SELECT, seed, batch_size,
            None if tick is None else tick(0),
        )
        estimation = count_classes(
            self.model, xs, indices, self.num_classes, self.noise, n, Stream.ESTIMATE, seed, batch_size,
            None if tick is None else tick(len(xs) * n0),
        )
        return finish_certify(selection, estimation, n0, n, alpha, self.noise, tail_mass)

    def _sequential(self, xs, indices, n0, n, alpha, batch_size, seed, progress, target_radius, max_samples,
                    sequential, tolerance, schedule, tail_mass, boundary):
        if target_radius is not None:
            if sequential:
                raise ValueError("give target_radius (is the input certified at r?) or sequential=True "
                                 "(budgeted radius), not both")
            target_radius = _checks.non_negative("target_radius", target_radius)
            if tolerance is not None:
                raise ValueError("tolerance applies to sequential=True only")
            budget = n if max_samples is None else _checks.positive_int("max_samples", max_samples)
            boundary = "exact" if boundary is None else boundary
            if boundary not in BOUNDARIES:
                raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
            if boundary == "exact" and budget > core.EXACT_MAX_SAMPLES:
                raise ValueError(f"the exact boundary designs for max_samples up to {core.EXACT_MAX_SAMPLES:,} (its "
                                 f"recursion's time grows with it); got {budget:,}: use boundary='bonferroni'")
        else:
            if boundary not in (None, "bonferroni"):
                raise ValueError("the budgeted mode (sequential=True) bounds the radius with Bonferroni's confidence "
                                 "sequence; boundary='exact' tests one target radius (pass target_radius)")
            boundary = "bonferroni"
            if max_samples is not None:
                raise ValueError("max_samples applies to target_radius; with sequential=True the budget is n")
            budget = n
            tolerance = 0.1 * self.noise.scale if tolerance is None else _checks.non_negative("tolerance", tolerance)
        if budget > core.SEQUENTIAL_MAX_SAMPLES:
            raise ValueError(f"sequential certification draws at most {core.SEQUENTIAL_MAX_SAMPLES:,} samples per "
                             f"input, got {budget:,}")
        if schedule is None:
            schedule = Schedule()
        elif not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be certify.smoothing.Schedule, got {type(schedule).__name__}")
        return run_sequential(self.model, xs, indices, self.num_classes, self.noise, n0, budget, alpha, batch_size,
                              seed, schedule, tail_mass, target_radius=target_radius,
                              tolerance=tolerance or 0.0, boundary=boundary, progress=progress)

    # ------------------------------------------------------------------ PREDICT
    def predict(
        self, x, n: int = 1_000, alpha: float = 0.001, batch_size: int = 1_000, seed: int = 0,
        *, input_index: int = 0,
    ) -> int:
        """PREDICT: the top class of n noisy samples, or -1 (abstain) when the two-sided binomial
        test of its count against the runner-up's (p = 1/2) has p-value > alpha. The returned class
        differs from g(x) with probability <= alpha (Cohen et al. 2019, Prop. 1)."""
        x = _checks.input_tensor("x", x, self.input_shape, batched=False)
        n = _checks.positive_int("n", n)
        alpha = _checks.probability_level("alpha", alpha)
        batch_size = _checks.positive_int("batch_size", batch_size)
        seed = _checks.seed(seed)
        input_index = _checks.index("input_index", input_index)
        _checks.eval_mode(self.model, SAMPLES_INDEPENDENT)
        _checks.model_dtype(self.model, x.dtype)
        if self.backend == "torch":
            return reference.predict(self.model, x, self.num_classes, self.noise, n, alpha, batch_size, seed, input_index)
        require_native_device(x, "x")
        counts = count_classes(
            self.model, x.unsqueeze(0), np.array([input_index]), self.num_classes, self.noise, n,
            Stream.PREDICT, seed, batch_size,
        )[0]
        return predict_from_counts(counts, alpha)


def finish_certify(
    selection: np.ndarray, estimation: np.ndarray, n0: int, n: int, alpha: float, noise: Noise, tail_mass: float
) -> SmoothingResults:
    """CERTIFY's last step from the two draws' class counts, (B, C) each; shared with the twin.
    tail_mass: what the sampler's cut tails take from p_lower (Noise.tail_mass)."""
    chosen = selection.argmax(axis=1)
    hits = estimation[np.arange(len(chosen)), chosen].astype(np.int64)
    p_lower, radius = smoothing_bounds(noise, hits, n, alpha, tail_mass)
    certified = p_lower > 0.5
    return SmoothingResults(
        prediction=np.where(certified, chosen, ABSTAIN).astype(np.int64),
        radius=np.where(certified, radius, 0.0),
        norm=noise.norm,
        p_lower=p_lower,
        counts=estimation,
        num_samples=np.full(len(chosen), n0 + n, dtype=np.int64),
        alpha=alpha,
    )


def smoothing_bounds(noise: Noise, hits: np.ndarray, n: int, alpha: float,
                     tail_mass: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(p_lower, radius) per input from k_A = hits of the chosen class in n samples: the one-sided
    Clopper-Pearson lower bound at level alpha, less tail_mass, and the noise's radius there
    (0 when p_lower <= 1/2)."""
    return core.smoothing_bounds(noise.kind, noise.scale, np.ascontiguousarray(hits, dtype=np.int64), n, alpha,
                                 tail_mass)


def predict_from_counts(counts: np.ndarray, alpha: float) -> int:
    """PREDICT's decision from the class counts of its draw (shared with the twin)."""
    order = np.argsort(-counts, kind="stable")
    top, runner_up = int(counts[order[0]]), int(counts[order[1]])
    if stats.sign_test_pvalue(top, top + runner_up) > alpha:
        return ABSTAIN
    return int(order[0])

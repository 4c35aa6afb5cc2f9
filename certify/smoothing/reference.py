"""The plain-PyTorch twin of CERTIFY and PREDICT: noise from torch's generator, the same statistics.

Written as directly as the procedure reads (after locuslab/smoothing's core.py), with no fused
kernels: the reference the tests compare the native path with, and the baseline the benchmarks
measure it against. It runs wherever the model runs (any torch device).
"""

from __future__ import annotations

import numpy as np
import torch

from certify import _checks
from certify.noise import Noise
from certify.smoothing.results import SmoothingResults
from certify.smoothing.sampling import Stream

__all__ = ["certify_batch", "predict", "sample_counts"]


def _generator(seed: int, input_index: int, stream: int, device) -> torch.Generator:
    """A torch generator for one (seed, input, stream): independent streams by SeedSequence hashing."""
    state = np.random.SeedSequence([seed, input_index, stream]).generate_state(2, np.uint32)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(state[0]) << 32 | int(state[1]))
    return generator


def sample_counts(model, x, num_classes: int, noise: Noise, num: int, batch_size: int, generator) -> np.ndarray:
    """Class counts of argmax model(x + noise) over num samples of torch noise."""
    counts = torch.zeros(num_classes, dtype=torch.int64, device=x.device)
    remaining = num
    with torch.inference_mode():
        while remaining > 0:
            this_batch = min(batch_size, remaining)
            batch = x.unsqueeze(0).expand(this_batch, *x.shape)
            noisy = batch + noise.sample_torch(batch.shape, generator, x.dtype).to(x.device)
            logits = _checks.model_output(model(noisy), this_batch, num_classes)
            counts += torch.bincount(logits.argmax(dim=1), minlength=num_classes)
            remaining -= this_batch
    return counts.cpu().numpy()


def certify_batch(model, xs, num_classes, noise, n0, n, alpha, batch_size, seed, start_index) -> SmoothingResults:
    from certify.smoothing.smoothed import finish_certify  # the shared last step

    selection, estimation = [], []
    for i, x in enumerate(xs):
        index = start_index + i
        g_select = _generator(seed, index, Stream.SELECT, "cpu")
        g_estimate = _generator(seed, index, Stream.ESTIMATE, "cpu")
        selection.append(sample_counts(model, x, num_classes, noise, n0, batch_size, g_select))
        estimation.append(sample_counts(model, x, num_classes, noise, n, batch_size, g_estimate))
    return finish_certify(np.stack(selection), np.stack(estimation), n0, n, alpha, noise,
                          noise.tail_mass(xs[0].numel(), "torch"))


def predict(model, x, num_classes, noise, n, alpha, batch_size, seed, input_index) -> int:
    from certify.smoothing.smoothed import predict_from_counts

    generator = _generator(seed, input_index, Stream.PREDICT, "cpu")
    return predict_from_counts(sample_counts(model, x, num_classes, noise, n, batch_size, generator), alpha)

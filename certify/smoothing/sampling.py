"""The sampling engine: class counts of the base classifier under noise, for many inputs at once.

Each model batch holds the samples of one input only: input i's samples start .. start + num - 1
in batches of `batch_size` rows (the last one shorter). The class counts of an input are then a
function of that input, the seed, the sample range and the batch size alone, not of which inputs
were certified beside it: a float32 forward pass can round a sample's logits differently in
another batch (BLAS kernels block rows by the batch's size and position), which flips near-tie
predictions, and an audit that re-certifies one input must see the run's counts exactly. (Mixing
inputs to fill batches was faster for small sample counts; reproducibility comes first.)
Noise comes from the C++ core's fused kernel, written straight into one reusable buffer; sample s
of input i in a stream is always the same noise, however the work is cut.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

from certify import _checks
from certify._native import core
from certify.noise import Noise

__all__ = ["Stream", "count_classes"]

Progress = Callable[[int, int], None]


class Stream:
    """Independent noise streams (word 2 of the Philox counter): a draw of one never reuses another's."""

    SELECT = 0  # CERTIFY's n0 draw that picks the class
    ESTIMATE = 1  # CERTIFY's n draw that bounds its probability
    PREDICT = 2  # PREDICT's draw


def count_classes(
    model,
    xs: torch.Tensor,
    input_indices: np.ndarray,
    num_classes: int,
    noise: Noise,
    num,
    stream: int,
    seed: int,
    batch_size: int,
    progress: Progress | None = None,
    start=None,
) -> np.ndarray:
    """Counts of argmax model(x_i + noise) over samples start_i .. start_i + num_i - 1 of each
    input's stream; returns (B, num_classes) int64.

    xs: (B, *input_shape) float32/float64 on the CPU or a CUDA device (the noise kernel of that
    device fills the batches, the counts stay on it until the end); input_indices: (B,) the Philox
    input index of each. num: samples per input, one number or (B,); start: first sample index per
    input ((B,), default 0).
    """
    num_inputs = xs.shape[0]
    input_shape = tuple(xs.shape[1:])
    nums = np.broadcast_to(np.asarray(num, dtype=np.int64), (num_inputs,))
    starts = np.zeros(num_inputs, dtype=np.int64) if start is None else np.asarray(start, dtype=np.int64)
    device = xs.device
    flat = xs.reshape(num_inputs, -1).contiguous()
    total = int(nums.sum()) if num_inputs else 0
    counts = torch.zeros(num_inputs * num_classes, dtype=torch.int64, device=device)
    if total == 0:
        return counts.view(num_inputs, num_classes).cpu().numpy()
    buffer = torch.empty((min(batch_size, total), flat.shape[1]), dtype=xs.dtype, device=device)
    fill = _cuda_filler(flat, buffer, noise, seed, stream) if device.type == "cuda" else \
        _cpu_filler(flat, buffer, noise, seed, stream)

    done = 0
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with torch.inference_mode(), on_device:
        for i in range(num_inputs):
            offset = 0
            while offset < int(nums[i]):  # input i's samples alone, in batches of batch_size
                rows = min(batch_size, int(nums[i]) - offset)
                fill(i, 0, rows, int(input_indices[i]), int(starts[i]) + offset)
                batch = buffer[:rows].view(rows, *input_shape)
                try:
                    logits = model(batch)
                except Exception as exc:
                    raise RuntimeError(
                        f"the model failed on a batch of noisy inputs of shape {tuple(batch.shape)} ({exc}). "
                        "x must be one input without the batch dimension (xs: inputs along the first dimension); "
                        "pass input_shape= to Smoothed to have shapes checked up front"
                    ) from exc
                logits = _checks.model_output(logits, rows, num_classes)
                predictions = logits.argmax(dim=1).to(device)
                counts[i * num_classes:(i + 1) * num_classes] += torch.bincount(predictions, minlength=num_classes)
                offset += rows
                done += rows
                if progress is not None:
                    progress(done, total)
    return counts.view(num_inputs, num_classes).cpu().numpy()


def _cpu_filler(flat: torch.Tensor, buffer: torch.Tensor, noise: Noise, seed: int, stream: int):
    flat_np, buffer_np = flat.numpy(), buffer.numpy()

    def fill(i, row, take, input_index, first_sample):
        core.fill_noisy(flat_np[i], buffer_np[row:row + take], noise.kind, noise.scale, seed, input_index, stream,
                        first_sample)
    return fill


def _cuda_filler(flat: torch.Tensor, buffer: torch.Tensor, noise: Noise, seed: int, stream: int):
    """The CUDA kernel on torch's current stream of the tensors' device: launches queue behind the
    previous batch's forward pass, with no synchronisation until the counts are read."""
    cuda_stream = torch.cuda.current_stream(flat.device).cuda_stream  # the launches also need flat.device
    # current (certify's runtime launches in the current context): count_classes sets it.
    dim = flat.shape[1]
    is_double = flat.dtype == torch.float64
    row_bytes = dim * flat.element_size()

    def fill(i, row, take, input_index, first_sample):
        core.fill_noisy_cuda(flat[i].data_ptr(), dim, buffer.data_ptr() + row * row_bytes, take, is_double,
                             noise.kind, noise.scale, seed, input_index, stream, first_sample, cuda_stream)
    return fill

"""Argument checks shared by the public API: each error names the argument and what was expected."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

SUPPORTED_DTYPES = (torch.float32, torch.float64)


def positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


# The smallest failure probability taken: below it the binomial bounds' arithmetic reaches
# subnormal numbers, where their outward rounding no longer covers the error (csrc/stats/binomial.h).
MIN_ALPHA = 1e-300


def probability_level(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1), got {type(value).__name__}")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")
    if value < MIN_ALPHA:
        raise ValueError(f"{name} must be >= {MIN_ALPHA:g}, got {value}")
    return value


def non_negative(name: str, value) -> float:
    """A finite number >= 0, as a float (-0.0 becomes 0.0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number >= 0, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value + 0.0


def positive_scale(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {type(value).__name__}")
    if not 0 <= value < 2**64:
        raise ValueError(f"seed must lie in [0, 2**64), got {value}")
    return int(value)


def index(name: str, value, limit: int = 2**32) -> int:
    value = positive_int(name, value, minimum=0)
    if value >= limit:
        raise ValueError(f"{name} must be < {limit}, got {value}")
    return value


def input_tensor(name: str, x, expected_shape: tuple[int, ...] | None, batched: bool) -> torch.Tensor:
    """A finite float32/float64 tensor of the expected shape (with a leading batch dim if `batched`)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if batched and x.dim() < 2:
        raise ValueError(f"{name} must be a batch of inputs (first dimension = inputs), got shape {tuple(x.shape)}")
    if not batched and x.dim() < 1:
        raise ValueError(f"{name} must be one input with at least one dimension, got a scalar")
    if expected_shape is not None:
        shape = tuple(x.shape[1:]) if batched else tuple(x.shape)
        if shape != tuple(expected_shape):
            what = "each input of " + name if batched else name
            raise ValueError(f"{what} must have shape {tuple(expected_shape)} (the model's input shape), got {shape}")
    if x.requires_grad:
        x = x.detach()
    if x.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def model_output(logits, batch: int, num_classes: int) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"the model must return a tensor of logits, got {type(logits).__name__}")
    if tuple(logits.shape) != (batch, num_classes):
        raise ValueError(
            f"the model returned shape {tuple(logits.shape)} for a batch of {batch} inputs; "
            f"expected (batch, num_classes) = ({batch}, {num_classes})"
        )
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("the model returned NaN or infinite logits on noisy inputs")
    return logits


def eval_mode(model, why: str) -> None:
    """Refuses a module with any sub-module in training mode (dropout, batch statistics), saying `why`
    that matters to the caller. A plain function is trusted: wrap modules in eval mode."""
    if isinstance(model, torch.nn.Module):
        training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
        if training:
            raise ValueError(
                f"the model has modules in training mode ({', '.join(training[:3])}); call model.eval() first ({why})"
            )


def model_dtype(model, dtype: torch.dtype) -> None:
    """An input whose dtype differs from the model's floating-point parameters is refused up front."""
    if not isinstance(model, torch.nn.Module):
        return
    for param in model.parameters():
        if param.is_floating_point():
            if param.dtype != dtype:
                raise TypeError(
                    f"the input has dtype {dtype} but the model's parameters are {param.dtype}; "
                    f"convert one of them (e.g. x.to({param.dtype}) or model.to({dtype}))"
                )
            return

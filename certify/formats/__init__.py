"""Reading what users bring: model files (ONNX, torch.export, TorchScript, state dicts), data
arrays, and VNN-LIB properties."""

from __future__ import annotations

__all__ = ["ModelFileError", "DataFileError"]


class ModelFileError(ValueError):
    """A model file that cannot be read safely: corrupt, truncated, of an unknown format, or a
    pickle that would run code. The message says which file and why."""


class DataFileError(ValueError):
    """A data file that cannot be used: unreadable, of the wrong shape or dtype, or with labels
    that do not match the inputs."""

"""Loading the inputs to certify: .npz / .npy arrays, or the bundled digits.

Arrays are read with allow_pickle=False (an object array in the file is refused, never unpickled).
Input i of a data set is row i of its array; runs and certificates name inputs by that index, and
the noise for input i is drawn from Philox stream i, so any subset certifies as in the full run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from certify.formats import DataFileError
from certify.formats.model_files import sha256_file

__all__ = ["Dataset", "load_data", "save_npz", "BUILTIN_DIGITS"]

BUILTIN_DIGITS = "digits"  # the 297 test digits of certify.models, pixels in [0, 1], (1, 8, 8)
INPUT_KEYS = ("x", "inputs", "images", "data", "X")
LABEL_KEYS = ("y", "labels", "targets", "Y")


@dataclass
class Dataset:
    x: torch.Tensor  # (N, *input_shape) float32
    y: torch.Tensor  # (N,) int64
    path: str  # the file as given, or "digits"
    sha256: str  # of the file's bytes (.npy with labels: the inputs file's bytes, then the labels file's);
    # for the bundled digits, of the float32 inputs and int64 labels

    def __len__(self) -> int:
        return len(self.x)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


def load_data(spec, labels=None) -> Dataset:
    """spec: "digits", a .npz file with inputs (key x, inputs, images, data or X) and labels (y,
    labels, targets or Y), or a .npy file of inputs with `labels` a .npy file of labels."""
    if str(spec) == BUILTIN_DIGITS:
        if labels is not None:
            raise DataFileError("the bundled digits carry their own labels; drop --labels")
        from certify import models

        _, _, x, y = models.digits()
        digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
        return Dataset(x, y, BUILTIN_DIGITS, digest)
    path = Path(spec)
    if not path.is_file():
        raise DataFileError(f"data file {path} does not exist (or pass 'digits' for the bundled data)")
    if path.suffix == ".npz":
        if labels is not None:
            raise DataFileError(f"{path} is an .npz file: its labels come from inside it; drop --labels")
        arrays = _read(path)
        x = _pick(arrays, INPUT_KEYS, path, "inputs")
        y = _pick(arrays, LABEL_KEYS, path, "labels")
    elif path.suffix == ".npy":
        if labels is None:
            raise DataFileError(f"{path} holds inputs only: pass --labels with a .npy file of labels")
        x, y = _read(path), _read(Path(labels))
    else:
        raise DataFileError(f"data file {path} must be .npz (inputs and labels) or .npy (inputs, with --labels)")
    files = [path] if labels is None else [path, Path(labels)]
    return Dataset(_inputs(x, path), _labels(y, len(x), path), str(spec), sha256_file(*files))


def save_npz(path: Path, x: torch.Tensor, y: torch.Tensor) -> None:
    """Inputs and labels as an .npz that load_data reads back, written atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, x=x.numpy().astype(np.float32), y=y.numpy().astype(np.int64))
    tmp.replace(path)


def _read(path: Path):
    if not path.is_file():
        raise DataFileError(f"data file {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            if path.suffix != ".npz":
                raise DataFileError(f"{path} is an .npz archive, not a plain .npy array; name it .npz")
            return dict(loaded.items())
        return loaded
    except DataFileError:
        raise
    except ValueError as exc:  # numpy's message for an object array without allow_pickle
        if "pickle" in str(exc).lower():
            raise DataFileError(f"{path} holds Python objects (a pickled array); certify reads numeric arrays only") \
                from exc
        raise DataFileError(f"could not read {path}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - zip / format errors of a damaged file
        raise DataFileError(f"could not read {path}: {exc}") from exc


def _pick(arrays: dict, keys: tuple[str, ...], path: Path, what: str) -> np.ndarray:
    for key in keys:
        if key in arrays:
            return arrays[key]
    raise DataFileError(f"{path} has no {what} array: expected one of the keys {', '.join(keys)}; "
                        f"it holds {', '.join(arrays) or 'nothing'}")


def _inputs(x: np.ndarray, path: Path) -> torch.Tensor:
    if x.dtype.kind != "f":
        raise DataFileError(f"inputs in {path} must be floating point, got {x.dtype}")
    if x.ndim < 2 or len(x) == 0:
        raise DataFileError(f"inputs in {path} must be (N, *input_shape) with N >= 1, got shape {x.shape}")
    x = x.astype(np.float32)  # the models take float32; a float64 file is rounded to nearest
    if not np.isfinite(x).all():
        raise DataFileError(f"inputs in {path} contain NaN or infinity")
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels(y: np.ndarray, count: int, path: Path) -> torch.Tensor:
    if y.dtype.kind not in "iu":
        raise DataFileError(f"labels for {path} must be integers, got {y.dtype}")
    y = y.reshape(-1)
    if len(y) != count:
        raise DataFileError(f"{path}: {count} inputs but {len(y)} labels")
    if (y < 0).any():
        raise DataFileError(f"labels for {path} must be >= 0")
    return torch.from_numpy(y.astype(np.int64))

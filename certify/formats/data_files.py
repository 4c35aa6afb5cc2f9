"""Loading the inputs to certify: .npz / .npy arrays, or the bundled digits.

Arrays are read without pickle (an object array in the file is refused, never unpickled), by
certify's own reader: each .npy header (inside an .npz: only the members it needs) is parsed
first, and the array's size is checked against certify.limits before anything is allocated or
decompressed, as are the file's size and an archive's member count. Labels are checked in their
stored dtype before the cast to int64, so no label can wrap to a negative value.

Input i of a data set is row i of its array; runs and certificates name inputs by that index, and
the noise for input i is drawn from Philox stream i, so any subset certifies as in the full run.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from certify import limits
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
        x, y = _read_npz(path)
    elif path.suffix == ".npy":
        if labels is None:
            raise DataFileError(f"{path} holds inputs only: pass --labels with a .npy file of labels")
        x, y = _read_npy(path, "inputs"), _read_npy(Path(labels), "labels")
    else:
        raise DataFileError(f"data file {path} must be .npz (inputs and labels) or .npy (inputs, with --labels)")
    files = [path] if labels is None else [path, Path(labels)]
    return Dataset(_inputs(x, path), _labels(y, len(x), path), str(spec), sha256_file(*files))


def save_npz(path: Path, x, y) -> None:
    """Inputs (float32) and labels (int64) as an .npz that load_data reads back, written atomically.
    x, y: torch tensors or NumPy arrays."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")

    def array(t):
        return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)

    np.savez(tmp, x=array(x).astype(np.float32), y=array(y).astype(np.int64))
    tmp.replace(path)


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive with members; an empty one
_MAX_HEADER_BYTES = 65_536  # an .npy header is a short dict literal (numpy stops at 10,000 characters)
_CHUNK = 1 << 24


def _check_file(path: Path, what: str = "data file") -> bytes:
    """Refuses a missing or too large file; returns its first 8 bytes."""
    if not path.is_file():
        raise DataFileError(f"{what} {path} does not exist")
    limits.check("file_bytes", path.stat().st_size, f"{what} {path}")
    with open(path, "rb") as f:
        return f.read(8)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The inputs and labels arrays of the .npz archive `path`, every size checked before it is
    allocated: the file, the number of members, each member's declared size and its .npy header."""
    head = _check_file(path)
    if head[:4] not in ZIP_MAGICS:
        hint = (" (it is a plain .npy array: name it .npy and pass --labels)" if head.startswith(NPY_MAGIC)
                else "")
        raise DataFileError(f"{path} is not an .npz (zip) archive{hint}; certify reads .npz files made by "
                            "numpy.savez or numpy.savez_compressed")
    try:
        with open(path, "rb") as f, limits.open_zip(f, f"data file {path}") as archive:
            members = archive.infolist()
            named = {}
            for info in members:  # numpy's keys: the member names less ".npy"
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                named.setdefault(key, info)
            x = _pick(named, INPUT_KEYS, path, "inputs")
            y = _pick(named, LABEL_KEYS, path, "labels")
            return _read_member(archive, x, path), _read_member(archive, y, path)
    except (DataFileError, limits.ResourceLimitError):
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile and zlib raise many types for a damaged archive
        raise DataFileError(f"could not read {path}: it is a damaged .npz (zip) archive "
                            f"({type(exc).__name__}: {exc})") from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    where = f"{path}, member '{info.filename}'"
    limits.check("decompressed_bytes", info.file_size, f"{where} (its declared uncompressed size)")
    with archive.open(info) as stream:
        return _read_array(stream, info.file_size, where)


def _read_npy(path: Path, what: str) -> np.ndarray:
    """The array in the .npy file `path` (`what`: "inputs" or "labels"), its header checked before
    the data is allocated."""
    head = _check_file(path, f"{what} file")
    if head[:4] in ZIP_MAGICS:
        hint = ": name it .npz and drop --labels" if what == "inputs" else ""
        raise DataFileError(f"{path} is an .npz archive, not a plain .npy array{hint}")
    try:
        with open(path, "rb") as f:
            return _read_array(f, path.stat().st_size, str(path))
    except (DataFileError, limits.ResourceLimitError):
        raise
    except OSError as exc:
        raise DataFileError(f"could not read {path}: {exc}") from None


def _read_array(stream, size: int, where: str) -> np.ndarray:
    """One .npy array from `stream` (a file, or a zip member of declared size `size`): the header
    first, then the data, allocated only once the header's shape and dtype pass every check."""
    magic = stream.read(8)
    if len(magic) < 8 or not magic.startswith(NPY_MAGIC):
        raise DataFileError(f"{where} is not a valid .npy array (it does not start with numpy's .npy header)")
    version = (magic[6], magic[7])
    if version not in ((1, 0), (2, 0)):
        raise DataFileError(f"{where} is an .npy file of format version {version[0]}.{version[1]}, which "
                            "certify does not read (numpy writes 1.0 or 2.0 for numeric arrays)")
    length_bytes = stream.read(2 if version == (1, 0) else 4)
    length = int.from_bytes(length_bytes, "little") if len(length_bytes) in (2, 4) else -1
    if not 0 <= length <= _MAX_HEADER_BYTES:
        raise DataFileError(f"{where} has a damaged .npy header (declared length {length})")
    header = stream.read(length)
    if len(header) != length:
        raise DataFileError(f"{where} is truncated inside its .npy header")
    parse = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about headers written by Python 2
            shape, fortran_order, dtype = parse(io.BytesIO(length_bytes + header))
    except Exception as exc:  # noqa: BLE001 - the header is parsed as a Python literal: any error is damage
        raise DataFileError(f"{where} has a damaged .npy header: {_first_line(exc)}") from None
    if dtype.hasobject:
        raise DataFileError(f"{where} holds Python objects (a pickled array); certify reads numeric arrays "
                            "only")
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise DataFileError(f"{where} holds values of type {dtype}; certify reads numeric arrays only")
    if any(type(d) is not int or d < 0 for d in shape):
        raise DataFileError(f"{where} declares the invalid shape {shape}")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    limits.check("decompressed_bytes", nbytes, f"{where} (an array of shape {shape}, {dtype})")
    left = size - (len(magic) + len(length_bytes) + length)
    if nbytes > left:
        raise DataFileError(f"{where} is truncated: its header declares shape {shape} of {dtype} "
                            f"({nbytes:,} bytes) but only {max(left, 0):,} bytes of data follow")
    array = np.empty(count, dtype)
    raw = memoryview(array.view(np.uint8))
    done = 0
    while done < nbytes:
        read = stream.readinto(raw[done:min(done + _CHUNK, nbytes)])
        if not read:
            raise DataFileError(f"{where} is truncated: {done:,} of {nbytes:,} bytes of data")
        done += read
    return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _pick(arrays: dict, keys: tuple[str, ...], path: Path, what: str) -> np.ndarray:
    for key in keys:
        if key in arrays:
            return arrays[key]
    raise DataFileError(f"{path} has no {what} array: expected one of the keys {', '.join(keys)}; "
                        f"it holds {', '.join(arrays) or 'nothing'}")


def _inputs(x: np.ndarray, path: Path) -> torch.Tensor:
    if x.dtype.kind != "f":
        raise DataFileError(f"inputs in {path} must be floating point, got {x.dtype}")
    if x.ndim < 2 or 0 in x.shape:
        raise DataFileError(f"inputs in {path} must be (N, *input_shape) with N >= 1 and no empty dimension, "
                            f"got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataFileError(f"inputs in {path} contain NaN or infinity")
    with np.errstate(over="ignore"):  # beyond float32's range: inf, refused below
        x32 = x.astype(np.float32)  # the models take float32
    if not np.isfinite(x32).all():
        raise DataFileError(f"inputs in {path} contain values beyond float32's range (about 3.4e38)")
    # A certificate names the file by its hash and speaks of balls around its inputs: an input that
    # float32 would round is refused, not silently moved (the ball around the rounded point is
    # another ball, and a network can tell them apart).
    inexact = np.flatnonzero((x32.astype(x.dtype) != x).reshape(len(x), -1).any(axis=1))
    if len(inexact):
        raise DataFileError(f"inputs in {path} hold {x.dtype} values that float32 cannot represent exactly (input "
                            f"{int(inexact[0])} and {len(inexact) - 1} more): certify certifies balls around the float32 "
                            "inputs the model runs on; save the data as float32 (x.astype(numpy.float32)) and certify "
                            "that file")
    return torch.from_numpy(np.ascontiguousarray(x32))


def _labels(y: np.ndarray, count: int, path: Path) -> torch.Tensor:
    """Class indices as int64, checked in the file's own dtype before the cast: an unsigned value
    beyond int64 (uint64 2**64 - 1) would otherwise wrap to a negative label, which would match the
    prediction -1 of an abstention. Floats and booleans are refused, not converted."""
    if y.dtype.kind not in "iu":
        raise DataFileError(f"labels for {path} must be integers (class indices), got {y.dtype}")
    y = y.reshape(-1)
    if len(y) != count:
        raise DataFileError(f"{path}: {count} inputs but {len(y)} labels")
    if len(y) and y.min() < 0:
        raise DataFileError(f"labels for {path} must be >= 0, got {y.min()}")
    largest = np.iinfo(np.int64).max
    if y.dtype.kind == "u" and len(y) and y.max() > np.array(largest, np.uint64):
        raise DataFileError(f"labels for {path} must be class indices, got {y.max()} (beyond int64)")
    return torch.from_numpy(y.astype(np.int64))

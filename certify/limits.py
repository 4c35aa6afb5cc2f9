"""Resource limits on what a file handed to certify can make it allocate or compute.

A small hostile file (a compressed array, an ONNX graph that folds into a huge constant, a
VNN-LIB literal with a million-digit exponent) must not exhaust memory or time. Every reader
checks the relevant limit *before* allocating, and a file over a limit is refused with a message
that names the limit, the value met and how to raise it: each limit can be raised with an
environment variable, CERTIFY_LIMIT_<NAME> (e.g. CERTIFY_LIMIT_DECOMPRESSED_BYTES=8e9).

This table is the one place the limits live; README's "Threat model" section lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Limit", "LIMITS", "ResourceLimitError", "value", "check", "open_zip"]


class ResourceLimitError(ValueError):
    """A file (or a value in it) exceeds one of certify's resource limits."""


@dataclass(frozen=True)
class Limit:
    name: str  # the key in LIMITS; the environment variable is CERTIFY_LIMIT_<NAME upper-cased>
    default: int
    unit: str
    what: str  # what is limited, in words

    @property
    def env(self) -> str:
        return f"CERTIFY_LIMIT_{self.name.upper()}"


LIMITS = {limit.name: limit for limit in (
    Limit("decompressed_bytes", 2 << 30, "bytes",
          "bytes one array of an .npz / .npy file, one compressed member of a torch.save model, or a "
          "gzip-compressed VNN-LIB file may expand to"),
    Limit("file_bytes", 4 << 30, "bytes", "size of a model, data, VNN-LIB or certificate file"),
    Limit("archive_members", 100_000, "members",
          "members of a zip archive (an .npz data file or a torch.save model)"),
    Limit("tensor_elements", 1 << 28, "elements",
          "elements of one tensor in an ONNX model: initializers, constants, values folded from them, the "
          "declared input and each computed value (per input)"),
    Limit("literal_digits", 400, "characters", "length of one numeric literal in a VNN-LIB file"),
    Limit("vnnlib_bytes", 64 << 20, "bytes", "text of one VNN-LIB file (after decompression, for .vnnlib.gz)"),
    Limit("property_size", 1 << 24, "terms",
          "size of a VNN-LIB property expanded into cases: its comparisons, and each case's input bounds "
          "plus one coefficient per output per constraint"),
    Limit("json_depth", 64, "levels", "nesting depth of a certificate's JSON"),
)}


def value(name: str) -> int:
    """The limit in force: the environment's CERTIFY_LIMIT_<NAME> if set (a positive number, e.g.
    8e9), else the default."""
    limit = LIMITS[name]
    raw = os.environ.get(limit.env)
    if raw is None or raw.strip() == "":
        return limit.default
    try:
        number = float(raw)
    except ValueError:
        raise ResourceLimitError(f"{limit.env}={raw!r} is not a number") from None
    if not number >= 1 or number != number or number == float("inf"):
        raise ResourceLimitError(f"{limit.env}={raw!r} must be a finite number >= 1")
    return int(number)


def check(name: str, amount: int, where: str) -> None:
    """ResourceLimitError if `amount` exceeds the limit `name`; `where` says which file or value."""
    limit = LIMITS[name]
    allowed = value(name)
    if amount > allowed:
        raise ResourceLimitError(
            f"{where}: {amount:,} {limit.unit} exceeds certify's limit of {allowed:,} {limit.unit} on the "
            f"{limit.what}; set {limit.env} to a larger number to allow it"
        )


def open_zip(file, where: str):
    """A zipfile.ZipFile on the open binary `file`, its member count checked against the limit
    "archive_members" twice: from the end-of-archive record before zipfile parses every entry (a
    small file can declare millions), and as parsed. `where` names the file in the message."""
    import zipfile

    end = getattr(zipfile, "_EndRecData", None)  # a private helper: used when present
    record = end(file) if end is not None else None
    if record is not None:
        check("archive_members", record[zipfile._ECD_ENTRIES_TOTAL], where)
    archive = zipfile.ZipFile(file)
    check("archive_members", len(archive.infolist()), where)
    return archive

"""Loading a model file without running code from it.

Formats, told apart by content (not only by the file name):
- ONNX (`.onnx`): converted to a torch.fx module of standard layers (certify.formats.onnx_import),
  which both the smoothing sampler and the bound tracer use.
- torch.export archives (`.pt2`, from torch.export.save) and TorchScript archives (torch.jit.save):
  these carry code (pickled objects inside .pt2 archives, a scripted __setstate__ in TorchScript)
  that runs while torch loads them, so they are read only with trust_code=True
  (`--trust-model-code`): for files you made yourself or trust like a program.
- State dicts (torch.save(model.state_dict())): read with torch.load(weights_only=True), which
  refuses any pickle that would import or call something other than tensors and containers. A
  state dict holds no architecture: `arch="package.module:factory"` names a Python callable (code
  the user chose to import) that builds the empty model.

Before anything is read, the file's size, a zip archive's member count and the declared size of
any compressed member are checked against certify.limits.

ONNX files and state dicts never run code from the file. A pickle of a whole nn.Module
(torch.save(model)) is refused: unpickling it runs code named in the file. The errors say how to
save the model instead.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import re
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from certify import limits
from certify.formats import ModelFileError

__all__ = ["LoadedModel", "load_model", "sha256_file"]

FORMATS = ("onnx", "torch.export", "torchscript", "state_dict")


@dataclass
class LoadedModel:
    module: torch.nn.Module  # eval mode, float32, takes (B, *input_shape)
    format: str  # one of FORMATS
    path: Path
    sha256: str
    input_shape: tuple[int, ...] | None  # known for ONNX (from the graph); else from the data


def sha256_file(*paths: Path) -> str:
    """SHA-256 of the files' bytes, one after the other."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


CODE_FORMATS = ("torch.export", "torchscript")


def load_model(path, arch: str | None = None, trust_code: bool = False) -> LoadedModel:
    """The model in `path` (see the module docstring for the formats); ModelFileError if it cannot
    be read safely. arch: "module:callable" building the architecture, for state dicts only.
    trust_code: allow the formats whose loading runs code from the file (torch.export, TorchScript)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    limits.check("file_bytes", path.stat().st_size, f"model file {path}")
    digest = sha256_file(path)
    kind = _detect(path)
    if arch is not None and kind != "state_dict":
        raise ModelFileError(f"--arch applies to state dicts only; {path} is a {kind} file that holds its own "
                             "architecture")
    if kind in CODE_FORMATS and not trust_code:
        raise ModelFileError(
            f"{path} is a {kind} archive: loading one runs code stored in the file, so certify reads it only "
            "with --trust-model-code (trust_code=True). Export the model to ONNX (certify.formats.onnx_import."
            "export_onnx, or torch.onnx.export with dynamo=False) or save its state dict to load it without "
            "running anything from the file")
    input_shape = None
    if kind == "onnx":
        from certify.formats.onnx_import import load_onnx

        module = load_onnx(path)
        input_shape = tuple(module.input_shape)
    elif kind == "torch.export":
        module = _load_exported(path)
    elif kind == "torchscript":
        module = _load_torchscript(path)
    else:
        module = _load_state_dict(path, arch)
    if kind == "torch.export":
        # The graph holds the ops captured at export time (its module refuses .eval()): refuse a
        # program exported in training mode, then set the flags certify's checks read.
        _refuse_training_ops(module, path)
        for sub in module.modules():
            sub.training = False
    else:
        module = module.eval()
    return LoadedModel(module, kind, path, digest, input_shape)


def _detect(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise ModelFileError(f"model file {path} is empty")
    if head.startswith(b"PK"):  # a zip archive: torch.save, torch.jit.save and torch.export.save all use zip
        try:
            with open(path, "rb") as f, limits.open_zip(f, f"model file {path}") as archive:
                members = archive.infolist()
            for info in members:  # torch.save stores members uncompressed; a compressed one could expand
                if info.compress_type != zipfile.ZIP_STORED:
                    limits.check("decompressed_bytes", info.file_size,
                                 f"model file {path}, compressed member '{info.filename}'")
            names = [info.filename for info in members]
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelFileError(f"model file {path} is a damaged zip archive ({exc})") from exc
        if any(name.endswith("archive_format") or "/serialized_exported_program" in name
               or name.startswith("models/") for name in names) and path.suffix == ".pt2":
            return "torch.export"
        if any("/code/" in name or name.startswith("code/") for name in names):
            return "torchscript"
        if any(name.endswith("data.pkl") for name in names):
            return "state_dict"
        raise ModelFileError(f"model file {path} is a zip archive of no format certify reads "
                             "(expected a torch.export .pt2, a TorchScript archive or a torch.save state dict)")
    if path.suffix == ".onnx":
        return "onnx"
    if head[:1] == b"\x80":  # a pickle protocol header: torch.save's legacy (non-zip) format
        return "state_dict"
    raise ModelFileError(f"model file {path} is not a format certify reads: ONNX (.onnx), torch.export (.pt2), "
                         "TorchScript, or a state dict saved with torch.save")


def _load_exported(path: Path) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.export.load warns about its own internals
            program = torch.export.load(path)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive
        raise ModelFileError(f"could not read the torch.export archive {path}: {exc}") from exc
    return program.module()


def _refuse_training_ops(module: torch.nn.Module, path: Path) -> None:
    """Dropout that drops, or batch norm with batch statistics, makes the noisy samples of a batch
    depend on each other: the counts would not be binomial."""
    for node in module.graph.nodes:
        name = str(node.target)
        training = (("dropout" in name and len(node.args) > 2 and node.args[2] is True)
                    or ("batch_norm" in name and ("no_training" not in name)
                        and (name.endswith("_legit.default") or "functional" in name
                             or (len(node.args) > 5 and node.args[5] is True))))
        if training:
            raise ModelFileError(f"{path} was exported in training mode ({name} at '{node.name}'); call "
                                 "model.eval() before torch.export.export")


def _load_torchscript(path: Path) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in torch 2.10+, still supported
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"could not read the TorchScript archive {path}: {exc}") from exc


def _load_state_dict(path: Path, arch: str | None) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy (non-zip) format warns on every load
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only=True refuses any global other than tensors and plain containers.
        raise ModelFileError(
            f"refused to load {path}: it is a pickle that would run code when loaded ({_refused_global(exc)}). certify "
            "never unpickles code. Save the weights with torch.save(model.state_dict(), path) and pass --arch, "
            "or export the model to ONNX (certify.formats.onnx_import.export_onnx, or torch.onnx.export with "
            "dynamo=False)."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - truncated files raise RuntimeError, EOFError, ...
        raise ModelFileError(f"could not read the state dict {path}: {_first_line(exc)}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    if arch is None:
        raise ModelFileError(f"{path} is a state dict: weights without an architecture. Pass --arch "
                             "package.module:function naming a callable that builds the model")
    model = _build_arch(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())  # torch lists the missing / unexpected keys over several lines
        raise ModelFileError(f"the state dict {path} does not fit the architecture {arch}: "
                             f"{detail[:800]}{' ...' if len(detail) > 800 else ''}") from exc
    return model


def _build_arch(arch: str) -> torch.nn.Module:
    module_name, _, attr = arch.partition(":")
    if not module_name or not attr:
        raise ModelFileError(f"--arch must look like package.module:function, got {arch!r}")
    # The user names this code; a module beside their files (the current folder) is found too,
    # as `python -c` would find it.
    here = os.getcwd()
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelFileError(f"cannot import the architecture {arch}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(here)
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - the user's code: report it as bad input
        raise ModelFileError(f"--arch {arch}() failed ({type(exc).__name__}: {exc}); it must build the model "
                             "with no arguments") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelFileError(f"{arch}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refused_global(exc: Exception) -> str:
    """What the pickle wanted to import, from torch's weights_only error."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f"it imports {found.group(1)}" if found else "it references objects other than tensors"

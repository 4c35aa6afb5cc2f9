"""Loads the C++ core (``certify._core``) with an error that says what to do when it is missing."""

from __future__ import annotations

try:
    # The extension links OpenBLAS from the scipy-openblas32 package (RPATH to its lib folder);
    # loading it first, globally, also covers installs where the two packages are not side by side.
    import ctypes
    import os

    import scipy_openblas32

    ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), "lib" + scipy_openblas32.get_library() + ".so"),
                mode=ctypes.RTLD_GLOBAL)
    from certify import _core as core
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "certify's C++ extension (certify._core) could not be imported. certify must be "
        "installed (pip install .), not imported from its source folder; "
        f"the import failed with: {exc}"
    ) from exc

__all__ = ["core", "require_cpu"]


def require_cpu(tensor, what: str) -> None:
    """Raises if `tensor` is not on the CPU: the native kernels of this build are CPU kernels."""
    if tensor.device.type != "cpu":
        raise ValueError(
            f"{what} is on {tensor.device}, but certify's native kernels in this build run on the "
            "CPU only (certify was built without CUDA kernels). Move the input and model to the CPU, "
            "or use backend='torch' (the plain-PyTorch path) for other devices."
        )

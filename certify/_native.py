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

__all__ = ["core", "require_cpu", "require_native_device"]


def require_cpu(tensor, what: str) -> None:
    """Raises if `tensor` is not on the CPU: for the kernels that have no CUDA version."""
    if tensor.device.type != "cpu":
        raise ValueError(
            f"{what} is on {tensor.device}, but this native kernel runs on the CPU only. Move the input "
            "and model to the CPU, or use backend='torch' (the plain-PyTorch path) for other devices."
        )


def require_native_device(tensor, what: str) -> None:
    """The dispatch rule of the kernels with a CUDA version: CPU tensors run the CPU kernel, CUDA
    tensors the CUDA kernel; a CUDA tensor in a build without CUDA, or with no device visible, is a
    clear error (never a silent copy to the CPU)."""
    kind = tensor.device.type
    if kind == "cpu":
        return
    if kind != "cuda":
        raise ValueError(f"{what} is on {tensor.device}: certify's native kernels run on the CPU and CUDA devices; "
                         "use backend='torch' for other devices")
    if not core.built_with_cuda():
        raise ValueError(f"{what} is a CUDA tensor, but certify was built without CUDA (reinstall with nvcc "
                         "available, or -Ccmake.define.CERTIFY_CUDA=ON to insist)")
    if core.cuda_device_count() == 0:
        raise ValueError(f"{what} is a CUDA tensor, but certify's CUDA runtime sees no CUDA device (driver missing "
                         "or too old for CUDA 13)")

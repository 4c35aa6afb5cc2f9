"""Plain-NumPy twin of the C++ noise kernel (csrc/common/philox.h, csrc/sampling/noise_*.h).

Readable and slow: the reference the tests compare the fused kernel with, word for word
(Philox) and to float rounding (the transforms; the kernel uses vectorised log/sin/cos).
NumPy rather than torch because the Philox rounds need wrapping uint32 x uint32 -> uint64
products, which torch's integer types do not offer.
"""

from __future__ import annotations

import numpy as np

__all__ = ["philox4x32_10", "noise_words", "noisy_copies"]

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 on counters (..., 4) uint32 under key (k0, k1); returns (..., 4) uint32."""
    c = [counter[..., i].astype(np.uint64) for i in range(4)]
    k0, k1 = key
    for round_ in range(10):
        if round_ > 0:
            k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
        p0, p1 = _M0 * c[0], _M1 * c[2]
        c = [
            (p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0),
            p1 & _MASK32,
            (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1),
            p0 & _MASK32,
        ]
    return np.stack(c, axis=-1).astype(np.uint32)


def noise_words(seed: int, input_index: int, stream: int, samples: np.ndarray, dim: int) -> np.ndarray:
    """The Philox words of coordinates 0..dim-1 of the given samples: (len(samples), dim) uint32.

    Counter layout: (block = d // 4, sample low 32 bits, sample bits 32..47 | stream << 16, input).
    """
    samples = np.asarray(samples, dtype=np.uint64)
    blocks = (dim + 3) // 4
    counter = np.zeros((len(samples), blocks, 4), dtype=np.uint32)
    counter[..., 0] = np.arange(blocks, dtype=np.uint32)[None, :]
    counter[..., 1] = (samples & _MASK32).astype(np.uint32)[:, None]
    counter[..., 2] = ((samples >> np.uint64(32)) | np.uint64(stream << 16)).astype(np.uint32)[:, None]
    counter[..., 3] = np.uint32(input_index)
    words = philox4x32_10(counter, (seed & 0xFFFFFFFF, seed >> 32))
    return words.reshape(len(samples), blocks * 4)[:, :dim]


def _standard_noise(kind: int, words: np.ndarray, dtype) -> np.ndarray:
    w = words.astype(np.float64)
    if kind == 0:  # Box-Muller on word pairs (2j, 2j+1)
        even, odd = w[:, 0::2], w[:, 1::2]
        radius = np.sqrt(-2.0 * np.log(even * 2.0**-32 + 2.0**-33))
        theta = 2 * np.pi * (np.floor(odd / 256) * 2.0**-24)
        z = np.empty_like(w)
        z[:, 0::2], z[:, 1::2] = radius * np.cos(theta), radius * np.sin(theta)
    elif kind == 1:  # sign bit, and -log of the low 31 bits as a uniform in (0, 1]
        v = (words & 0x7FFFFFFF).astype(np.float64) * 2.0**-31 + 2.0**-32
        z = np.where(words & 0x80000000, np.log(v), -np.log(v))
    else:  # ((w >> 8) + 1/2) 2^-24 in (0, 1), to (-1, 1)
        z = 2 * ((np.floor(w / 256) + 0.5) * 2.0**-24) - 1
    return z.astype(dtype)


def noisy_copies(x: np.ndarray, rows: int, kind: int, scale: float, seed: int, input_index: int,
                 stream: int, start: int) -> np.ndarray:
    """out[i] = x + scale * noise(seed, input_index, stream, start + i), as the C++ kernel (rows, x.size)."""
    flat = x.reshape(-1)
    padded = 4 * ((flat.size + 3) // 4)  # whole Philox blocks, as the kernel draws them
    words = noise_words(seed, input_index, stream, np.arange(start, start + rows, dtype=np.uint64), padded)
    z = _standard_noise(kind, words, np.float64)[:, : flat.size]
    return (flat[None, :].astype(np.float64) + scale * z).astype(flat.dtype)

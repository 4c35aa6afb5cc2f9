// Fused noisy copies of one input: the inner loop of randomized smoothing.
#pragma once

#include <cstdint>

#include "sampling/noise_transforms.h"

namespace certify {

// Writes `rows` noisy copies of `x` into `out`:
//   out[i, d] = x[d] + scale * noise_d(seed, input_index, stream, start + i)
// x:   (dim,)        float32 or float64, contiguous
// out: (rows, dim)   same dtype, contiguous; fully overwritten
// The noise of coordinate d of sample s is a pure function of (seed, input_index, stream,
// s, d): the result does not depend on `rows`, on `start` splitting, or on thread count.
// Parallel over rows with OpenMP; call it without the GIL.
// Throws std::invalid_argument if start + rows exceeds 2^48, stream >= 2^16, or
// dim exceeds 2^34 (the 32-bit block counter).
template <typename T>
void fill_noisy_cpu(const T* x, int64_t dim, T* out, int64_t rows, NoiseKind kind, T scale,
                    uint64_t seed, uint32_t input_index, uint32_t stream, uint64_t start);

}  // namespace certify

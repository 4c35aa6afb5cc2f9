// The fused noisy-copy kernel on a CUDA device: the same function as fill_noisy_cpu, with the same
// Philox counters, so a CUDA run draws the CPU run's noise (to float rounding of the transforms).
#pragma once

#include <cstdint>

#include "sampling/noise_transforms.h"

namespace certify {

// out[i, d] = x[d] + scale * noise_d(seed, input_index, stream, start + i), on the device.
// x:   device pointer, (dim,)        float32 (is_double = false) or float64
// out: device pointer, (rows, dim)   same dtype, contiguous; fully overwritten
// cuda_stream: the cudaStream_t to launch on (torch's current stream); nothing synchronises.
// Throws std::invalid_argument for out-of-range counters (as the CPU kernel) and
// std::runtime_error with CUDA's message when the launch fails; in a build without CUDA it
// throws "certify was built without CUDA".
void fill_noisy_cuda(const void* x, int64_t dim, void* out, int64_t rows, bool is_double, NoiseKind kind,
                     double scale, uint64_t seed, uint32_t input_index, uint32_t stream, uint64_t start,
                     void* cuda_stream);

}  // namespace certify

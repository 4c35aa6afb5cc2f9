#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "sampling/noise_cuda.h"

namespace certify {
namespace {

// One thread per Philox block of one row: 4 coordinates, laid out as in the CPU kernel
// (coordinate 4b + k takes word k of block b; Gaussian pairs (w0, w1) and (w2, w3)).
template <typename T>
__global__ void fill_noisy_kernel(const T* __restrict__ x, int64_t dim, T* __restrict__ out, int64_t rows,
                                  int64_t blocks_per_row, NoiseKind kind, T scale, uint64_t seed,
                                  uint32_t input_index, uint32_t stream, uint64_t start) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= rows * blocks_per_row) return;
  const int64_t row = t / blocks_per_row;
  const auto block = static_cast<uint32_t>(t - row * blocks_per_row);
  uint32_t w[4];
  philox_noise_block(w, seed, NoiseCounter{input_index, stream, start + static_cast<uint64_t>(row)}, block);
  T z[4];
  switch (kind) {
    case NoiseKind::kGaussian:
      box_muller<T>(w[0], w[1], &z[0], &z[1]);
      box_muller<T>(w[2], w[3], &z[2], &z[3]);
      break;
    case NoiseKind::kLaplace:
      for (int k = 0; k < 4; ++k) z[k] = standard_laplace<T>(w[k]);
      break;
    case NoiseKind::kUniform:
      for (int k = 0; k < 4; ++k) z[k] = standard_uniform<T>(w[k]);
      break;
  }
  const int64_t d0 = 4 * static_cast<int64_t>(block);
  T* o = out + row * dim;
  for (int k = 0; k < 4 && d0 + k < dim; ++k) o[d0 + k] = x[d0 + k] + scale * z[k];
}

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear it: the next call should not see this launch's error
    throw std::runtime_error(std::string("certify CUDA: ") + what + ": " + cudaGetErrorString(status));
  }
}

}  // namespace

void fill_noisy_cuda(const void* x, int64_t dim, void* out, int64_t rows, bool is_double, NoiseKind kind,
                     double scale, uint64_t seed, uint32_t input_index, uint32_t stream, uint64_t start,
                     void* cuda_stream) {
  if (rows < 0 || dim < 0) throw std::invalid_argument("rows and dim must be non-negative");
  if (start > kMaxSampleIndex || static_cast<uint64_t>(rows) > kMaxSampleIndex - start)
    throw std::invalid_argument("sample index start + rows exceeds 2^48, the sample counter's range");
  if (stream >= kMaxStream) throw std::invalid_argument("stream must be < 2^16");
  if ((dim + 3) / 4 > int64_t{1} << 32)
    throw std::invalid_argument("input dimension exceeds 2^34, the block counter's range");
  if (rows == 0 || dim == 0) return;
  const int64_t blocks_per_row = (dim + 3) / 4;
  const int64_t threads = rows * blocks_per_row;
  constexpr int kThreads = 256;
  const int64_t grid = (threads + kThreads - 1) / kThreads;
  if (grid > 0x7FFFFFFF) throw std::invalid_argument("fill_noisy_cuda: too many rows for one launch");
  auto s = static_cast<cudaStream_t>(cuda_stream);
  if (is_double)
    fill_noisy_kernel<double><<<static_cast<unsigned>(grid), kThreads, 0, s>>>(
        static_cast<const double*>(x), dim, static_cast<double*>(out), rows, blocks_per_row, kind, scale, seed,
        input_index, stream, start);
  else
    fill_noisy_kernel<float><<<static_cast<unsigned>(grid), kThreads, 0, s>>>(
        static_cast<const float*>(x), dim, static_cast<float*>(out), rows, blocks_per_row, kind,
        static_cast<float>(scale), seed, input_index, stream, start);
  check(cudaGetLastError(), "fill_noisy launch");
}

}  // namespace certify

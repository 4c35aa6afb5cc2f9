// fill_noisy_cuda in a build without CUDA: a clear error, never a silent CPU fallback.
#include <stdexcept>

#include "sampling/noise_cuda.h"

namespace certify {

void fill_noisy_cuda(const void*, int64_t, void*, int64_t, bool, NoiseKind, double, uint64_t, uint32_t, uint32_t,
                     uint64_t, void*) {
  throw std::runtime_error("certify was built without CUDA: reinstall with nvcc available "
                           "(pip install . -Ccmake.define.CERTIFY_CUDA=ON) to certify CUDA tensors");
}

}  // namespace certify

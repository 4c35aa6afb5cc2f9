// What the CUDA side of the build can see. Defined in cuda_device.cu when certify is
// built with CUDA (CERTIFY_CUDA=AUTO found nvcc, or ON), and as stubs otherwise.
#pragma once

namespace certify {

bool built_with_cuda();
// Number of usable CUDA devices; 0 without a driver or device (never throws).
int cuda_device_count();

}  // namespace certify

#include "common/cuda_device.h"

namespace certify {

bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }

}  // namespace certify

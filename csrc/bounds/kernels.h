// Dense kernels of the bound engine: GEMM (OpenBLAS, split over the OpenMP threads when large),
// and convolution as im2col + GEMM, with its adjoint restricted to windows of the maps.
#pragma once

#include <cstddef>
#include <cstdint>

#include "bounds/network.h"

namespace certify {
namespace bounds {

// C (M x N) = op(A) op(B), row-major. Large products are split into one block per OpenMP thread,
// each a single-threaded OpenBLAS call; call it from outside parallel regions.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float* C, int64_t ldc);

// The output columns ow whose input column ow*stride + offset lies inside [0, in): [lo, hi).
void valid_range(int64_t out, int64_t stride, int64_t offset, int64_t in, int64_t* lo, int64_t* hi);

// Working memory of the calling thread: slot `slot`, at least n floats, contents undefined. Kept
// between calls: fresh pages for every step cost more in page faults and zeroing than the step
// itself at small batches. Slots 0-3 are IBP's (ibp.cpp), kConvSlot conv_forward's.
constexpr int kWorkspaceSlots = 5, kConvSlot = 4;
float* workspace(int slot, size_t n);

// y (B, c_out, h_out * w_out) = conv(x (B, c_in, h_in, w_in), weight), no bias.
void conv_forward(const ConvShape& s, const float* weight, const float* x, int64_t batch, float* y);

// A window of a (C, H, W) map: rows [top, top + h) and columns [left, left + w) of every channel,
// laid out (C, h, w). It may hang over the map's edges.
struct Window {
  int64_t top = 0, left = 0, h = 0, w = 0;
};

// The adjoint of im2col for group g, restricted to windows: `cols` (q x ld, leading dimension ld)
// holds one column per position of the output window `out` (row-major within it); their scatter
// onto the input map is added to `x`, which holds the input window `in`. Input positions off the
// map (the zero padding, not values of the network) or off `in` are dropped.
void col2im_window(const ConvShape& s, const float* cols, int64_t ld, int64_t g, const Window& out, float* x,
                   const Window& in);

}  // namespace bounds
}  // namespace certify

// Dense kernels of the bound engine (see kernels.h).
#include "bounds/kernels.h"

#include <algorithm>
#include <vector>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace certify {
namespace bounds {
namespace {

// Products below this many multiply-adds run as one call: splitting them costs more in the
// parallel region's start-up than the second core gains (about 0.2 ms of work here).
constexpr double kParallelGemmWork = 2.0 * 1024 * 1024;

void gemm_one(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
              int64_t ldb, float* C, int64_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
                    1.0f, A, lda, B, ldb, 0.0f, C, ldc);
}

int gemm_threads() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

int thread_index() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// cols[(ci, ki, kj), (oh, ow)] = x[g*cin_g + ci, oh*sh - ph + ki*dh, ow*sw - pw + kj*dw], 0 outside,
// for group g; cols has leading dimension ld. Branch-free inner loops over each kernel column's
// precomputed valid range.
void im2col(const ConvShape& s, const float* x, int64_t g, float* cols, int64_t ld) {
  const int64_t cin_g = s.c_in / s.groups;
  for (int64_t ci = 0; ci < cin_g; ++ci)
    for (int64_t ki = 0; ki < s.kh; ++ki)
      for (int64_t kj = 0; kj < s.kw; ++kj) {
        float* row = cols + ((ci * s.kh + ki) * s.kw + kj) * ld;
        const float* plane = x + (g * cin_g + ci) * s.h_in * s.w_in;
        int64_t lo, hi;
        valid_range(s.w_out, s.sw, kj * s.dw - s.pw, s.w_in, &lo, &hi);
        for (int64_t oh = 0; oh < s.h_out; ++oh) {
          float* out = row + oh * s.w_out;
          const int64_t ih = oh * s.sh - s.ph + ki * s.dh;
          if (ih < 0 || ih >= s.h_in) {
            std::fill(out, out + s.w_out, 0.0f);
            continue;
          }
          const float* in = plane + ih * s.w_in + kj * s.dw - s.pw;
          std::fill(out, out + lo, 0.0f);
          for (int64_t ow = lo; ow < hi; ++ow) out[ow] = in[ow * s.sw];
          std::fill(out + hi, out + s.w_out, 0.0f);
        }
      }
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
  const int threads = gemm_threads();
  if (threads <= 1 || double(M) * double(N) * double(K) < kParallelGemmWork) {
    gemm_one(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
    return;
  }
  // One block of C per thread, along its longer side; each block is an independent product.
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = thread_index(), T = threads;
    if (N >= M) {
      const int64_t n0 = N * t / T, n1 = N * (t + 1) / T;
      gemm_one(trans_a, trans_b, M, n1 - n0, K, A, lda, trans_b ? B + n0 * ldb : B + n0, ldb, C + n0, ldc);
    } else {
      const int64_t m0 = M * t / T, m1 = M * (t + 1) / T;
      gemm_one(trans_a, trans_b, m1 - m0, N, K, trans_a ? A + m0 : A + m0 * lda, lda, B, ldb, C + m0 * ldc, ldc);
    }
  }
}

void valid_range(int64_t out, int64_t stride, int64_t offset, int64_t in, int64_t* lo, int64_t* hi) {
  // ow*stride + offset >= 0  and  ow*stride + offset < in
  *lo = offset >= 0 ? 0 : std::min(out, (-offset + stride - 1) / stride);  // padding may exceed the row
  *hi = in - offset <= 0 ? 0 : std::min(out, (in - offset + stride - 1) / stride);
  if (*hi < *lo) *hi = *lo;
}

float* workspace(int slot, size_t n) {
  thread_local std::vector<float> buffers[kWorkspaceSlots];
  if (buffers[slot].size() < n) buffers[slot].resize(n);
  return buffers[slot].data();
}

// Inputs per GEMM in conv_forward: enough columns (kConvBatch * P) for OpenBLAS to run near its
// peak, few enough that a block's im2col columns stay in cache.
constexpr int64_t kConvBatch = 8;

// Per block of up to kConvBatch inputs and per group: im2col of the block side by side, one GEMM
// W_g (cout_g x q) . cols (q x n*P), and the (cout_g, n, P) result copied out to (n, cout_g, P).
// The blocks are shared out over the threads (one parallel region, single-threaded GEMMs); a
// single block runs on the calling thread, its GEMM split over the threads when large.
void conv_forward(const ConvShape& s, const float* weight, const float* x, int64_t batch, float* y) {
  const int64_t q = s.q(), P = s.p_out(), cout_g = s.c_out / s.groups;
  const int64_t in_size = s.c_in * s.h_in * s.w_in, out_size = s.c_out * P;
  const int64_t blocks = (batch + kConvBatch - 1) / kConvBatch;
  const bool split = blocks > 1 && gemm_threads() > 1;
#pragma omp parallel for schedule(static) if (split)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t b0 = block * kConvBatch, n = std::min(kConvBatch, batch - b0), N = n * P;
    float* cols = workspace(kConvSlot, q * N + cout_g * N);
    float* out = cols + q * N;
    for (int64_t g = 0; g < s.groups; ++g) {
      for (int64_t b = 0; b < n; ++b) im2col(s, x + (b0 + b) * in_size, g, cols + b * P, N);
      gemm(false, false, cout_g, N, q, weight + g * cout_g * q, q, cols, N, out, N);
      for (int64_t b = 0; b < n; ++b)
        for (int64_t c = 0; c < cout_g; ++c)
          std::copy(out + c * N + b * P, out + c * N + (b + 1) * P, y + (b0 + b) * out_size + (g * cout_g + c) * P);
    }
  }
}

void col2im_window(const ConvShape& s, const float* cols, int64_t ld, int64_t g, const Window& out, float* x,
                   const Window& in) {
  const int64_t cin_g = s.c_in / s.groups;
  // Input columns that are on the map and in the window: [col_lo, col_hi).
  const int64_t col_lo = std::max<int64_t>(0, in.left), col_hi = std::min(s.w_in, in.left + in.w);
  for (int64_t ci = 0; ci < cin_g; ++ci)
    for (int64_t ki = 0; ki < s.kh; ++ki)
      for (int64_t kj = 0; kj < s.kw; ++kj) {
        const float* row = cols + ((ci * s.kh + ki) * s.kw + kj) * ld;
        float* plane = x + (g * cin_g + ci) * in.h * in.w;
        // output column j reads input column (out.left + j)*sw - pw + kj*dw
        const int64_t offset = out.left * s.sw - s.pw + kj * s.dw;
        int64_t lo, hi;
        valid_range(out.w, s.sw, offset - col_lo, col_hi - col_lo, &lo, &hi);
        for (int64_t i = 0; i < out.h; ++i) {
          const int64_t ih = (out.top + i) * s.sh - s.ph + ki * s.dh;
          if (ih < 0 || ih >= s.h_in || ih < in.top || ih >= in.top + in.h) continue;
          const int64_t base = (ih - in.top) * in.w + (offset - in.left);  // + j*sw is inside the window
          const float* src = row + i * out.w;
          for (int64_t j = lo; j < hi; ++j) plane[base + j * s.sw] += src[j];
        }
      }
}

}  // namespace bounds
}  // namespace certify

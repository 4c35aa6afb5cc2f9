// The bound engine: IBP, CROWN and CROWN-IBP on a Network, batched, OpenMP-parallel, GEMMs in
// OpenBLAS. Mirrors certify/bounds/reference.py step for step; the soundness argument (error
// terms, outward rounding) is written out there and referred to by name here.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <cblas.h>

#include "bounds/network.h"

namespace certify {
namespace bounds {
namespace {

constexpr double kU = 1.0 / 16777216.0;                // 2^-24, float32 unit roundoff
constexpr double kU64 = 1.1102230246251565404236e-16;  // 2^-53
constexpr float kUnderflow = 7.174648137343064e-43f;   // 2^-140 per term (Higham's eta is 2^-149)
constexpr int64_t kRowChunk = 1024;                    // rows of coefficients back-substituted at once

double gamma(int64_t n) { return n * kU / (1 - n * kU); }
double gamma64(int64_t n) { return n * kU64 / (1 - n * kU64); }
// The neighbouring floats, inline (std::nextafter is an out-of-line libm call, and these run once
// or more per bound). Exact for finite values; +-inf and NaN are returned unchanged.
inline float next_up(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  // +1 in the bit pattern for positive values, -1 for negative ones (towards zero).
  uint32_t up = bits + 1 - ((bits >> 31) << 1);
  float r;
  std::memcpy(&r, &up, sizeof r);
  r = (v == 0.0f) ? 1.40129846e-45f : r;
  return (v < INFINITY) ? r : v;  // +inf and NaN stay
}
inline float next_down(float v) { return -next_up(-v); }
float f32_down(double v) { return next_down(static_cast<float>(v)); }
float f32_up(double v) { return next_up(static_cast<float>(v)); }

// C (M x N) = op(A) op(B), row-major: one OpenBLAS call from the calling thread, never from
// inside a parallel loop. OpenBLAS runs single-threaded (set in bindings_bounds.cpp): concurrent
// calls from OpenMP threads were measured 2-3x slower than one call, and OpenBLAS's own threads
// 10-30x slower against the engine's OpenMP loops.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
  scipy_cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
                    1.0f, A, lda, B, ldb, 0.0f, C, ldc);
}

struct Box {
  std::vector<float> lo, hi;  // (B, size)
};

// ------------------------------------------------------------------ convolution helpers
// The output columns ow whose input column ow*sw - pw + kj*dw lies inside [0, w_in): [lo, hi).
void valid_range(int64_t out, int64_t stride, int64_t offset, int64_t in, int64_t* lo, int64_t* hi) {
  // ow*stride + offset >= 0  and  ow*stride + offset < in
  *lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  *hi = in - offset <= 0 ? 0 : std::min(out, (in - offset + stride - 1) / stride);
  if (*hi < *lo) *hi = *lo;
}

// cols (q x P, leading dimension ld) of group g:
// cols[(ci, ki, kj), (oh, ow)] = x[g*cin_g + ci, oh*sh - ph + ki*dh, ow*sw - pw + kj*dw], 0 outside.
// Branch-free inner loops over the precomputed valid range of each kernel column.
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

// The adjoint of im2col: x += scatter(cols), cols with leading dimension ld.
void col2im(const ConvShape& s, const float* cols, int64_t ld, int64_t g, float* x) {
  const int64_t cin_g = s.c_in / s.groups;
  for (int64_t ci = 0; ci < cin_g; ++ci)
    for (int64_t ki = 0; ki < s.kh; ++ki)
      for (int64_t kj = 0; kj < s.kw; ++kj) {
        const float* row = cols + ((ci * s.kh + ki) * s.kw + kj) * ld;
        float* plane = x + (g * cin_g + ci) * s.h_in * s.w_in;
        int64_t lo, hi;
        valid_range(s.w_out, s.sw, kj * s.dw - s.pw, s.w_in, &lo, &hi);
        for (int64_t oh = 0; oh < s.h_out; ++oh) {
          const int64_t ih = oh * s.sh - s.ph + ki * s.dh;
          if (ih < 0 || ih >= s.h_in) continue;
          float* out = plane + ih * s.w_in + kj * s.dw - s.pw;
          const float* in = row + oh * s.w_out;
          for (int64_t ow = lo; ow < hi; ++ow) out[ow * s.sw] += in[ow];
        }
      }
}

// y (B, c_out, P) = conv(x (B, c_in, H, W), weight), no bias: per group, one GEMM
// W_g (cout_g x q) . cols (q x B*P) with the batch's im2col columns side by side, its columns
// split over the threads, then the (cout_g, B, P) result reordered to (B, cout_g, P).
void conv_forward(const ConvShape& s, const float* weight, const float* x, int64_t batch, float* y) {
  const int64_t q = s.q(), P = s.p_out(), cout_g = s.c_out / s.groups, N = batch * P;
  const int64_t in_size = s.c_in * s.h_in * s.w_in, out_size = s.c_out * P;
  std::vector<float> cols(q * N), out(cout_g * N);
  for (int64_t g = 0; g < s.groups; ++g) {
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < batch; ++b) im2col(s, x + b * in_size, g, cols.data() + b * P, N);
    gemm(false, false, cout_g, N, q, weight + g * cout_g * q, q, cols.data(), N, out.data(), N);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t c = 0; c < cout_g; ++c)
        std::copy(out.begin() + c * N + b * P, out.begin() + c * N + (b + 1) * P, y + b * out_size + (g * cout_g + c) * P);
  }
}

// ------------------------------------------------------------------------------- IBP
// Any centre c works: the radius is measured from it. lo/2 + hi/2 cannot overflow.
void centre_radius(const float* lo, const float* hi, int64_t n, float* c, float* r, bool sound) {
  for (int64_t i = 0; i < n; ++i) {
    c[i] = 0.5f * lo[i] + 0.5f * hi[i];
    r[i] = std::max(hi[i] - c[i], c[i] - lo[i]);
    if (sound) r[i] = next_up(r[i] * static_cast<float>(1 + 4 * kU));
  }
}

// Finishes the centre-radius affine step: yc, yr (B, out) with per-output row_l1 and bias over
// `per_row` outputs that share one bias / row_l1 entry (conv: the spatial positions).
void affine_finish(const Layer& L, std::vector<float>& yc, std::vector<float>& yr, const std::vector<float>& c,
                   int64_t batch, int64_t n_in, int64_t n_dot, int64_t per_row, bool sound, Box& out) {
  const int64_t size = L.size, channels = size / per_row;
  out.lo.resize(batch * size);
  out.hi.resize(batch * size);
  // Constants of the error bound, once (see _affine_forward in reference.py). Multiplying by
  // 1 / (1 - gamma_n) instead of dividing adds one rounding, which the (1 + 4u) factor covers.
  const float err_scale = static_cast<float>(gamma(n_dot + 1));
  const float yr_scale = static_cast<float>(1 / (1 - gamma(n_dot)));
  const float inflate = static_cast<float>(1 + 4 * kU), underflow = static_cast<float>(n_dot) * kUnderflow;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    float c_max = 0;
    for (int64_t i = 0; i < n_in; ++i) c_max = std::max(c_max, std::fabs(c[b * n_in + i]));
    for (int64_t o = 0; o < channels; ++o) {
      const float bias = L.bias[o];
      const float err = err_scale * (L.row_l1[o] * c_max + std::fabs(bias));
      const int64_t base = b * size + o * per_row;
      for (int64_t k = 0; k < per_row; ++k) {
        const float centre = yc[base + k] + bias;
        if (!sound) {
          out.lo[base + k] = centre - yr[base + k];
          out.hi[base + k] = centre + yr[base + k];
          continue;
        }
        const float radius = next_up((yr[base + k] * yr_scale + err) * inflate + underflow);
        out.lo[base + k] = next_down(centre - radius);
        out.hi[base + k] = next_up(centre + radius);
      }
    }
  }
}

Box ibp_step(const Network& net, int index, const std::vector<Box>& boxes, int64_t batch, bool sound) {
  const Layer& L = net.layers[index];
  const Box& in = boxes[L.inputs[0]];
  const int64_t n_in = net.layers[L.inputs[0]].size, size = L.size;
  Box out;
  switch (L.kind) {
    case LayerKind::kLinear:
    case LayerKind::kConv2d: {
      std::vector<float> c(batch * n_in), r(batch * n_in), yc(batch * size), yr(batch * size);
      centre_radius(in.lo.data(), in.hi.data(), batch * n_in, c.data(), r.data(), sound);
      if (L.kind == LayerKind::kLinear) {
        gemm(false, true, batch, L.out, L.in, c.data(), L.in, L.weight.data(), L.in, yc.data(), L.out);
        gemm(false, true, batch, L.out, L.in, r.data(), L.in, L.abs_weight.data(), L.in, yr.data(), L.out);
        affine_finish(L, yc, yr, c, batch, n_in, L.in, 1, sound, out);
      } else {
        conv_forward(L.conv, L.weight.data(), c.data(), batch, yc.data());
        conv_forward(L.conv, L.abs_weight.data(), r.data(), batch, yr.data());
        affine_finish(L, yc, yr, c, batch, n_in, L.conv.q(), L.conv.p_out(), sound, out);
      }
      return out;
    }
    case LayerKind::kReLU:
      out.lo.resize(in.lo.size());
      out.hi.resize(in.hi.size());
      for (size_t i = 0; i < in.lo.size(); ++i) {
        out.lo[i] = std::max(in.lo[i], 0.0f);
        out.hi[i] = std::max(in.hi[i], 0.0f);
      }
      return out;
    case LayerKind::kReshape:
      return in;
    case LayerKind::kAffine: {
      out.lo.resize(batch * size);
      out.hi.resize(batch * size);
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t i = 0; i < size; ++i) {
          const float l = in.lo[b * size + i], u = in.hi[b * size + i];
          if (!sound) {
            const float s = (L.s_lo[i] + L.s_hi[i]) / 2, t = (L.t_lo[i] + L.t_hi[i]) / 2;
            const float a = s * l + t, c = s * u + t;
            out.lo[b * size + i] = std::min(a, c);
            out.hi[b * size + i] = std::max(a, c);
            continue;
          }
          // Interval arithmetic in double, where products of floats are exact.
          const double p[4] = {double(L.s_lo[i]) * l, double(L.s_lo[i]) * u, double(L.s_hi[i]) * l, double(L.s_hi[i]) * u};
          out.lo[b * size + i] = f32_down(*std::min_element(p, p + 4) + L.t_lo[i]);
          out.hi[b * size + i] = f32_up(*std::max_element(p, p + 4) + L.t_hi[i]);
        }
      return out;
    }
    case LayerKind::kAdd: {
      const Box& other = boxes[L.inputs[1]];
      out.lo.resize(in.lo.size());
      out.hi.resize(in.hi.size());
      for (size_t i = 0; i < in.lo.size(); ++i) {
        if (sound) {
          out.lo[i] = f32_down(double(in.lo[i]) + other.lo[i]);
          out.hi[i] = f32_up(double(in.hi[i]) + other.hi[i]);
        } else {
          out.lo[i] = in.lo[i] + other.lo[i];
          out.hi[i] = in.hi[i] + other.hi[i];
        }
      }
      return out;
    }
    case LayerKind::kInput:
      break;
  }
  throw std::logic_error("ibp_step: unexpected layer");
}

// Overflow (inf - inf) can make a bound NaN: the sound answer there is the infinite bound.
void no_nan(Box& box) {
  for (float& v : box.lo) v = std::isnan(v) ? -INFINITY : v;
  for (float& v : box.hi) v = std::isnan(v) ? INFINITY : v;
}

// Boxes of every node from `start` on; where a box exists, the tighter of old and new is kept.
void ibp(const Network& net, std::vector<Box>& boxes, int start, int64_t batch, bool sound) {
  for (int i = start; i < static_cast<int>(net.layers.size()); ++i) {
    Box fresh = ibp_step(net, i, boxes, batch, sound);
    no_nan(fresh);
    if (!boxes[i].lo.empty()) {
      for (size_t j = 0; j < fresh.lo.size(); ++j) {
        fresh.lo[j] = std::max(fresh.lo[j], boxes[i].lo[j]);
        fresh.hi[j] = std::min(fresh.hi[j], boxes[i].hi[j]);
      }
    }
    boxes[i] = std::move(fresh);
  }
}

// ---------------------------------------------------------------------- back-substitution
struct InputSet {
  Norm norm;
  const float* centre;
  const float* eps;
  const Box* box;
};

class Backward {
 public:
  Backward(const Network& net, const std::vector<Box>& boxes, bool sound, int64_t rows, const int32_t* batch_of,
           int64_t batch)
      : net_(net), boxes_(boxes), sound_(sound), rows_(rows), batch_of_(batch_of), batch_(batch),
        lam_(net.layers.size()), magnitude_(net.layers.size()), cst_(rows, 0.0), slack_(rows, 0.0) {}

  // Lower bounds (float32, rounded down when sound) of the rows of `spec` on node `start`,
  // back-substituted to node `stop` and concretised there (the input set, or boxes[stop]).
  std::vector<float> run(int start, std::vector<float> spec, int stop, const InputSet& input,
                         const std::vector<double>* initial_const = nullptr) {
    if (initial_const) cst_ = *initial_const;
    lam_[start] = std::move(spec);
    for (int index = start; index >= stop; --index) {
      if (lam_[index].empty()) continue;
      std::vector<float> lam = std::move(lam_[index]);
      lam_[index].clear();
      if (index == stop) {
        concretize(index, lam, input, stop == 0);
        break;
      }
      step(index, lam);
    }
    std::vector<float> out(rows_);
    for (int64_t r = 0; r < rows_; ++r) {
      const double lower = cst_[r] + value_[r];
      out[r] = sound_ ? f32_down(lower - slack_[r] * (1 + 1e-12)) : static_cast<float>(lower);
      if (std::isnan(out[r])) out[r] = -INFINITY;  // overflow: no finite bound
    }
    return out;
  }

 private:
  const std::vector<float>& magnitude(int node) {
    std::vector<float>& m = magnitude_[node];
    if (m.empty()) {
      const Box& box = boxes_[node];
      m.resize(box.lo.size());
      for (size_t i = 0; i < m.size(); ++i) m[i] = std::max(std::fabs(box.lo[i]), std::fabs(box.hi[i]));
    }
    return m;
  }

  void push(int node, std::vector<float>&& lam) {
    std::vector<float>& have = lam_[node];
    if (have.empty()) {
      have = std::move(lam);
      return;
    }
    const int64_t size = net_.layers[node].size;
    const std::vector<float>& m = sound_ ? magnitude(node) : have;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows_; ++r) {
      double err = 0;
      for (int64_t j = 0; j < size; ++j) {
        float& v = have[r * size + j];
        v += lam[r * size + j];
        if (sound_) err += std::fabs(v) * m[batch_of_[r] * size + j];
      }
      slack_[r] += kU * err;
    }
  }

  // const += sum_j lam[r, j] * t[j]; slack += gamma64 of that sum. t indexed by j / per.
  void add_const(const std::vector<float>& lam, int64_t size, const float* t, int64_t per) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows_; ++r) {
      double s = 0, a = 0;
      for (int64_t j = 0; j < size; ++j) {
        const double term = double(lam[r * size + j]) * t[j / per];
        s += term;
        a += std::fabs(term);
      }
      cst_[r] += s;
      if (sound_) slack_[r] += gamma64(size + 1) * a;
    }
  }

  // slack[r] += factor * sum_j |lam[r, j]| * w[batch_of(r), j]
  void add_weighted_slack(const std::vector<float>& lam, int64_t size, const std::vector<float>& w, double factor) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows_; ++r) {
      const float* wb = w.data() + batch_of_[r] * size;
      double s = 0;
      for (int64_t j = 0; j < size; ++j) s += std::fabs(lam[r * size + j]) * double(wb[j]);
      slack_[r] += factor * s;
    }
  }

  void step(int index, std::vector<float>& lam) {
    const Layer& L = net_.layers[index];
    const int src = L.inputs[0];
    const int64_t size = L.size, src_size = net_.layers[src].size;
    switch (L.kind) {
      case LayerKind::kLinear: {
        add_const(lam, size, L.bias.data(), 1);
        std::vector<float> fresh(rows_ * src_size);
        gemm(false, false, rows_, L.in, L.out, lam.data(), L.out, L.weight.data(), L.in, fresh.data(), L.in);
        if (sound_) {  // gamma_out |lam| (|W| m): the error of the coefficient product
          std::vector<float> wm(batch_ * L.out);
          gemm(false, true, batch_, L.out, L.in, magnitude(src).data(), L.in, L.abs_weight.data(), L.in, wm.data(), L.out);
          for (float& v : wm) v /= static_cast<float>(1 - gamma(L.in));
          add_weighted_slack(lam, size, wm, gamma(L.out));
        }
        push(src, std::move(fresh));
        return;
      }
      case LayerKind::kConv2d: {
        const ConvShape& s = L.conv;
        const int64_t P = s.p_out(), q = s.q(), cout_g = s.c_out / s.groups;
        add_const(lam, size, L.bias.data(), P);
        std::vector<float> fresh(rows_ * src_size, 0.0f);
        // Per group, one GEMM for all rows: cols (q x R*P) = W_g^T (q x cout_g) . lam_g, with lam_g
        // laid out (cout_g, R*P); then each row's columns are scattered back (col2im).
        const int64_t N = rows_ * P;
        std::vector<float> lam_g(cout_g * N), cols(q * N);
        for (int64_t g = 0; g < s.groups; ++g) {
#pragma omp parallel for schedule(static)
          for (int64_t c = 0; c < cout_g; ++c)
            for (int64_t r = 0; r < rows_; ++r) {
              const float* from = lam.data() + r * size + (g * cout_g + c) * P;
              std::copy(from, from + P, lam_g.begin() + c * N + r * P);
            }
          gemm(true, false, q, N, cout_g, L.weight.data() + g * cout_g * q, q, lam_g.data(), N, cols.data(), N);
#pragma omp parallel for schedule(static)
          for (int64_t r = 0; r < rows_; ++r) col2im(s, cols.data() + r * P, N, g, fresh.data() + r * src_size);
        }
        if (sound_) {
          std::vector<float> wm(batch_ * size);
          conv_forward(s, L.abs_weight.data(), magnitude(src).data(), batch_, wm.data());
          for (float& v : wm) v /= static_cast<float>(1 - gamma(q));
          add_weighted_slack(lam, size, wm, gamma(cout_g * s.kh * s.kw));
        }
        push(src, std::move(fresh));
        return;
      }
      case LayerKind::kReLU: {
        const Box& pre = boxes_[src];
        std::vector<float> alpha(batch_ * size), beta(batch_ * size), icpt(batch_ * size);
        for (int64_t i = 0; i < batch_ * size; ++i) {
          const float l = pre.lo[i], u = pre.hi[i];
          if (l >= 0) {
            alpha[i] = beta[i] = 1;
            icpt[i] = 0;
          } else if (u <= 0) {
            alpha[i] = beta[i] = icpt[i] = 0;
          } else {  // the chord above, the adaptive slope below (see relu_relaxation)
            beta[i] = u / (u - l);
            alpha[i] = u > -l ? 1.0f : 0.0f;
            if (sound_) {
              const double g = std::max(-double(beta[i]) * l, double(u) - double(beta[i]) * u) * (1 + 0x1p-50);
              icpt[i] = f32_up(g);
            } else {
              icpt[i] = -beta[i] * l;
            }
          }
        }
        const std::vector<float>* m = sound_ ? &magnitude(src) : nullptr;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows_; ++r) {
          const int64_t off = batch_of_[r] * size;
          double s = 0, a = 0, err = 0;
          for (int64_t j = 0; j < size; ++j) {
            float& v = lam[r * size + j];
            if (v >= 0) {
              v *= alpha[off + j];
            } else {
              const double term = double(v) * icpt[off + j];
              s += term;
              a += std::fabs(term);
              v *= beta[off + j];
              if (m) err += std::fabs(v) * double((*m)[off + j]);
            }
          }
          cst_[r] += s;
          if (sound_) slack_[r] += gamma64(size + 1) * a + kU * err;
        }
        push(src, std::move(lam));
        return;
      }
      case LayerKind::kReshape:
        push(src, std::move(lam));
        return;
      case LayerKind::kAffine: {
        std::vector<float> s_mid(size), s_rad(size), t_mid(size), t_rad(size);
        for (int64_t j = 0; j < size; ++j) {
          s_mid[j] = (L.s_lo[j] + L.s_hi[j]) / 2;
          t_mid[j] = (L.t_lo[j] + L.t_hi[j]) / 2;
          s_rad[j] = std::max(L.s_hi[j] - s_mid[j], s_mid[j] - L.s_lo[j]);
          t_rad[j] = std::max(L.t_hi[j] - t_mid[j], t_mid[j] - L.t_lo[j]);
          if (sound_) {
            s_rad[j] = next_up(s_rad[j]);
            t_rad[j] = next_up(t_rad[j]);
          }
        }
        add_const(lam, size, t_mid.data(), 1);
        const std::vector<float>* m = sound_ ? &magnitude(src) : nullptr;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows_; ++r) {
          const int64_t off = batch_of_[r] * size;
          double widths = 0;
          for (int64_t j = 0; j < size; ++j) {
            float& v = lam[r * size + j];
            if (m) widths += std::fabs(v) * ((s_rad[j] + kU * std::fabs(s_mid[j])) * double((*m)[off + j]) + t_rad[j]);
            v *= s_mid[j];
          }
          if (sound_) slack_[r] += widths * (1 + 8 * kU);
        }
        push(src, std::move(lam));
        return;
      }
      case LayerKind::kAdd: {
        std::vector<float> copy(lam);
        push(L.inputs[1], std::move(copy));
        push(src, std::move(lam));
        return;
      }
      case LayerKind::kInput:
        break;
    }
    throw std::logic_error("back-substitution reached the input before its stop node");
  }

  void concretize(int node, const std::vector<float>& lam, const InputSet& input, bool at_input) {
    const int64_t size = net_.layers[node].size;
    value_.assign(rows_, 0.0);
    const bool l2 = at_input && input.norm == Norm::kL2;
    const Box& box = at_input ? *input.box : boxes_[node];
    std::vector<float> c, r;
    if (!l2) {
      c.resize(box.lo.size());
      r.resize(box.lo.size());
      centre_radius(box.lo.data(), box.hi.data(), box.lo.size(), c.data(), r.data(), sound_);
    }
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < rows_; ++row) {
      const int64_t off = batch_of_[row] * size;
      const float* a = lam.data() + row * size;
      double value = 0, abs_sum = 0;
      if (l2) {
        double sq = 0;
        for (int64_t j = 0; j < size; ++j) {
          value += double(a[j]) * input.centre[off + j];
          abs_sum += std::fabs(double(a[j]) * input.centre[off + j]);
          sq += double(a[j]) * a[j];
        }
        const double norm = std::sqrt(sq), eps = input.eps[batch_of_[row]];
        value -= eps * norm;
        if (sound_) slack_[row] += gamma64(size + 1) * abs_sum + gamma64(size + 2) * eps * norm * 2;
      } else {
        double radius = 0;
        for (int64_t j = 0; j < size; ++j) {
          value += double(a[j]) * c[off + j];
          abs_sum += std::fabs(double(a[j]) * c[off + j]);
          radius += std::fabs(double(a[j])) * r[off + j];
        }
        value -= radius;
        if (sound_) slack_[row] += gamma64(size + 1) * (abs_sum + radius);
      }
      value_[row] = value;
    }
  }

  const Network& net_;
  const std::vector<Box>& boxes_;
  bool sound_;
  int64_t rows_;
  const int32_t* batch_of_;
  int64_t batch_;
  std::vector<std::vector<float>> lam_;
  std::vector<std::vector<float>> magnitude_;
  std::vector<double> cst_, slack_, value_;
};

// Back-substitutes `rows` spec rows (rows x size of node start; row r of input batch_of[r])
// in chunks of kRowChunk, bounding memory by the chunk, not the number of rows.
std::vector<float> back_substitute(const Network& net, const std::vector<Box>& boxes, int start,
                                   const std::vector<float>& spec, const std::vector<int32_t>& batch_of, int stop,
                                   const InputSet& input, int64_t batch, bool sound) {
  const int64_t size = net.layers[start].size, rows = static_cast<int64_t>(batch_of.size());
  std::vector<float> out(rows);
  for (int64_t r0 = 0; r0 < rows; r0 += kRowChunk) {
    const int64_t n = std::min(kRowChunk, rows - r0);
    std::vector<float> chunk(spec.begin() + r0 * size, spec.begin() + (r0 + n) * size);
    Backward pass(net, boxes, sound, n, batch_of.data() + r0, batch);
    std::vector<float> lower = pass.run(start, std::move(chunk), stop, input);
    std::copy(lower.begin(), lower.end(), out.begin() + r0);
  }
  return out;
}

// The coefficients of sign * e_j back through the affine layer `L` that computes node j's
// value: row j of W (Linear) or kernel j placed on its receptive field (Conv2d), and the
// constant sign * b_j. Exact (a copy and a negation): no rounding term. False for other layers.
bool one_hot_through_affine(const Layer& L, int64_t j, float sign, float* lam, double* cst) {
  if (L.kind == LayerKind::kLinear) {
    const float* w = L.weight.data() + j * L.in;
    for (int64_t i = 0; i < L.in; ++i) lam[i] = sign * w[i];
    *cst = sign * double(L.bias[j]);
    return true;
  }
  if (L.kind == LayerKind::kConv2d) {
    const ConvShape& s = L.conv;
    const int64_t P = s.p_out(), c = j / P, oh = (j % P) / s.w_out, ow = j % s.w_out;
    const int64_t cin_g = s.c_in / s.groups, g = c / (s.c_out / s.groups);
    for (int64_t ci = 0; ci < cin_g; ++ci)
      for (int64_t ki = 0; ki < s.kh; ++ki)
        for (int64_t kj = 0; kj < s.kw; ++kj) {
          const int64_t ih = oh * s.sh - s.ph + ki * s.dh, iw = ow * s.sw - s.pw + kj * s.dw;
          if (ih < 0 || ih >= s.h_in || iw < 0 || iw >= s.w_in) continue;
          lam[((g * cin_g + ci) * s.h_in + ih) * s.w_in + iw] = sign * L.weight[((c * cin_g + ci) * s.kh + ki) * s.kw + kj];
        }
    *cst = sign * double(L.bias[c]);
    return true;
  }
  return false;
}

// CROWN bounds on every ReLU's input, in order, for the (input, neuron) pairs that IBP leaves
// unstable; each layer's new bounds feed the next (Zhang et al. 2018).
void tighten_intermediate(const Network& net, std::vector<Box>& boxes, const InputSet& input, int64_t batch,
                          bool sound) {
  for (int k = 1; k < static_cast<int>(net.layers.size()); ++k) {
    if (net.layers[k].kind != LayerKind::kReLU) continue;
    const int pre = net.layers[k].inputs[0];
    const int64_t size = net.layers[pre].size;
    Box& box = boxes[pre];
    std::vector<int64_t> unstable;  // flat (b, j) indices
    for (int64_t i = 0; i < batch * size; ++i)
      if (box.lo[i] < 0 && box.hi[i] > 0) unstable.push_back(i);
    if (unstable.empty()) continue;
    const Layer& affine = net.layers[pre];
    const bool shortcut = affine.kind == LayerKind::kLinear || affine.kind == LayerKind::kConv2d;
    const int start = shortcut ? affine.inputs[0] : pre;  // rows of W start one layer down
    const int64_t start_size = net.layers[start].size;
    for (size_t u0 = 0; u0 < unstable.size(); u0 += kRowChunk / 2) {
      const size_t n = std::min<size_t>(kRowChunk / 2, unstable.size() - u0);
      std::vector<float> spec(2 * n * start_size, 0.0f);  // rows +e_j (lower) and -e_j (upper)
      std::vector<int32_t> batch_of(2 * n);
      std::vector<double> cst(2 * n, 0.0);
      for (size_t i = 0; i < n; ++i) {
        const int64_t flat = unstable[u0 + i], b = flat / size, j = flat % size;
        batch_of[2 * i] = batch_of[2 * i + 1] = static_cast<int32_t>(b);
        if (shortcut) {
          one_hot_through_affine(affine, j, 1.0f, &spec[(2 * i) * start_size], &cst[2 * i]);
          one_hot_through_affine(affine, j, -1.0f, &spec[(2 * i + 1) * start_size], &cst[2 * i + 1]);
        } else {
          spec[(2 * i) * size + j] = 1.0f;
          spec[(2 * i + 1) * size + j] = -1.0f;
        }
      }
      Backward pass(net, boxes, sound, 2 * n, batch_of.data(), batch);
      const std::vector<float> lower = pass.run(start, std::move(spec), 0, input, &cst);
      for (size_t i = 0; i < n; ++i) {
        const int64_t flat = unstable[u0 + i];
        box.lo[flat] = std::max(box.lo[flat], lower[2 * i]);
        box.hi[flat] = std::min(box.hi[flat], -lower[2 * i + 1]);
      }
    }
    ibp(net, boxes, pre + 1, batch, sound);
  }
}

}  // namespace

void ibp_output(const Network& net, const Query& query, float* lower, float* upper) {
  const int64_t batch = query.batch, n_in = net.layers.at(0).size;
  std::vector<Box> boxes(net.layers.size());
  boxes[0] = Box{std::vector<float>(query.box_lower, query.box_lower + batch * n_in),
                 std::vector<float>(query.box_upper, query.box_upper + batch * n_in)};
  ibp(net, boxes, 1, batch, query.sound);
  std::copy(boxes.back().lo.begin(), boxes.back().lo.end(), lower);
  std::copy(boxes.back().hi.begin(), boxes.back().hi.end(), upper);
}

std::vector<float> compute_bounds(const Network& net, const Query& query) {
  const int64_t batch = query.batch, n_in = net.layers.at(0).size;
  const int last = static_cast<int>(net.layers.size()) - 1;
  const int64_t n_out = net.layers[last].size, rows = query.rows;
  std::vector<Box> boxes(net.layers.size());
  Box input_box{std::vector<float>(query.box_lower, query.box_lower + batch * n_in),
                std::vector<float>(query.box_upper, query.box_upper + batch * n_in)};
  boxes[0] = input_box;
  ibp(net, boxes, 1, batch, query.sound);
  const InputSet input{query.norm, query.centre, query.eps, &input_box};

  std::vector<float> spec(query.spec, query.spec + batch * rows * n_out);
  std::vector<int32_t> batch_of(batch * rows);
  for (int64_t i = 0; i < batch * rows; ++i) batch_of[i] = static_cast<int32_t>(i / rows);

  if (query.method == Method::kIBP) {
    const Layer& out = net.layers[last];
    if (out.kind == LayerKind::kLinear)  // fold the spec into the last layer
      return back_substitute(net, boxes, last, spec, batch_of, out.inputs[0], input, batch, query.sound);
    std::vector<float> result(batch * rows);
    for (int64_t r = 0; r < batch * rows; ++r) {
      const int64_t b = r / rows;
      double value = 0, abs_sum = 0;
      for (int64_t j = 0; j < n_out; ++j) {
        const double a = spec[r * n_out + j];
        const double term = a * (a >= 0 ? boxes[last].lo[b * n_out + j] : boxes[last].hi[b * n_out + j]);
        value += term;
        abs_sum += std::fabs(term);
      }
      result[r] = query.sound ? f32_down(value - gamma64(n_out) * abs_sum) : static_cast<float>(value);
      if (std::isnan(result[r])) result[r] = -INFINITY;
    }
    return result;
  }
  if (query.method == Method::kCrown) tighten_intermediate(net, boxes, input, batch, query.sound);
  return back_substitute(net, boxes, last, spec, batch_of, 0, input, batch, query.sound);
}

}  // namespace bounds
}  // namespace certify

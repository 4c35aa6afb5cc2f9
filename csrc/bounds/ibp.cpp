// Interval bound propagation (see ibp.h).
#include "bounds/ibp.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "bounds/kernels.h"
#include "bounds/rounding.h"

namespace certify {
namespace bounds {

// Any centre c works: the radius is measured from it. lo/2 + hi/2 cannot overflow.
void centre_radius(const float* lo, const float* hi, int64_t n, float* c, float* r, bool sound) {
  const float inflate = static_cast<float>(1 + 4 * kU);
#pragma omp parallel for simd schedule(static) if (n >= kParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const float centre = 0.5f * lo[i] + 0.5f * hi[i];
    const float radius = std::max(hi[i] - centre, centre - lo[i]);
    c[i] = centre;
    r[i] = sound ? next_up(radius * inflate) : radius;
  }
}

namespace {

// Finishes the centre-radius affine step of one input: yc, yr (its `size` outputs) with per-output
// row_l1 and bias shared by `per_row` consecutive outputs (conv: the spatial positions), c_max the
// largest |centre| of its input; writes lo, hi.
void affine_finish_one(const Layer& L, const float* yc, const float* yr, float c_max, int64_t n_dot, int64_t per_row,
                       bool sound, float* lo, float* hi) {
  const int64_t channels = L.size / per_row;
  // Constants of the error bound (see _affine_forward in reference.py). Multiplying by
  // 1 / (1 - gamma_n) instead of dividing adds one rounding, which the (1 + 4u) factor covers.
  const float err_scale = static_cast<float>(gamma(n_dot + 1));
  const float yr_scale = static_cast<float>(1 / (1 - gamma(n_dot)));
  const float inflate = static_cast<float>(1 + 4 * kU), underflow = static_cast<float>(n_dot) * kUnderflow;
  for (int64_t o = 0; o < channels; ++o) {
    const float bias = L.bias[o];
    const float err = err_scale * (L.row_l1[o] * c_max + std::fabs(bias));
    const int64_t base = o * per_row;
    if (!sound) {
      for (int64_t k = base; k < base + per_row; ++k) {
        lo[k] = (yc[k] + bias) - yr[k];
        hi[k] = (yc[k] + bias) + yr[k];
      }
      continue;
    }
#pragma omp simd
    for (int64_t k = base; k < base + per_row; ++k) {
      const float centre = yc[k] + bias;
      const float radius = next_up((yr[k] * yr_scale + err) * inflate + underflow);
      lo[k] = next_down(centre - radius);
      hi[k] = next_up(centre + radius);
    }
  }
}

float max_abs(const float* c, int64_t n) {
  float m = 0;
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(c[i]));
  return m;
}

// IBP through a Linear layer: the batch's centres and radii through W and |W| as two GEMMs.
void linear_ibp(const Layer& L, const Box& in, int64_t batch, bool sound, Box& out) {
  const int64_t n_in = L.in, n = batch * n_in;
  float* c = workspace(0, n);
  float* r = workspace(1, n);
  float* yc = workspace(2, batch * L.out);
  float* yr = workspace(3, batch * L.out);
  centre_radius(in.lo.data(), in.hi.data(), n, c, r, sound);
  gemm(false, true, batch, L.out, L.in, c, L.in, L.weight.data(), L.in, yc, L.out);
  gemm(false, true, batch, L.out, L.in, r, L.in, L.abs_weight.data(), L.in, yr, L.out);
  out.lo.resize(batch * L.out);
  out.hi.resize(batch * L.out);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < batch; ++b)
    affine_finish_one(L, yc + b * L.out, yr + b * L.out, max_abs(c + b * n_in, n_in), L.in, 1, sound,
                      out.lo.data() + b * L.out, out.hi.data() + b * L.out);
}

// IBP through a Conv2d layer: the batch's centres and radii through W and |W| (conv_forward
// shares the inputs out over the threads), then the finish per input.
void conv_ibp(const Layer& L, const Box& in, int64_t batch, bool sound, Box& out) {
  const ConvShape& s = L.conv;
  const int64_t n_in = s.c_in * s.h_in * s.w_in, size = L.size, n = batch * n_in;
  float* c = workspace(0, n);
  float* r = workspace(1, n);
  float* yc = workspace(2, batch * size);
  float* yr = workspace(3, batch * size);
  centre_radius(in.lo.data(), in.hi.data(), n, c, r, sound);
  conv_forward(s, L.weight.data(), c, batch, yc);
  conv_forward(s, L.abs_weight.data(), r, batch, yr);
  out.lo.resize(batch * size);
  out.hi.resize(batch * size);
#pragma omp parallel for schedule(static) if (batch > 1)
  for (int64_t b = 0; b < batch; ++b)
    affine_finish_one(L, yc + b * size, yr + b * size, max_abs(c + b * n_in, n_in), s.q(), s.p_out(), sound,
                      out.lo.data() + b * size, out.hi.data() + b * size);
}

Box ibp_step(const Network& net, int index, const std::vector<Box>& boxes, int64_t batch, bool sound) {
  const Layer& L = net.layers[index];
  const Box& in = boxes[L.inputs[0]];
  const int64_t size = L.size;
  Box out;
  switch (L.kind) {
    case LayerKind::kLinear:
      linear_ibp(L, in, batch, sound, out);
      return out;
    case LayerKind::kConv2d:
      conv_ibp(L, in, batch, sound, out);
      return out;
    case LayerKind::kReLU: {
      const int64_t n = static_cast<int64_t>(in.lo.size());
      out.lo.resize(n);
      out.hi.resize(n);
      const float *lo = in.lo.data(), *hi = in.hi.data();
      float *out_lo = out.lo.data(), *out_hi = out.hi.data();
#pragma omp parallel for simd schedule(static) if (n >= kParallelElements)
      for (int64_t i = 0; i < n; ++i) {  // NaN stays NaN (no_nan makes it the infinite bound)
        out_lo[i] = lo[i] < 0.0f ? 0.0f : lo[i];
        out_hi[i] = hi[i] < 0.0f ? 0.0f : hi[i];
      }
      return out;
    }
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
    case LayerKind::kGather: {  // copies, and exact zeros
      const int64_t n_in = net.layers[L.inputs[0]].size;
      out.lo.assign(batch * size, 0.0f);
      out.hi.assign(batch * size, 0.0f);
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t j = 0; j < size; ++j) {
          const int64_t k = L.index[j];
          if (k < 0) continue;
          out.lo[b * size + j] = in.lo[b * n_in + k];
          out.hi[b * size + j] = in.hi[b * n_in + k];
        }
      return out;
    }
    case LayerKind::kActivation: {
      const int64_t n = static_cast<int64_t>(in.lo.size());
      out.lo.resize(n);
      out.hi.resize(n);
#pragma omp parallel for schedule(static) if (n >= 256)
      for (int64_t i = 0; i < n; ++i) activation_range(L.activation, in.lo[i], in.hi[i], sound, &out.lo[i], &out.hi[i]);
      return out;
    }
    case LayerKind::kInput:
      break;
  }
  throw std::logic_error("ibp_step: unexpected layer");
}

// Overflow (inf - inf) can make a bound NaN: the sound answer there is the infinite bound.
void no_nan(Box& box) {
  const int64_t n = static_cast<int64_t>(box.lo.size());
  float *lo = box.lo.data(), *hi = box.hi.data();
#pragma omp parallel for simd schedule(static) if (n >= kParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    lo[i] = std::isnan(lo[i]) ? -INFINITY : lo[i];
    hi[i] = std::isnan(hi[i]) ? INFINITY : hi[i];
  }
}

}  // namespace

void clamp_splits(Box& box, const int8_t* sign) {
  if (sign == nullptr) return;
  for (size_t j = 0; j < box.lo.size(); ++j) {
    if (sign[j] > 0) box.lo[j] = std::max(box.lo[j], 0.0f);
    if (sign[j] < 0) box.hi[j] = std::min(box.hi[j], 0.0f);
  }
}

void ibp(const Network& net, std::vector<Box>& boxes, int start, int64_t batch, bool sound, const Splits* splits) {
  for (int i = start; i < static_cast<int>(net.layers.size()); ++i) {
    Box fresh = ibp_step(net, i, boxes, batch, sound);
    no_nan(fresh);
    if (!boxes[i].lo.empty()) {
      const int64_t n = static_cast<int64_t>(fresh.lo.size());
      float *lo = fresh.lo.data(), *hi = fresh.hi.data();
      const float *old_lo = boxes[i].lo.data(), *old_hi = boxes[i].hi.data();
#pragma omp parallel for simd schedule(static) if (n >= kParallelElements)
      for (int64_t j = 0; j < n; ++j) {
        lo[j] = std::max(lo[j], old_lo[j]);
        hi[j] = std::min(hi[j], old_hi[j]);
      }
    }
    if (splits) clamp_splits(fresh, (*splits)[i]);
    boxes[i] = std::move(fresh);
  }
}

}  // namespace bounds
}  // namespace certify

// The bound engine: IBP, CROWN and CROWN-IBP on a Network, batched, OpenMP-parallel, GEMMs in
// OpenBLAS. Mirrors certify/bounds/reference.py step for step; the soundness argument (error
// terms, outward rounding) is written out there and referred to by name here.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bounds/kernels.h"
#include "bounds/network.h"
#include "bounds/rounding.h"

namespace certify {
namespace bounds {
namespace {

struct Box {
  std::vector<float> lo, hi;  // (B, size)
};

// ------------------------------------------------------------------------------- IBP
// Any centre c works: the radius is measured from it. lo/2 + hi/2 cannot overflow.
void centre_radius(const float* lo, const float* hi, int64_t n, float* c, float* r, bool sound) {
  for (int64_t i = 0; i < n; ++i) {
    c[i] = 0.5f * lo[i] + 0.5f * hi[i];
    r[i] = std::max(hi[i] - c[i], c[i] - lo[i]);
    if (sound) r[i] = next_up(r[i] * static_cast<float>(1 + 4 * kU));
  }
}

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

// Working memory of the calling thread (slot 0-3), at least n floats, contents undefined.
float* ibp_workspace(int slot, size_t n) {
  thread_local std::vector<float> buffers[4];
  if (buffers[slot].size() < n) buffers[slot].resize(n);
  return buffers[slot].data();
}

// IBP through a Linear layer: the batch's centres and radii through W and |W| as two GEMMs.
void linear_ibp(const Layer& L, const Box& in, int64_t batch, bool sound, Box& out) {
  const int64_t n_in = L.in, n = batch * n_in;
  float* c = ibp_workspace(0, n);
  float* r = ibp_workspace(1, n);
  float* yc = ibp_workspace(2, batch * L.out);
  float* yr = ibp_workspace(3, batch * L.out);
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
  float* c = ibp_workspace(0, n);
  float* r = ibp_workspace(1, n);
  float* yc = ibp_workspace(2, batch * size);
  float* yr = ibp_workspace(3, batch * size);
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
  const int64_t n_in = net.layers[L.inputs[0]].size, size = L.size;
  Box out;
  switch (L.kind) {
    case LayerKind::kLinear:
      linear_ibp(L, in, batch, sound, out);
      return out;
    case LayerKind::kConv2d:
      conv_ibp(L, in, batch, sound, out);
      return out;
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

// ReLU split decisions of a batch of subproblems: per node, (B, size) signs or none; +1: the
// node's value is >= 0 on the subproblem, -1: <= 0, 0: free.
using Splits = std::vector<const int8_t*>;

// The split constraints clamped into a node's box (a box of the constrained set).
void clamp_splits(Box& box, const int8_t* sign) {
  if (sign == nullptr) return;
  for (size_t j = 0; j < box.lo.size(); ++j) {
    if (sign[j] > 0) box.lo[j] = std::max(box.lo[j], 0.0f);
    if (sign[j] < 0) box.hi[j] = std::min(box.hi[j], 0.0f);
  }
}

// Boxes of every node from `start` on; where a box exists, the tighter of old and new is kept,
// and split constraints are clamped in.
void ibp(const Network& net, std::vector<Box>& boxes, int start, int64_t batch, bool sound,
         const Splits* splits = nullptr) {
  for (int i = start; i < static_cast<int>(net.layers.size()); ++i) {
    Box fresh = ibp_step(net, i, boxes, batch, sound);
    no_nan(fresh);
    if (!boxes[i].lo.empty()) {
      for (size_t j = 0; j < fresh.lo.size(); ++j) {
        fresh.lo[j] = std::max(fresh.lo[j], boxes[i].lo[j]);
        fresh.hi[j] = std::min(fresh.hi[j], boxes[i].hi[j]);
      }
    }
    if (splits) clamp_splits(fresh, (*splits)[i]);
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

// Floats of im2col columns per block of rows in a convolution's backward step (256 KiB: the
// block stays in the core's L2 cache between its GEMM and its scatter).
constexpr int64_t kColumnsPerBlock = 64 * 1024;

// The hot loops of back-substitution, over one contiguous run of a row (see each_run), as SIMD
// reductions on restrict pointers (so the compiler vectorises them). The rounding terms bound sums
// in any order, so the reassociation that "omp simd reduction" allows keeps them valid.
struct Sums {
  double value = 0, abs_sum = 0, extra = 0;
};

// lam >= 0 takes the lower slope alpha, lam < 0 the chord: slope beta, intercept icpt.
// value += sum lam * icpt over lam < 0, abs_sum += its |terms|, extra += |new lam| * m there.
// Branch-free (every array is read at every i) so that it vectorises; a non-finite coefficient
// can turn a zeroed term into NaN, which the caller reports as no finite bound.
inline void relu_run(float* __restrict a, const float* __restrict alpha, const float* __restrict beta,
                     const float* __restrict icpt, const float* __restrict m, int64_t n, Sums& out) {
  double s = 0, abs_sum = 0, err = 0;
  if (m) {
#pragma omp simd reduction(+ : s, abs_sum, err)
    for (int64_t i = 0; i < n; ++i) {
      const float v = a[i], up = beta[i], low = alpha[i], c = icpt[i], mi = m[i];
      const bool neg = v < 0;
      const double term = double(v) * (neg ? c : 0.0f);
      const float next = v * (neg ? up : low);
      s += term;
      abs_sum += std::fabs(term);
      err += std::fabs(double(next)) * (neg ? mi : 0.0f);
      a[i] = next;
    }
  } else {
#pragma omp simd reduction(+ : s, abs_sum)
    for (int64_t i = 0; i < n; ++i) {
      const float v = a[i], up = beta[i], low = alpha[i], c = icpt[i];
      const bool neg = v < 0;
      const double term = double(v) * (neg ? c : 0.0f);
      s += term;
      abs_sum += std::fabs(term);
      a[i] = v * (neg ? up : low);
    }
  }
  out.value += s;
  out.abs_sum += abs_sum;
  out.extra += err;
}

// value += sum a * t, abs_sum += sum |a * t|.
inline void dot_run(const float* __restrict a, const float* __restrict t, int64_t n, Sums& out) {
  double s = 0, abs_sum = 0;
#pragma omp simd reduction(+ : s, abs_sum)
  for (int64_t i = 0; i < n; ++i) {
    const double term = double(a[i]) * t[i];
    s += term;
    abs_sum += std::fabs(term);
  }
  out.value += s;
  out.abs_sum += abs_sum;
}

// value += sum a * c, abs_sum += sum |a * c|, extra += sum |a| r.
inline void box_run(const float* __restrict a, const float* __restrict c, const float* __restrict r, int64_t n,
                    Sums& out) {
  double s = 0, abs_sum = 0, radius = 0;
#pragma omp simd reduction(+ : s, abs_sum, radius)
  for (int64_t i = 0; i < n; ++i) {
    const double ai = a[i], term = ai * c[i];
    s += term;
    abs_sum += std::fabs(term);
    radius += std::fabs(ai) * r[i];
  }
  out.value += s;
  out.abs_sum += abs_sum;
  out.extra += radius;
}

// sum |a| w
inline double abs_dot_run(const float* __restrict a, const float* __restrict w, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += std::fabs(double(a[i])) * w[i];
  return s;
}

// Coefficient rows on one node. Dense: (rows, size). Windowed, on a node with a (C, H, W) map:
// row r holds every channel on the window of the map whose top-left corner is (top[r], left[r])
// and whose extent is h x w, laid out (C, h, w). This is the structured form of a convolution's
// coefficients (auto_LiRPA's "patches"): a neuron of a convolutional layer depends on its
// receptive field only, so its row costs the field's size instead of the map's at every layer
// down to the input. A window may hang over the map's edges; entries off the map are zero and
// stay zero (they would multiply a convolution's zero padding, which is no value of the network).
// All rows of one Rows share h and w. The arithmetic on the entries that are kept is the dense
// path's, so the rounding terms are the same (they bound sums of any length and order).
struct Rows {
  std::vector<float> v;
  bool windowed = false;
  int64_t h = 0, w = 0;
  std::vector<int32_t> top, left;  // windowed only, one per row
};

bool same_map(const Layer& a, const Layer& b) {
  return a.map_c == b.map_c && a.map_h == b.map_h && a.map_w == b.map_w;
}
int64_t width(const Layer& node, const Rows& R) { return R.windowed ? node.map_c * R.h * R.w : node.size; }
Window window_of(const Layer& node, const Rows& R, int64_t r) {
  if (!R.windowed) return Window{0, 0, node.map_h, node.map_w};
  return Window{R.top[r], R.left[r], R.h, R.w};
}
bool same_geometry(const Rows& a, const Rows& b) {
  if (!a.windowed || !b.windowed) return a.windowed == b.windowed;
  return a.h == b.h && a.w == b.w && a.top == b.top && a.left == b.left;
}

// The cost rule: rows go windowed where a window of h x w covers at most half of the H x W map
// (the work per row at least halves, which pays for the index arithmetic); dense otherwise.
// RowForm::kWindowed forces windows up to 4x the map's area, hanging over its edges (tests use it
// to reach every edge case; the cap keeps windows that grow through deep stacks from exploding).
bool use_window(RowForm form, int64_t h, int64_t w, int64_t H, int64_t W) {
  if (form == RowForm::kDense || H == 0) return false;
  if (form == RowForm::kWindowed) return h * w <= 4 * H * W;
  return 2 * h * w <= H * W;
}

// The entries of row r that lie on the node's map, as contiguous runs: f(k, d, n, c) for entries
// k..k+n-1 of the row, which are d..d+n-1 of the node, all of channel c (on a flat node, one run
// and c = 0). The hot loops run over these runs as SIMD reductions: the rounding terms bound
// sums in any order, so the reassociation that "omp simd reduction" allows keeps them valid.
template <class F>
inline void each_run(const Layer& node, const Rows& R, int64_t r, F&& f) {
  if (node.map_h == 0) {
    f(0, 0, node.size, 0);
    return;
  }
  if (!R.windowed) {
    const int64_t P = node.map_h * node.map_w;
    for (int64_t c = 0; c < node.map_c; ++c) f(c * P, c * P, P, c);
    return;
  }
  const int64_t H = node.map_h, W = node.map_w, t = R.top[r], l = R.left[r];
  const int64_t i0 = std::max<int64_t>(0, -t), i1 = std::min(R.h, H - t);
  const int64_t j0 = std::max<int64_t>(0, -l), j1 = std::min(R.w, W - l);
  if (j1 <= j0) return;
  for (int64_t c = 0; c < node.map_c; ++c)
    for (int64_t i = i0; i < i1; ++i) f((c * R.h + i) * R.w + j0, (c * H + t + i) * W + l + j0, j1 - j0, c);
}

void densify(const Layer& node, Rows& R, int64_t rows) {
  if (!R.windowed) return;
  const int64_t wid = width(node, R), size = node.size;
  Rows dense;
  dense.v.assign(rows * size, 0.0f);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = R.v.data() + r * wid;
    float* dst = dense.v.data() + r * size;
    each_run(node, R, r, [&](int64_t k, int64_t d, int64_t n, int64_t) { std::copy(src + k, src + k + n, dst + d); });
  }
  R = std::move(dense);
}

// What the chunks of rows of one back-substitution share, computed once from the boxes: per node
// the bound magnitudes max(|l|, |u|), the ReLU relaxations and the rounding terms' weights, and
// working memory.
class BackwardCache {
 public:
  BackwardCache(const Network& net, const std::vector<Box>& boxes, bool sound)
      : net_(net), boxes_(boxes), sound_(sound), magnitude_(net.layers.size()), relu_(net.layers.size()),
        weighted_(net.layers.size()) {}

  const std::vector<float>& magnitude(int node) {
    std::vector<float>& m = magnitude_[node];
    if (m.empty()) {
      const Box& box = boxes_[node];
      m.resize(box.lo.size());
      for (size_t i = 0; i < m.size(); ++i) m[i] = std::max(std::fabs(box.lo[i]), std::fabs(box.hi[i]));
    }
    return m;
  }

  // Lower slope alpha, upper slope beta and upper intercept of each neuron of ReLU `index`.
  struct Relu {
    std::vector<float> alpha, beta, icpt;
  };
  const Relu& relu(int index) {
    Relu& R = relu_[index];
    if (!R.alpha.empty()) return R;
    const Box& pre = boxes_[net_.layers[index].inputs[0]];
    const size_t n = pre.lo.size();
    R.alpha.resize(n);
    R.beta.resize(n);
    R.icpt.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const float l = pre.lo[i], u = pre.hi[i];
      if (l >= 0) {
        R.alpha[i] = R.beta[i] = 1;
        R.icpt[i] = 0;
      } else if (u <= 0) {
        R.alpha[i] = R.beta[i] = R.icpt[i] = 0;
      } else {  // the chord above, the adaptive slope below (see relu_relaxation)
        R.beta[i] = u / (u - l);
        R.alpha[i] = u > -l ? 1.0f : 0.0f;
        if (sound_) {
          const double g = std::max(-double(R.beta[i]) * l, double(u) - double(R.beta[i]) * u) * (1 + 0x1p-50);
          R.icpt[i] = f32_up(g);
        } else {
          R.icpt[i] = -R.beta[i] * l;
        }
      }
    }
    return R;
  }

  // |W| m / (1 - gamma_q) for the Linear or Conv2d layer `index` (m: its input's magnitudes), the
  // weights of the coefficient product's rounding term (see _affine_backward in reference.py).
  const std::vector<float>& weighted_magnitude(int index, int64_t batch) {
    std::vector<float>& wm = weighted_[index];
    if (!wm.empty()) return wm;
    const Layer& L = net_.layers[index];
    const float* m = magnitude(L.inputs[0]).data();
    wm.resize(batch * L.size);
    if (L.kind == LayerKind::kLinear) {
      gemm(false, true, batch, L.out, L.in, m, L.in, L.abs_weight.data(), L.in, wm.data(), L.out);
    } else {
      conv_forward(L.conv, L.abs_weight.data(), m, batch, wm.data());
    }
    // fl(|W| m) >= (1 - gamma_n) |W| m (all terms >= 0); the quotient is rounded up to float (the
    // double division's error is far below the float ulp that next_up adds).
    const double scale = 1 / (1 - gamma(L.kind == LayerKind::kLinear ? L.in : L.conv.q()));
    for (float& v : wm) v = f32_up(double(v) * scale);
    return wm;
  }

  const Box& box(int node) const { return boxes_[node]; }

 private:
  const Network& net_;
  const std::vector<Box>& boxes_;
  bool sound_;
  std::vector<std::vector<float>> magnitude_;
  std::vector<Relu> relu_;
  std::vector<std::vector<float>> weighted_;
};

class Backward {
 public:
  Backward(const Network& net, BackwardCache& relax, bool sound, RowForm form, int64_t rows, const int32_t* batch_of,
           int64_t batch)
      : net_(net), relax_(relax), sound_(sound), form_(form), rows_(rows), batch_of_(batch_of), batch_(batch),
        lam_(net.layers.size()), cst_(rows, 0.0), slack_(rows, 0.0), value_(rows, 0.0) {}

  // Lower bounds (float32, rounded down when sound) of the rows of `spec` on node `start`,
  // back-substituted to node `stop` and concretised there (the input set, or boxes[stop]).
  std::vector<float> run(int start, Rows spec, int stop, const InputSet& input,
                         const std::vector<double>* initial_const = nullptr) {
    if (initial_const) cst_ = *initial_const;
    lam_[start] = std::move(spec);
    for (int index = start; index >= stop; --index) {
      if (lam_[index].v.empty()) continue;
      Rows lam = std::move(lam_[index]);
      lam_[index] = Rows{};
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
  // Rows reaching `node` along several paths (residual networks) are summed there.
  void push(int node, Rows&& lam) {
    Rows& have = lam_[node];
    if (have.v.empty()) {
      have = std::move(lam);
      return;
    }
    const Layer& N = net_.layers[node];
    if (!same_geometry(have, lam)) {
      densify(N, have, rows_);
      densify(N, lam, rows_);
    }
    const int64_t wid = width(N, have);
    const float* m = sound_ ? relax_.magnitude(node).data() : nullptr;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows_; ++r) {
      float* a = have.v.data() + r * wid;
      const float* b = lam.v.data() + r * wid;
      const float* mb = m ? m + batch_of_[r] * N.size : nullptr;
      double err = 0;
      each_run(N, have, r, [&](int64_t k, int64_t d, int64_t n, int64_t) {
        float* __restrict x = a + k;
        const float* __restrict y = b + k;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) x[i] += y[i];
        if (mb) err += abs_dot_run(x, mb + d, n);
      });
      slack_[r] += kU * err;
    }
  }

  // const += sum_j lam[r, j] * t[j] (per_channel: t[channel of j]); slack += gamma64 of that sum.
  void add_const(const Layer& node, const Rows& lam, const float* t, bool per_channel) {
    const int64_t wid = width(node, lam);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows_; ++r) {
      const float* a = lam.v.data() + r * wid;
      Sums sums;
      each_run(node, lam, r, [&](int64_t k, int64_t d, int64_t n, int64_t c) {
        if (per_channel) {  // sum a t_c = t_c sum a, but summed as the products, for the rounding term
          const float tc = t[c];
          double s = 0, abs_sum = 0;
          const float* __restrict x = a + k;
#pragma omp simd reduction(+ : s, abs_sum)
          for (int64_t i = 0; i < n; ++i) {
            const double term = double(x[i]) * tc;
            s += term;
            abs_sum += std::fabs(term);
          }
          sums.value += s;
          sums.abs_sum += abs_sum;
        } else {
          dot_run(a + k, t + d, n, sums);
        }
      });
      cst_[r] += sums.value;
      if (sound_) slack_[r] += gamma64(node.size + 1) * sums.abs_sum;
    }
  }

  // slack[r] += factor * sum_j |lam[r, j]| * w[batch_of(r), j]
  void add_weighted_slack(const Layer& node, const Rows& lam, const std::vector<float>& w, double factor) {
    const int64_t wid = width(node, lam);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows_; ++r) {
      const float* a = lam.v.data() + r * wid;
      const float* wb = w.data() + batch_of_[r] * node.size;
      double s = 0;
      each_run(node, lam, r, [&](int64_t k, int64_t d, int64_t n, int64_t) { s += abs_dot_run(a + k, wb + d, n); });
      slack_[r] += factor * s;
    }
  }

  void step(int index, Rows& lam) {
    const Layer& L = net_.layers[index];
    const int src = L.inputs[0];
    const int64_t size = L.size, src_size = net_.layers[src].size;
    switch (L.kind) {
      case LayerKind::kLinear: {
        densify(L, lam, rows_);
        add_const(L, lam, L.bias.data(), false);
        Rows fresh;
        fresh.v.resize(rows_ * src_size);
        gemm(false, false, rows_, L.in, L.out, lam.v.data(), L.out, L.weight.data(), L.in, fresh.v.data(), L.in);
        if (sound_)  // gamma_out |lam| (|W| m): the error of the coefficient product
          add_weighted_slack(L, lam, relax_.weighted_magnitude(index, batch_), gamma(L.out));
        push(src, std::move(fresh));
        return;
      }
      case LayerKind::kConv2d:
        conv_step(index, lam);
        return;
      case LayerKind::kReLU: {
        if (lam.windowed && !same_map(L, net_.layers[src])) densify(L, lam, rows_);
        const BackwardCache::Relu& relu = relax_.relu(index);
        const float* m = sound_ ? relax_.magnitude(src).data() : nullptr;
        const int64_t wid = width(L, lam);
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows_; ++r) {
          const int64_t off = batch_of_[r] * size;
          float* a = lam.v.data() + r * wid;
          const float* alpha = relu.alpha.data() + off;
          const float* beta = relu.beta.data() + off;
          const float* icpt = relu.icpt.data() + off;
          const float* mb = m ? m + off : nullptr;
          Sums sums;
          each_run(L, lam, r, [&](int64_t k, int64_t d, int64_t n, int64_t) {
            relu_run(a + k, alpha + d, beta + d, icpt + d, mb ? mb + d : nullptr, n, sums);
          });
          cst_[r] += sums.value;
          if (sound_) slack_[r] += gamma64(size + 1) * sums.abs_sum + kU * sums.extra;
        }
        push(src, std::move(lam));
        return;
      }
      case LayerKind::kReshape:
        densify(L, lam, rows_);
        push(src, std::move(lam));
        return;
      case LayerKind::kAffine: {
        if (lam.windowed && !same_map(L, net_.layers[src])) densify(L, lam, rows_);
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
        add_const(L, lam, t_mid.data(), false);
        const float* m = sound_ ? relax_.magnitude(src).data() : nullptr;
        const int64_t wid = width(L, lam);
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows_; ++r) {
          const int64_t off = batch_of_[r] * size;
          float* a = lam.v.data() + r * wid;
          double widths = 0;
          each_run(L, lam, r, [&](int64_t k, int64_t d, int64_t n, int64_t) {
#pragma omp simd reduction(+ : widths)
            for (int64_t i = 0; i < n; ++i) {
              const float v = a[k + i];
              if (m)
                widths += std::fabs(v) *
                          ((s_rad[d + i] + kU * std::fabs(s_mid[d + i])) * double(m[off + d + i]) + t_rad[d + i]);
              a[k + i] = v * s_mid[d + i];
            }
          });
          if (sound_) slack_[r] += widths * (1 + 8 * kU);
        }
        push(src, std::move(lam));
        return;
      }
      case LayerKind::kAdd: {
        if (lam.windowed && !(same_map(L, net_.layers[src]) && same_map(L, net_.layers[L.inputs[1]])))
          densify(L, lam, rows_);
        Rows copy(lam);
        push(L.inputs[1], std::move(copy));
        push(src, std::move(lam));
        return;
      }
      case LayerKind::kInput:
        break;
    }
    throw std::logic_error("back-substitution reached the input before its stop node");
  }

  // Rows on the convolution's output (windows, or the whole map when dense) become rows on its
  // input: per group one GEMM cols (q x R*P) = W_g^T (q x cout_g) . lam_g, lam_g laid out
  // (cout_g, R*P) with P the positions of one row's window, then each row's columns scattered
  // onto its input window (col2im_window). The input window of an h x w output window is
  // ((h-1)*sh + (kh-1)*dh + 1) x ((w-1)*sw + (kw-1)*dw + 1); use_window decides its form.
  void conv_step(int index, Rows& lam) {
    const Layer& L = net_.layers[index];
    const ConvShape& s = L.conv;
    const Layer& in_node = net_.layers[L.inputs[0]];
    const int64_t q = s.q(), cout_g = s.c_out / s.groups;
    add_const(L, lam, L.bias.data(), true);
    const int64_t oh = lam.windowed ? lam.h : s.h_out, ow = lam.windowed ? lam.w : s.w_out, P = oh * ow;
    const int64_t ih = (oh - 1) * s.sh + (s.kh - 1) * s.dh + 1, iw = (ow - 1) * s.sw + (s.kw - 1) * s.dw + 1;
    Rows fresh;
    fresh.windowed = use_window(form_, ih, iw, s.h_in, s.w_in);
    if (fresh.windowed) {
      fresh.h = ih;
      fresh.w = iw;
      fresh.top.resize(rows_);
      fresh.left.resize(rows_);
      for (int64_t r = 0; r < rows_; ++r) {
        const Window out = window_of(L, lam, r);
        fresh.top[r] = static_cast<int32_t>(out.top * s.sh - s.ph);
        fresh.left[r] = static_cast<int32_t>(out.left * s.sw - s.pw);
      }
    }
    const int64_t in_width = width(in_node, fresh), out_width = s.c_out * P;
    fresh.v.assign(rows_ * in_width, 0.0f);
    // Rows go in blocks small enough that a block's columns stay in cache between the GEMM that
    // writes them and the scatter that reads them; the threads take blocks in turn, each block
    // with its own single-threaded GEMM.
    const int64_t block = std::max<int64_t>(1, kColumnsPerBlock / (q * P));
    const int64_t blocks = (rows_ + block - 1) / block;
#pragma omp parallel
    {
      std::vector<float> lam_g(cout_g * block * P), cols(q * block * P);
#pragma omp for schedule(dynamic)
      for (int64_t bi = 0; bi < blocks; ++bi) {
        const int64_t r0 = bi * block, n = std::min(block, rows_ - r0), N = n * P;
        for (int64_t g = 0; g < s.groups; ++g) {
          for (int64_t c = 0; c < cout_g; ++c)
            for (int64_t r = 0; r < n; ++r) {
              const float* from = lam.v.data() + (r0 + r) * out_width + (g * cout_g + c) * P;
              std::copy(from, from + P, lam_g.data() + c * N + r * P);
            }
          gemm(true, false, q, N, cout_g, L.weight.data() + g * cout_g * q, q, lam_g.data(), N, cols.data(), N);
          for (int64_t r = r0; r < r0 + n; ++r)
            col2im_window(s, cols.data() + (r - r0) * P, N, g, window_of(L, lam, r), fresh.v.data() + r * in_width,
                          window_of(in_node, fresh, r));
        }
      }
    }
    if (sound_)  // gamma |lam| (|W| m): each coefficient sums at most cout_g * kh * kw products
      add_weighted_slack(L, lam, relax_.weighted_magnitude(index, batch_), gamma(cout_g * s.kh * s.kw));
    push(L.inputs[0], std::move(fresh));
  }

  void concretize(int node, const Rows& lam, const InputSet& input, bool at_input) {
    const Layer& N = net_.layers[node];
    const int64_t size = N.size, wid = width(N, lam);
    const bool l2 = at_input && input.norm == Norm::kL2;
    const Box& box = at_input ? *input.box : relax_.box(node);
    std::vector<float> c, r;
    if (!l2) {
      c.resize(box.lo.size());
      r.resize(box.lo.size());
      centre_radius(box.lo.data(), box.hi.data(), box.lo.size(), c.data(), r.data(), sound_);
    }
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < rows_; ++row) {
      const int64_t off = batch_of_[row] * size;
      const float* a = lam.v.data() + row * wid;
      double value = 0, abs_sum = 0;
      if (l2) {
        double sq = 0;
        const float* x = input.centre + off;
        each_run(N, lam, row, [&](int64_t k, int64_t d, int64_t n, int64_t) {
#pragma omp simd reduction(+ : value, abs_sum, sq)
          for (int64_t i = 0; i < n; ++i) {
            const double ai = a[k + i], term = ai * x[d + i];
            value += term;
            abs_sum += std::fabs(term);
            sq += ai * ai;
          }
        });
        const double norm = std::sqrt(sq), eps = input.eps[batch_of_[row]];
        value -= eps * norm;
        if (sound_) slack_[row] += gamma64(size + 1) * abs_sum + gamma64(size + 2) * eps * norm * 2;
      } else {
        const float* cb = c.data() + off;
        const float* rb = r.data() + off;
        Sums sums;
        each_run(N, lam, row, [&](int64_t k, int64_t d, int64_t n, int64_t) { box_run(a + k, cb + d, rb + d, n, sums); });
        value = sums.value - sums.extra;
        if (sound_) slack_[row] += gamma64(size + 1) * (sums.abs_sum + sums.extra);
      }
      value_[row] = value;
    }
  }

  const Network& net_;
  BackwardCache& relax_;
  bool sound_;
  RowForm form_;
  int64_t rows_;
  const int32_t* batch_of_;
  int64_t batch_;
  std::vector<Rows> lam_;
  std::vector<double> cst_, slack_, value_;
};

// Rows of coefficients back-substituted at once: memory is bounded by the chunk, not by the
// number of rows. Windowed rows are small, so more of them go at once.
constexpr int64_t kRowChunk = 1024, kWindowedRowChunk = 4096;

// Back-substitutes the dense `spec` rows (rows x size of node start; row r of input batch_of[r])
// in chunks, each concretised at `stop`.
std::vector<float> back_substitute(const Network& net, const std::vector<Box>& boxes, int start,
                                   const std::vector<float>& spec, const std::vector<int32_t>& batch_of, int stop,
                                   const InputSet& input, int64_t batch, bool sound, RowForm form) {
  const int64_t size = net.layers[start].size, rows = static_cast<int64_t>(batch_of.size());
  BackwardCache relax(net, boxes, sound);
  std::vector<float> out(rows);
  for (int64_t r0 = 0; r0 < rows; r0 += kRowChunk) {
    const int64_t n = std::min(kRowChunk, rows - r0);
    Rows chunk;
    chunk.v.assign(spec.begin() + r0 * size, spec.begin() + (r0 + n) * size);
    Backward pass(net, relax, sound, form, n, batch_of.data() + r0, batch);
    std::vector<float> lower = pass.run(start, std::move(chunk), stop, input);
    std::copy(lower.begin(), lower.end(), out.begin() + r0);
  }
  return out;
}

// The rows of the unstable neurons of node `pre` (the input of a ReLU) for its intermediate
// bounds: +e_j (lower bound) and -e_j (upper bound) for each. Where `pre` is computed by a Linear
// or Conv2d layer the rows start one layer down, as row j of W or kernel j placed on its receptive
// field, with constant sign * b_j: exact (a copy and a negation), no rounding term.
class UnitRows {
 public:
  UnitRows(const Network& net, int pre, RowForm form) : net_(net), L_(net.layers[pre]) {
    shortcut_ = L_.kind == LayerKind::kLinear || L_.kind == LayerKind::kConv2d;
    start_ = shortcut_ ? L_.inputs[0] : pre;
    const Layer& S = net.layers[start_];
    if (L_.kind == LayerKind::kConv2d) {
      const ConvShape& s = L_.conv;
      h_ = (s.kh - 1) * s.dh + 1;
      w_ = (s.kw - 1) * s.dw + 1;
      windowed_ = use_window(form, h_, w_, s.h_in, s.w_in);
    } else if (!shortcut_ && S.map_h > 0) {
      h_ = w_ = 1;
      windowed_ = use_window(form, 1, 1, S.map_h, S.map_w);
    }
    width_ = windowed_ ? S.map_c * h_ * w_ : S.size;
  }
  int start() const { return start_; }
  bool windowed() const { return windowed_; }

  // Rows 2i (+e_j) and 2i + 1 (-e_j) for the neurons flat[i] = b * size + j.
  Rows make(const std::vector<int64_t>& flat, std::vector<int32_t>* batch_of, std::vector<double>* cst) const {
    const int64_t n = static_cast<int64_t>(flat.size()), size = L_.size;
    Rows R;
    R.windowed = windowed_;
    R.h = h_;
    R.w = w_;
    R.v.assign(2 * n * width_, 0.0f);
    if (windowed_) {
      R.top.resize(2 * n);
      R.left.resize(2 * n);
    }
    batch_of->assign(2 * n, 0);
    cst->assign(2 * n, 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t b = flat[i] / size, j = flat[i] % size;
      (*batch_of)[2 * i] = (*batch_of)[2 * i + 1] = static_cast<int32_t>(b);
      for (int sign = 0; sign < 2; ++sign) {
        const int64_t row = 2 * i + sign;
        fill(R, row, j, sign ? -1.0f : 1.0f, &(*cst)[row]);
      }
    }
    return R;
  }

 private:
  void fill(Rows& R, int64_t row, int64_t j, float sign, double* cst) const {
    float* lam = R.v.data() + row * width_;
    if (L_.kind == LayerKind::kLinear) {
      const float* w = L_.weight.data() + j * L_.in;
      for (int64_t i = 0; i < L_.in; ++i) lam[i] = sign * w[i];
      *cst = sign * double(L_.bias[j]);
      return;
    }
    if (L_.kind == LayerKind::kConv2d) {
      const ConvShape& s = L_.conv;
      const int64_t P = s.p_out(), c = j / P, oh = (j % P) / s.w_out, ow = j % s.w_out;
      const int64_t cin_g = s.c_in / s.groups, g = c / (s.c_out / s.groups);
      const int64_t top = oh * s.sh - s.ph, left = ow * s.sw - s.pw;
      if (R.windowed) {
        R.top[row] = static_cast<int32_t>(top);
        R.left[row] = static_cast<int32_t>(left);
      }
      for (int64_t ci = 0; ci < cin_g; ++ci)
        for (int64_t ki = 0; ki < s.kh; ++ki)
          for (int64_t kj = 0; kj < s.kw; ++kj) {
            const int64_t ih = top + ki * s.dh, iw = left + kj * s.dw;
            if (ih < 0 || ih >= s.h_in || iw < 0 || iw >= s.w_in) continue;  // the padding
            const int64_t at = R.windowed ? ((g * cin_g + ci) * h_ + ki * s.dh) * w_ + kj * s.dw
                                          : ((g * cin_g + ci) * s.h_in + ih) * s.w_in + iw;
            lam[at] = sign * L_.weight[((c * cin_g + ci) * s.kh + ki) * s.kw + kj];
          }
      *cst = sign * double(L_.bias[c]);
      return;
    }
    if (R.windowed) {  // a 1 x 1 window at the neuron's position
      const Layer& S = net_.layers[start_];
      const int64_t P = S.map_h * S.map_w;
      R.top[row] = static_cast<int32_t>((j % P) / S.map_w);
      R.left[row] = static_cast<int32_t>(j % S.map_w);
      lam[j / P] = sign;
    } else {
      lam[j] = sign;
    }
  }

  const Network& net_;
  const Layer& L_;
  bool shortcut_ = false, windowed_ = false;
  int start_ = 0;
  int64_t h_ = 0, w_ = 0, width_ = 0;
};

// What a tightening may skip: the ReLU inputs at or before node keep_through keep their boxes
// (a subproblem's parent's, unchanged there), split constraints stay clamped in, and past the
// deadline no more CROWN rows are back-substituted (the boxes kept are sound as they are).
struct Tightening {
  const Splits* splits = nullptr;
  int keep_through = -1;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

// CROWN bounds on every ReLU's input, in order, for the (input, neuron) pairs that IBP leaves
// unstable; each layer's new bounds feed the next (Zhang et al. 2018).
void tighten_intermediate(const Network& net, std::vector<Box>& boxes, const InputSet& input, int64_t batch,
                          bool sound, RowForm form, const Tightening& limits = Tightening{}) {
  for (int k = 1; k < static_cast<int>(net.layers.size()); ++k) {
    if (net.layers[k].kind != LayerKind::kReLU) continue;
    const int pre = net.layers[k].inputs[0];
    if (pre <= limits.keep_through) continue;
    const int64_t size = net.layers[pre].size;
    Box& box = boxes[pre];
    std::vector<int64_t> unstable;  // flat (b, j) indices
    for (int64_t i = 0; i < batch * size; ++i)
      if (box.lo[i] < 0 && box.hi[i] > 0) unstable.push_back(i);
    if (unstable.empty()) continue;
    const UnitRows units(net, pre, form);
    BackwardCache relax(net, boxes, sound);  // back-substitution reads only the nodes below `pre`
    const size_t per_chunk = (units.windowed() ? kWindowedRowChunk : kRowChunk) / 2;
    for (size_t u0 = 0; u0 < unstable.size(); u0 += per_chunk) {
      if (std::chrono::steady_clock::now() > limits.deadline) return;
      const size_t n = std::min(per_chunk, unstable.size() - u0);
      const std::vector<int64_t> flat(unstable.begin() + u0, unstable.begin() + u0 + n);
      std::vector<int32_t> batch_of;
      std::vector<double> cst;
      Rows spec = units.make(flat, &batch_of, &cst);
      Backward pass(net, relax, sound, form, 2 * static_cast<int64_t>(n), batch_of.data(), batch);
      const std::vector<float> lower = pass.run(units.start(), std::move(spec), 0, input, &cst);
      for (size_t i = 0; i < n; ++i) {
        box.lo[flat[i]] = std::max(box.lo[flat[i]], lower[2 * i]);
        box.hi[flat[i]] = std::min(box.hi[flat[i]], -lower[2 * i + 1]);
      }
    }
    ibp(net, boxes, pre + 1, batch, sound, limits.splits);
  }
}

}  // namespace

std::vector<std::pair<std::vector<float>, std::vector<float>>> tighten_domains(const Network& net,
                                                                               const DomainQuery& q) {
  const int64_t batch = q.batch, n_in = net.layers.at(0).size, nodes = static_cast<int64_t>(net.layers.size());
  std::vector<Box> boxes(nodes);
  Box input_box{std::vector<float>(q.box_lower, q.box_lower + batch * n_in),
                std::vector<float>(q.box_upper, q.box_upper + batch * n_in)};
  boxes[0] = input_box;
  Splits splits(nodes, nullptr);
  for (int64_t i = 0; i < nodes && q.splits; ++i) splits[i] = q.splits[i];
  int start = 1;
  if (q.node_lower) {  // the given boxes, split constraints clamped in; IBP only after keep_through
    for (int64_t i = 1; i < nodes; ++i) {
      const int64_t n = batch * net.layers[i].size;
      boxes[i] = Box{std::vector<float>(q.node_lower[i], q.node_lower[i] + n),
                     std::vector<float>(q.node_upper[i], q.node_upper[i] + n)};
      clamp_splits(boxes[i], splits[i]);
    }
    start = std::max(1, q.keep_through + 1);
  }
  ibp(net, boxes, start, batch, q.sound, &splits);
  const InputSet input{q.norm, q.centre, q.eps, &input_box};
  Tightening limits;
  limits.splits = &splits;
  limits.keep_through = q.node_lower ? q.keep_through : -1;
  if (q.seconds < 1e9)
    limits.deadline = std::chrono::steady_clock::now() +
                      std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(
                          std::max(q.seconds, 0.0)));
  tighten_intermediate(net, boxes, input, batch, q.sound, q.rows_form, limits);
  std::vector<std::pair<std::vector<float>, std::vector<float>>> out(nodes);
  for (int64_t i = 0; i < nodes; ++i) out[i] = {std::move(boxes[i].lo), std::move(boxes[i].hi)};
  return out;
}

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
      return back_substitute(net, boxes, last, spec, batch_of, out.inputs[0], input, batch, query.sound,
                             query.rows_form);
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
  if (query.method == Method::kCrown) tighten_intermediate(net, boxes, input, batch, query.sound, query.rows_form);
  return back_substitute(net, boxes, last, spec, batch_of, 0, input, batch, query.sound, query.rows_form);
}

}  // namespace bounds
}  // namespace certify

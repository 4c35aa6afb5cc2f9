// CROWN back-substitution (see backward.h).
#include "bounds/backward.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "bounds/kernels.h"
#include "bounds/rounding.h"

namespace certify {
namespace bounds {

bool use_window(RowForm form, int64_t h, int64_t w, int64_t H, int64_t W) {
  if (form == RowForm::kDense || H == 0) return false;
  if (form == RowForm::kWindowed) return h * w <= 4 * H * W;
  return 2 * h * w <= H * W;
}

const std::vector<float>& BackwardCache::magnitude(int node) {
  std::vector<float>& m = magnitude_[node];
  if (m.empty()) {
    const Box& box = boxes_[node];
    m.resize(box.lo.size());
    for (size_t i = 0; i < m.size(); ++i) m[i] = std::max(std::fabs(box.lo[i]), std::fabs(box.hi[i]));
  }
  return m;
}

const BackwardCache::Relu& BackwardCache::relu(int index) {
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

const BackwardCache::Lines& BackwardCache::lines(int index) {
  Lines& R = lines_[index];
  if (!R.a_l.empty()) return R;
  const Box& pre = boxes_[net_.layers[index].inputs[0]];
  const int64_t n = static_cast<int64_t>(pre.lo.size());
  R.a_l.resize(n);
  R.b_l.resize(n);
  R.a_u.resize(n);
  R.b_u.resize(n);
  const ActivationFn& fn = net_.layers[index].activation;
#pragma omp parallel for schedule(static) if (n >= 64)
  for (int64_t i = 0; i < n; ++i) {
    const certify::bounds::Lines L = activation_relaxation(fn, pre.lo[i], pre.hi[i], sound_);
    R.a_l[i] = L.a_l;
    R.b_l[i] = L.b_l;
    R.a_u[i] = L.a_u;
    R.b_u[i] = L.b_u;
  }
  return R;
}

const std::vector<float>& BackwardCache::weighted_magnitude(int index, int64_t batch) {
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

namespace {

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

// A smooth activation's lines: lam >= 0 takes the lower line (a_l, b_l), lam < 0 the upper one.
// value += sum lam * intercept, abs_sum += its |terms|, extra += |new lam| * m (every product is
// rounded). Only the intercept of the side in use is read: the other may be infinite.
inline void lines_run(float* __restrict a, const float* __restrict a_l, const float* __restrict b_l,
                      const float* __restrict a_u, const float* __restrict b_u, const float* __restrict m, int64_t n,
                      Sums& out) {
  double s = 0, abs_sum = 0, err = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = a[i];
    const bool pos = v >= 0;
    const double term = double(v) * (pos ? b_l[i] : b_u[i]);
    const float next = v * (pos ? a_l[i] : a_u[i]);
    s += term;
    abs_sum += std::fabs(term);
    if (m) err += std::fabs(double(next)) * m[i];
    a[i] = next;
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

// Whether every row's window of b lies inside its window of a (both windowed).
bool contains(const Rows& a, const Rows& b, int64_t rows) {
  if (!a.windowed || !b.windowed || b.h > a.h || b.w > a.w) return false;
  for (int64_t r = 0; r < rows; ++r)
    if (b.top[r] < a.top[r] || b.top[r] + b.h > a.top[r] + a.h || b.left[r] < a.left[r] ||
        b.left[r] + b.w > a.left[r] + a.w)
      return false;
  return true;
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
    // A residual join: the longer path's windows usually contain the shorter path's, which are
    // then added into them in place; rows of any other two geometries become dense.
    if (contains(lam, have, rows_)) std::swap(have, lam);
    const bool same = same_geometry(have, lam);
    if (!same && !contains(have, lam, rows_)) {
      densify(N, have, rows_);
      densify(N, lam, rows_);
    }
    const bool inside = !same_geometry(have, lam);
    const int64_t wid = width(N, have), lam_wid = width(N, lam);
    const float* m = sound_ ? relax_.magnitude(node).data() : nullptr;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows_; ++r) {
      float* a = have.v.data() + r * wid;
      const float* b = lam.v.data() + r * lam_wid;
      if (inside) {  // lam's window sits at (dt, dl) in have's
        const int64_t dt = lam.top[r] - have.top[r], dl = lam.left[r] - have.left[r];
        for (int64_t c = 0; c < N.map_c; ++c)
          for (int64_t i = 0; i < lam.h; ++i) {
            float* __restrict x = a + (c * have.h + dt + i) * have.w + dl;
            const float* __restrict y = b + (c * lam.h + i) * lam.w;
#pragma omp simd
            for (int64_t j = 0; j < lam.w; ++j) x[j] += y[j];
          }
      }
      const float* mb = m ? m + batch_of_[r] * N.size : nullptr;
      double err = 0;  // the sums' rounding: u |sum| m, taken over every entry (untouched ones too)
      each_run(N, have, r, [&](int64_t k, int64_t d, int64_t n, int64_t) {
        float* __restrict x = a + k;
        if (!inside) {
          const float* __restrict y = b + k;
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) x[i] += y[i];
        }
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

  // An element-wise relaxation (a ReLU's or a smooth activation's lines): run(a, j, m, n, sums)
  // rewrites the n coefficients a on neurons j.. of the layer (m their input magnitudes, or null
  // when not sound) and sums their intercept terms; the rows then go to the layer's input.
  template <class Run>
  void relax_rows(int index, Rows& lam, Run&& run) {
    const Layer& L = net_.layers[index];
    const int src = L.inputs[0];
    const int64_t size = L.size;
    if (lam.windowed && !same_map(L, net_.layers[src])) densify(L, lam, rows_);
    const float* m = sound_ ? relax_.magnitude(src).data() : nullptr;
    const int64_t wid = width(L, lam);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows_; ++r) {
      const int64_t off = batch_of_[r] * size;
      float* a = lam.v.data() + r * wid;
      Sums sums;
      each_run(L, lam, r, [&](int64_t k, int64_t d, int64_t n, int64_t) {
        run(a + k, off + d, m ? m + off + d : nullptr, n, sums);
      });
      cst_[r] += sums.value;
      if (sound_) slack_[r] += gamma64(size + 1) * sums.abs_sum + kU * sums.extra;
    }
    push(src, std::move(lam));
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
        const BackwardCache::Relu& relu = relax_.relu(index);
        relax_rows(index, lam, [&](float* a, int64_t j, const float* m, int64_t n, Sums& sums) {
          relu_run(a, relu.alpha.data() + j, relu.beta.data() + j, relu.icpt.data() + j, m, n, sums);
        });
        return;
      }
      case LayerKind::kActivation: {
        const BackwardCache::Lines& lines = relax_.lines(index);
        relax_rows(index, lam, [&](float* a, int64_t j, const float* m, int64_t n, Sums& sums) {
          lines_run(a, lines.a_l.data() + j, lines.b_l.data() + j, lines.a_u.data() + j, lines.b_u.data() + j, m, n,
                    sums);
        });
        return;
      }
      case LayerKind::kGather: {
        // Coefficients go back to the values they were copied from; where one value was copied
        // to several outputs (multiplicity k), its coefficients are summed in float32: gamma_{k-1}
        // of their magnitudes, against the value's magnitude.
        densify(L, lam, rows_);
        Rows fresh;
        fresh.v.assign(rows_ * src_size, 0.0f);
        const float* m = sound_ && L.multiplicity > 1 ? relax_.magnitude(src).data() : nullptr;
        const double factor = gamma(std::max<int64_t>(L.multiplicity - 1, 0));
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows_; ++r) {
          const float* a = lam.v.data() + r * size;
          float* out = fresh.v.data() + r * src_size;
          const float* mb = m ? m + batch_of_[r] * src_size : nullptr;
          double err = 0;
          for (int64_t j = 0; j < size; ++j) {
            const int64_t k = L.index[j];
            if (k < 0) continue;
            out[k] += a[j];
            if (mb) err += std::fabs(double(a[j])) * mb[k];
          }
          if (mb) slack_[r] += factor * err;
        }
        push(src, std::move(fresh));
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

}  // namespace

std::vector<float> back_substitute_rows(const Network& net, BackwardCache& cache, bool sound, RowForm form,
                                        int64_t batch, int start, Rows rows, int64_t count, const int32_t* batch_of,
                                        int stop, const InputSet& input, const std::vector<double>* initial_const) {
  Backward pass(net, cache, sound, form, count, batch_of, batch);
  return pass.run(start, std::move(rows), stop, input, initial_const);
}

}  // namespace bounds
}  // namespace certify

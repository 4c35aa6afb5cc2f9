// The bound engine's entry points: IBP, CROWN and CROWN-IBP on a Network, batched, and the
// intermediate bounds of batches of subproblems. IBP is in ibp.cpp, back-substitution in
// backward.cpp; this file chunks the rows and runs CROWN's intermediate layers. Mirrors
// certify/bounds/reference.py step for step; the soundness argument is written out there.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <utility>
#include <vector>

#include "bounds/backward.h"
#include "bounds/ibp.h"
#include "bounds/network.h"
#include "bounds/rounding.h"

namespace certify {
namespace bounds {
namespace {

// The query's input boxes, (B, n_in) each.
Box input_box(const Network& net, const Query& q) {
  const int64_t n = q.batch * net.layers.at(0).size;
  return Box{std::vector<float>(q.box_lower, q.box_lower + n), std::vector<float>(q.box_upper, q.box_upper + n)};
}

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
    std::vector<float> lower =
        back_substitute_rows(net, relax, sound, form, batch, start, std::move(chunk), n, batch_of.data() + r0, stop, input);
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

// CROWN bounds on every ReLU's and smooth activation's input, in order, for the (input, neuron) pairs that IBP leaves
// unstable; each layer's new bounds feed the next (Zhang et al. 2018).
void tighten_intermediate(const Network& net, std::vector<Box>& boxes, const InputSet& input, int64_t batch,
                          bool sound, RowForm form, const Tightening& limits = Tightening{}) {
  for (int k = 1; k < static_cast<int>(net.layers.size()); ++k) {
    const bool relu = net.layers[k].kind == LayerKind::kReLU;
    if (!relu && net.layers[k].kind != LayerKind::kActivation) continue;
    const int pre = net.layers[k].inputs[0];
    if (pre <= limits.keep_through) continue;
    const int64_t size = net.layers[pre].size;
    Box& box = boxes[pre];
    // The neurons tighter bounds can help: a ReLU's unstable ones, every non-point interval of a
    // smooth activation.
    std::vector<int64_t> unstable;  // flat (b, j) indices
    for (int64_t i = 0; i < batch * size; ++i)
      if (relu ? (box.lo[i] < 0 && box.hi[i] > 0) : box.lo[i] < box.hi[i]) unstable.push_back(i);
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
      const std::vector<float> lower = back_substitute_rows(net, relax, sound, form, batch, units.start(), std::move(spec),
                                                            2 * static_cast<int64_t>(n), batch_of.data(), 0, input, &cst);
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
  const int64_t batch = q.batch, nodes = static_cast<int64_t>(net.layers.size());
  std::vector<Box> boxes(nodes);
  const Box inputs = input_box(net, q);
  boxes[0] = inputs;
  Splits splits(nodes, nullptr);
  for (int64_t i = 0; i < nodes && q.splits; ++i) splits[i] = q.splits[i];
  if (q.node_lower) {  // the given boxes, split constraints clamped in
    for (int64_t i = 1; i < nodes; ++i) {
      const int64_t n = batch * net.layers[i].size;
      boxes[i] = Box{std::vector<float>(q.node_lower[i], q.node_lower[i] + n),
                     std::vector<float>(q.node_upper[i], q.node_upper[i] + n)};
      clamp_splits(boxes[i], splits[i]);
    }
  }
  // IBP over every node (within the given boxes): a clamp carries into the layers after it, also
  // where keep_through keeps their CROWN bounds (one IBP pass costs little next to CROWN's rows)
  ibp(net, boxes, 1, batch, q.sound, &splits);
  const InputSet input{q.norm, q.centre, q.eps, &inputs};
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
  std::vector<Box> boxes(net.layers.size());
  boxes[0] = input_box(net, query);
  ibp(net, boxes, 1, query.batch, query.sound);
  std::copy(boxes.back().lo.begin(), boxes.back().lo.end(), lower);
  std::copy(boxes.back().hi.begin(), boxes.back().hi.end(), upper);
}

std::vector<float> compute_bounds(const Network& net, const Query& query) {
  const int64_t batch = query.batch;
  const int last = static_cast<int>(net.layers.size()) - 1;
  const int64_t n_out = net.layers[last].size, rows = query.rows;
  std::vector<Box> boxes(net.layers.size());
  const Box inputs = input_box(net, query);
  boxes[0] = inputs;
  ibp(net, boxes, 1, batch, query.sound);
  const InputSet input{query.norm, query.centre, query.eps, &inputs};

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

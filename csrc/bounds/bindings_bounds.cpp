// certify._core.BoundNetwork: the bound engine's Python face. Layers are added in the graph's
// topological order (certify/bounds/native.py does this from a traced Graph); compute() runs
// one query with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include <cblas.h>

#include "bounds/network.h"

namespace py = pybind11;

namespace certify {
namespace bounds {
namespace {

using FArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::vector<float> to_vector(const FArray& a) { return std::vector<float>(a.data(), a.data() + a.size()); }

class PyNetwork {
 public:
  int add_input(int64_t size) {
    if (!net_.layers.empty()) throw std::invalid_argument("the input must be the first layer");
    Layer L{LayerKind::kInput, {}, size};
    return add(std::move(L));
  }

  int add_linear(int src, const FArray& weight, const FArray& bias) {
    if (weight.ndim() != 2) throw std::invalid_argument("linear weight must be 2-D");
    Layer L{LayerKind::kLinear, {check(src)}, weight.shape(0)};
    L.out = weight.shape(0);
    L.in = weight.shape(1);
    if (L.in != size_of(src) || bias.size() != L.out) throw std::invalid_argument("linear: shapes do not match");
    set_weights(L, weight, bias, L.out);
    return add(std::move(L));
  }

  int add_conv(int src, const FArray& weight, const FArray& bias, py::tuple in_shape, py::tuple out_shape,
               py::tuple stride, py::tuple padding, py::tuple dilation, int64_t groups) {
    if (weight.ndim() != 4) throw std::invalid_argument("conv weight must be 4-D");
    ConvShape s;
    s.c_in = in_shape[0].cast<int64_t>();
    s.h_in = in_shape[1].cast<int64_t>();
    s.w_in = in_shape[2].cast<int64_t>();
    s.c_out = out_shape[0].cast<int64_t>();
    s.h_out = out_shape[1].cast<int64_t>();
    s.w_out = out_shape[2].cast<int64_t>();
    s.kh = weight.shape(2);
    s.kw = weight.shape(3);
    s.sh = stride[0].cast<int64_t>();
    s.sw = stride[1].cast<int64_t>();
    s.ph = padding[0].cast<int64_t>();
    s.pw = padding[1].cast<int64_t>();
    s.dh = dilation[0].cast<int64_t>();
    s.dw = dilation[1].cast<int64_t>();
    s.groups = groups;
    if (weight.shape(0) != s.c_out || weight.shape(1) * groups != s.c_in || bias.size() != s.c_out ||
        s.c_in * s.h_in * s.w_in != size_of(src))
      throw std::invalid_argument("conv: shapes do not match");
    Layer& in = net_.layers[src];
    if (in.map_h == 0) set_map(in, s.c_in, s.h_in, s.w_in);
    if (in.map_c != s.c_in || in.map_h != s.h_in || in.map_w != s.w_in)
      throw std::invalid_argument("conv: the input's map differs from the convolution's input shape");
    Layer L{LayerKind::kConv2d, {check(src)}, s.c_out * s.h_out * s.w_out};
    L.conv = s;
    set_map(L, s.c_out, s.h_out, s.w_out);
    set_weights(L, weight, bias, s.c_out);
    return add(std::move(L));
  }

  int add_relu(int src) { return add(elementwise(LayerKind::kReLU, src)); }
  int add_reshape(int src) { return add(Layer{LayerKind::kReshape, {check(src)}, size_of(src)}); }

  int add_affine(int src, const FArray& s_lo, const FArray& s_hi, const FArray& t_lo, const FArray& t_hi) {
    const int64_t size = size_of(check(src));
    for (const FArray* a : {&s_lo, &s_hi, &t_lo, &t_hi})
      if (a->size() != size) throw std::invalid_argument("affine: coefficients must have the layer's size");
    Layer L = elementwise(LayerKind::kAffine, src);
    L.s_lo = to_vector(s_lo);
    L.s_hi = to_vector(s_hi);
    L.t_lo = to_vector(t_lo);
    L.t_hi = to_vector(t_hi);
    return add(std::move(L));
  }

  // y[j] = x[index[j]], 0 where index[j] < 0 (Python checks multiplicity; it is re-derived here).
  int add_gather(int src, const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& index) {
    const int64_t n_in = size_of(check(src));
    Layer L{LayerKind::kGather, {src}, static_cast<int64_t>(index.size())};
    L.index.assign(index.data(), index.data() + index.size());
    std::vector<int64_t> count(n_in, 0);
    for (int64_t k : L.index) {
      if (k >= n_in) throw std::invalid_argument("gather: index beyond the input");
      if (k >= 0) L.multiplicity = std::max(L.multiplicity, ++count[k]);
    }
    return add(std::move(L));
  }

  int add_activation(int src, int kind, double alpha, double lower_margin) {
    if (kind < 0 || kind > 5) throw std::invalid_argument("activation: unknown kind");
    if (!(alpha > 0) || !(lower_margin >= 0)) throw std::invalid_argument("activation: bad alpha or margin");
    Layer L = elementwise(LayerKind::kActivation, src);
    L.activation = ActivationFn{static_cast<Smooth>(kind), alpha, lower_margin};
    return add(std::move(L));
  }

  int add_add(int a, int b) {
    if (size_of(check(a)) != size_of(check(b))) throw std::invalid_argument("add: sizes differ");
    Layer L = elementwise(LayerKind::kAdd, a);
    L.inputs.push_back(b);
    return add(std::move(L));
  }

  py::array_t<float> compute(const FArray& centre, const FArray& eps, const FArray& box_lower, const FArray& box_upper,
                             int norm, int method, bool sound, const FArray& spec, int rows_form) {
    Query q;
    fill_input(q, centre, eps, box_lower, box_upper, norm, sound, rows_form, "compute");
    const int64_t batch = q.batch, n_out = net_.layers.back().size;
    if (spec.ndim() != 3 || spec.shape(0) != batch || spec.shape(2) != n_out)
      throw std::invalid_argument("compute: spec must have shape (batch, rows, outputs)");
    if (method < 0 || method > 2) throw std::invalid_argument("compute: bad method");
    q.method = static_cast<Method>(method);
    q.spec = spec.data();
    q.rows = spec.shape(1);
    std::vector<float> result;
    {
      py::gil_scoped_release release;
      result = compute_bounds(net_, q);
    }
    py::array_t<float> out({batch, q.rows});
    std::copy(result.begin(), result.end(), out.mutable_data());
    return out;
  }

  // Intermediate bounds of a batch of subproblems (tighten_domains): node_boxes None or a list of
  // (lower, upper) per node, (batch, size) each (entry 0, the input, is not read); splits None or
  // a dict {node: int8 (batch, size) of -1 / 0 / +1}. Returns a list of (lower, upper) per node.
  py::list tighten(const FArray& centre, const FArray& eps, const FArray& box_lower, const FArray& box_upper, int norm,
                   bool sound, py::object node_boxes, py::object splits, int keep_through, double seconds,
                   int rows_form) {
    const int64_t nodes = static_cast<int64_t>(net_.layers.size());
    DomainQuery q;
    fill_input(q, centre, eps, box_lower, box_upper, norm, sound, rows_form, "tighten");
    const int64_t batch = q.batch;
    if (keep_through < -1) throw std::invalid_argument("tighten: keep_through must be >= -1");
    keep_through = static_cast<int>(std::min<int64_t>(keep_through, nodes - 1));  // beyond the last: keep all
    std::vector<FArray> lowers, uppers;  // kept alive for the call
    std::vector<const float*> lower_ptr(nodes, nullptr), upper_ptr(nodes, nullptr);
    if (!node_boxes.is_none()) {
      py::list list = node_boxes.cast<py::list>();
      if (static_cast<int64_t>(list.size()) != nodes) throw std::invalid_argument("tighten: one box per node");
      for (int64_t i = 0; i < nodes; ++i) {
        py::tuple pair = list[i].cast<py::tuple>();
        lowers.push_back(pair[0].cast<FArray>());
        uppers.push_back(pair[1].cast<FArray>());
        if (lowers.back().size() != batch * net_.layers[i].size || uppers.back().size() != batch * net_.layers[i].size)
          throw std::invalid_argument("tighten: node box " + std::to_string(i) + " does not match the network");
      }
      for (int64_t i = 0; i < nodes; ++i) {
        lower_ptr[i] = lowers[i].data();
        upper_ptr[i] = uppers[i].data();
      }
    }
    using I8Array = py::array_t<int8_t, py::array::c_style | py::array::forcecast>;
    std::vector<I8Array> signs;
    std::vector<const int8_t*> sign_ptr(nodes, nullptr);
    if (!splits.is_none()) {
      for (auto item : splits.cast<py::dict>()) {
        const int node = check(item.first.cast<int>());
        signs.push_back(item.second.cast<I8Array>());
        if (signs.back().size() != batch * net_.layers[node].size)
          throw std::invalid_argument("tighten: splits of node " + std::to_string(node) + " do not match the network");
        sign_ptr[node] = signs.back().data();
      }
    }
    q.node_lower = node_boxes.is_none() ? nullptr : lower_ptr.data();
    q.node_upper = node_boxes.is_none() ? nullptr : upper_ptr.data();
    q.splits = sign_ptr.data();
    q.keep_through = keep_through;
    q.seconds = seconds;
    std::vector<std::pair<std::vector<float>, std::vector<float>>> boxes;
    {
      py::gil_scoped_release release;
      boxes = tighten_domains(net_, q);
    }
    py::list out;
    for (int64_t i = 0; i < nodes; ++i) {
      py::array_t<float> lo({batch, net_.layers[i].size}), hi({batch, net_.layers[i].size});
      std::copy(boxes[i].first.begin(), boxes[i].first.end(), lo.mutable_data());
      std::copy(boxes[i].second.begin(), boxes[i].second.end(), hi.mutable_data());
      out.append(py::make_tuple(lo, hi));
    }
    return out;
  }

  py::tuple ibp_output_box(const FArray& box_lower, const FArray& box_upper, bool sound) {
    const int64_t n_in = net_.layers.at(0).size, n_out = net_.layers.back().size;
    const int64_t batch = box_lower.size() / std::max<int64_t>(n_in, 1);
    if (box_lower.size() != batch * n_in || box_upper.size() != batch * n_in)
      throw std::invalid_argument("ibp_output_box: input shapes do not match the network");
    Query q;
    q.batch = batch;
    q.box_lower = box_lower.data();
    q.box_upper = box_upper.data();
    q.sound = sound;
    py::array_t<float> lower({batch, n_out}), upper({batch, n_out});
    float* lo = lower.mutable_data();
    float* hi = upper.mutable_data();
    {
      py::gil_scoped_release release;
      ibp_output(net_, q, lo, hi);
    }
    return py::make_tuple(lower, upper);
  }

  // Declares node `index`'s (C, H, W) map (from the traced graph's shapes), before any layer reads it.
  void set_node_map(int index, int64_t c, int64_t h, int64_t w) {
    Layer& L = net_.layers[check(index)];
    if (c <= 0 || h <= 0 || w <= 0 || c * h * w != L.size) throw std::invalid_argument("set_node_map: bad map shape");
    if (index != static_cast<int>(net_.layers.size()) - 1)
      throw std::invalid_argument("set_node_map: only the last added node's map can be set");
    set_map(L, c, h, w);
  }

  int64_t num_layers() const { return static_cast<int64_t>(net_.layers.size()); }

 private:
  int check(int src) const {
    if (src < 0 || src >= static_cast<int>(net_.layers.size())) throw std::invalid_argument("bad input layer index");
    return src;
  }
  int64_t size_of(int src) const { return net_.layers[check(src)].size; }
  int add(Layer&& L) {
    net_.layers.push_back(std::move(L));
    return static_cast<int>(net_.layers.size()) - 1;
  }
  // The input sets of a query, checked against the network: centre, eps, box (B, n_in) each.
  void fill_input(Query& q, const FArray& centre, const FArray& eps, const FArray& box_lower, const FArray& box_upper,
                  int norm, bool sound, int rows_form, const std::string& what) const {
    if (net_.layers.size() < 2) throw std::invalid_argument("the network has no layers");
    const int64_t batch = centre.ndim() > 0 ? centre.shape(0) : 0, n_in = net_.layers[0].size;
    if (centre.size() != batch * n_in || box_lower.size() != batch * n_in || box_upper.size() != batch * n_in ||
        eps.size() != batch)
      throw std::invalid_argument(what + ": input shapes do not match the network");
    if (norm < 0 || norm > 1 || rows_form < 0 || rows_form > 2)
      throw std::invalid_argument(what + ": bad norm or rows form");
    q.batch = batch;
    q.norm = static_cast<Norm>(norm);
    q.centre = centre.data();
    q.eps = eps.data();
    q.box_lower = box_lower.data();
    q.box_upper = box_upper.data();
    q.sound = sound;
    q.rows_form = static_cast<RowForm>(rows_form);
  }

  static void set_map(Layer& L, int64_t c, int64_t h, int64_t w) {
    L.map_c = c;
    L.map_h = h;
    L.map_w = w;
  }
  // A layer that keeps its input's shape (and map).
  Layer elementwise(LayerKind kind, int src) const {
    const Layer& in = net_.layers[check(src)];
    Layer L{kind, {src}, in.size};
    L.map_c = in.map_c;
    L.map_h = in.map_h;
    L.map_w = in.map_w;
    return L;
  }
  static void set_weights(Layer& L, const FArray& weight, const FArray& bias, int64_t rows) {
    L.weight = to_vector(weight);
    L.bias = to_vector(bias);
    L.abs_weight.resize(L.weight.size());
    L.row_l1.assign(rows, 0.0f);
    const int64_t per_row = static_cast<int64_t>(L.weight.size()) / rows;
    for (size_t i = 0; i < L.weight.size(); ++i) {
      L.abs_weight[i] = std::fabs(L.weight[i]);
      L.row_l1[i / per_row] += L.abs_weight[i];
    }
    // The row sums are used as upper bounds: round them up past their float summation error.
    for (float& v : L.row_l1) v = std::nextafter(v * (1 + per_row * 1.2e-7f), INFINITY);
  }

  Network net_;
};

// The relaxation of certify.bounds.activations in C++, elementwise (for the tests' comparison).
py::tuple activation_lines(int kind, double alpha, double lower_margin, const FArray& lower, const FArray& upper,
                           bool sound) {
  if (kind < 0 || kind > 5 || lower.size() != upper.size()) throw std::invalid_argument("activation_lines: bad input");
  const ActivationFn fn{static_cast<Smooth>(kind), alpha, lower_margin};
  const int64_t n = lower.size();
  py::array_t<float> a_l(n), b_l(n), a_u(n), b_u(n), lo(n), hi(n);
  for (int64_t i = 0; i < n; ++i) {
    const Lines L = activation_relaxation(fn, lower.data()[i], upper.data()[i], sound);
    a_l.mutable_data()[i] = L.a_l;
    b_l.mutable_data()[i] = L.b_l;
    a_u.mutable_data()[i] = L.a_u;
    b_u.mutable_data()[i] = L.b_u;
    activation_range(fn, lower.data()[i], upper.data()[i], sound, lo.mutable_data() + i, hi.mutable_data() + i);
  }
  return py::make_tuple(a_l, b_l, a_u, b_u, lo, hi);
}

}  // namespace

void bind(py::module_& m) {
  // OpenBLAS runs single-threaded: with its worker threads on, steps of the engine were measured
  // 10-30x slower on 2 cores (their wake-up and spinning against the OpenMP loops), and concurrent
  // single-threaded calls from OpenMP threads 2-3x slower than one call. Parallelism is OpenMP's.
  scipy_openblas_set_num_threads(1);
  py::class_<PyNetwork>(m, "BoundNetwork")
      .def(py::init<>())
      .def("add_input", &PyNetwork::add_input)
      .def("add_linear", &PyNetwork::add_linear)
      .def("add_conv", &PyNetwork::add_conv)
      .def("add_relu", &PyNetwork::add_relu)
      .def("add_reshape", &PyNetwork::add_reshape)
      .def("add_affine", &PyNetwork::add_affine)
      .def("add_add", &PyNetwork::add_add)
      .def("add_gather", &PyNetwork::add_gather)
      .def("add_activation", &PyNetwork::add_activation)
      .def("compute", &PyNetwork::compute, py::arg("centre"), py::arg("eps"), py::arg("box_lower"),
           py::arg("box_upper"), py::arg("norm"), py::arg("method"), py::arg("sound"), py::arg("spec"),
           py::arg("rows_form") = 0)
      .def("set_node_map", &PyNetwork::set_node_map)
      .def("tighten", &PyNetwork::tighten, py::arg("centre"), py::arg("eps"), py::arg("box_lower"),
           py::arg("box_upper"), py::arg("norm"), py::arg("sound"), py::arg("node_boxes"), py::arg("splits"),
           py::arg("keep_through"), py::arg("seconds"), py::arg("rows_form") = 0)
      .def("ibp_output_box", &PyNetwork::ibp_output_box, py::arg("box_lower"), py::arg("box_upper"), py::arg("sound"))
      .def_property_readonly("num_layers", &PyNetwork::num_layers);
  m.def("activation_lines", &activation_lines, py::arg("kind"), py::arg("alpha"), py::arg("lower_margin"),
        py::arg("lower"), py::arg("upper"), py::arg("sound"));
}

}  // namespace bounds
}  // namespace certify

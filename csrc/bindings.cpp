// certify._core: the Python face of the C++ core. A list of m.def lines; the kernels
// know nothing of Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <string>

#include "common/cuda_device.h"
#include "common/philox.h"
#include "sampling/noise.h"
#include "sampling/noise_cuda.h"
#include "stats/binomial.h"
#include "stats/normal.h"
#include "stats/radius.h"
#include "stats/sequential.h"

namespace py = pybind11;
using namespace certify;

namespace certify {
namespace bounds {
void bind(py::module_& m);  // csrc/bounds/bindings_bounds.cpp
}  // namespace bounds
}  // namespace certify

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

template <typename T>
void fill_noisy_typed(const py::array& x_any, py::array& out_any, NoiseKind kind, double scale,
                      uint64_t seed, uint32_t input_index, uint32_t stream, uint64_t start) {
  // Checked before the cast: casting a non-contiguous array would silently copy it, and the
  // kernel would fill the copy.
  if (!(out_any.flags() & py::array::c_style) || !out_any.writeable())
    throw std::invalid_argument("fill_noisy: out must be a writable C-contiguous array");
  if (!(x_any.flags() & py::array::c_style)) throw std::invalid_argument("fill_noisy: x must be C-contiguous");
  auto x = x_any.cast<CArray<T>>();
  auto out = out_any.cast<CArray<T>>();
  if (out.ndim() != 2 || out.shape(1) != x.size())
    throw std::invalid_argument("fill_noisy: out must have shape (rows, x.size) = (rows, " +
                                std::to_string(x.size()) + ")");
  const T* xp = x.data();
  T* op = out.mutable_data();
  const int64_t dim = x.size(), rows = out.shape(0);
  py::gil_scoped_release release;
  fill_noisy_cpu<T>(xp, dim, op, rows, kind, static_cast<T>(scale), seed, input_index, stream, start);
}

void fill_noisy(const py::array& x, py::array& out, int kind, double scale, uint64_t seed,
                uint32_t input_index, uint32_t stream, uint64_t start) {
  if (kind < 0 || kind > 2) throw std::invalid_argument("fill_noisy: kind must be 0, 1 or 2");
  if (!x.dtype().is(out.dtype())) throw std::invalid_argument("fill_noisy: x and out must share a dtype");
  // The buffers are written in place: refuse anything that would need a converted copy.
  if (x.dtype().is(py::dtype::of<float>()))
    fill_noisy_typed<float>(x, out, static_cast<NoiseKind>(kind), scale, seed, input_index, stream, start);
  else if (x.dtype().is(py::dtype::of<double>()))
    fill_noisy_typed<double>(x, out, static_cast<NoiseKind>(kind), scale, seed, input_index, stream, start);
  else
    throw py::type_error("fill_noisy: dtype must be float32 or float64");
}

// The CUDA kernel takes raw device pointers (tensor.data_ptr()) and the stream to launch on
// (torch.cuda.current_stream().cuda_stream): the extension stays free of libtorch.
void fill_noisy_device(uintptr_t x, int64_t dim, uintptr_t out, int64_t rows, bool is_double, int kind, double scale,
                       uint64_t seed, uint32_t input_index, uint32_t stream, uint64_t start, uintptr_t cuda_stream) {
  if (kind < 0 || kind > 2) throw std::invalid_argument("fill_noisy_cuda: kind must be 0, 1 or 2");
  if (x == 0 || out == 0) throw std::invalid_argument("fill_noisy_cuda: null device pointer");
  fill_noisy_cuda(reinterpret_cast<const void*>(x), dim, reinterpret_cast<void*>(out), rows, is_double,
                  static_cast<NoiseKind>(kind), scale, seed, input_index, stream, start,
                  reinterpret_cast<void*>(cuda_stream));
}

py::array_t<uint32_t> philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  uint32_t ctr[4] = {c0, c1, c2, c3};
  philox4x32_10(ctr, k0, k1);
  py::array_t<uint32_t> out(4);
  for (int i = 0; i < 4; ++i) out.mutable_at(i) = ctr[i];
  return out;
}

py::tuple smoothing_bounds(int kind, double scale, const CArray<int64_t>& k, int64_t n, double alpha,
                           double tail_mass) {
  if (kind < 0 || kind > 2) throw std::invalid_argument("smoothing_bounds: kind must be 0, 1 or 2");
  if (n < 1) throw std::invalid_argument("smoothing_bounds: n must be at least 1");
  py::array_t<double> p_lower(k.size()), radius(k.size());
  auto kv = k.unchecked();
  auto pv = p_lower.mutable_unchecked<1>();
  auto rv = radius.mutable_unchecked<1>();
  for (py::ssize_t i = 0; i < k.size(); ++i) {
    if (kv.data(0)[i] < 0) throw std::invalid_argument("smoothing_bounds: counts must be >= 0");
    const SmoothingBound b = smoothing_bound(static_cast<NoiseKind>(kind), scale,
                                             static_cast<uint64_t>(kv.data(0)[i]), static_cast<uint64_t>(n), alpha,
                                             tail_mass);
    pv(i) = b.p_lower;
    rv(i) = b.radius;
  }
  return py::make_tuple(p_lower, radius);
}

// One look of budgeted sequential CERTIFY for each input: k (hits) and n (samples so far) are (B,)
// int64, last (B,) bool marks inputs at their final look. Returns (decision, p_lower, radius), (B,)
// each; decision 0 continue, 1 certified, 2 not certified.
py::tuple budget_looks(int kind, double scale, const CArray<int64_t>& k, const CArray<int64_t>& n,
                       const CArray<bool>& last, double alpha_look, double tail_mass, int64_t n_max,
                       double tolerance) {
  if (kind < 0 || kind > 2) throw std::invalid_argument("budget_looks: kind must be 0, 1 or 2");
  if (k.size() != n.size() || k.size() != last.size())
    throw std::invalid_argument("budget_looks: k, n and last must have the same length");
  py::array_t<int32_t> decision(k.size());
  py::array_t<double> p_lower(k.size()), radius(k.size());
  for (py::ssize_t i = 0; i < k.size(); ++i) {
    const int64_t ki = k.data()[i], ni = n.data()[i];
    if (ki < 0 || ni < 1 || n_max < ni) throw std::invalid_argument("budget_looks: need k >= 0 and 1 <= n <= n_max");
    const Look look = budget_look(static_cast<NoiseKind>(kind), scale, ki, ni, static_cast<uint64_t>(n_max),
                                  alpha_look, tail_mass, tolerance, last.data()[i]);
    decision.mutable_data()[i] = static_cast<int32_t>(look.decision);
    p_lower.mutable_data()[i] = look.p_lower;
    radius.mutable_data()[i] = look.radius;
  }
  return py::make_tuple(decision, p_lower, radius);
}

std::vector<uint64_t> to_looks(const CArray<int64_t>& looks) {
  std::vector<uint64_t> out(looks.size());
  for (py::ssize_t i = 0; i < looks.size(); ++i) {
    if (looks.data()[i] < 1) throw std::invalid_argument("looks must be >= 1");
    out[i] = static_cast<uint64_t>(looks.data()[i]);
  }
  return out;
}

TargetTest target_test(int boundary, int kind, double scale, double target, double tail_mass,
                       const CArray<int64_t>& looks, double alpha) {
  if (boundary < 0 || boundary > 1) throw std::invalid_argument("target_test: boundary must be 0 or 1");
  if (kind < 0 || kind > 2) throw std::invalid_argument("target_test: kind must be 0, 1 or 2");
  const std::vector<uint64_t> schedule = to_looks(looks);
  for (size_t j = 1; j < schedule.size(); ++j)
    if (schedule[j] <= schedule[j - 1]) throw std::invalid_argument("target_test: the looks must increase");
  return make_target_test(static_cast<Boundary>(boundary), static_cast<NoiseKind>(kind), scale, target, tail_mass,
                          schedule, alpha);
}

// The test's decisions for k[i] hits at look j[i]: (decision, p_lower, radius), (B,) each.
py::tuple target_decide(const TargetTest& test, const CArray<int64_t>& k, const CArray<int64_t>& j) {
  if (k.size() != j.size()) throw std::invalid_argument("decide: k and j must have the same length");
  py::array_t<int32_t> decision(k.size());
  py::array_t<double> p_lower(k.size()), radius(k.size());
  for (py::ssize_t i = 0; i < k.size(); ++i) {
    if (k.data()[i] < 0 || j.data()[i] < 0) throw std::invalid_argument("decide: k and j must be >= 0");
    const Look look = test.look(static_cast<uint64_t>(k.data()[i]), static_cast<size_t>(j.data()[i]));
    decision.mutable_data()[i] = static_cast<int32_t>(look.decision);
    p_lower.mutable_data()[i] = look.p_lower;
    radius.mutable_data()[i] = look.radius;
  }
  return py::make_tuple(decision, p_lower, radius);
}

py::array_t<int64_t> to_array(const std::vector<uint64_t>& values) {
  py::array_t<int64_t> out(static_cast<py::ssize_t>(values.size()));
  for (size_t i = 0; i < values.size(); ++i) out.mutable_data()[i] = static_cast<int64_t>(values[i]);
  return out;
}

py::array_t<int64_t> looks(uint64_t first, double growth, uint64_t max_samples) {
  return to_array(look_schedule(first, growth, max_samples));
}

double cp_lower(uint64_t k, uint64_t n, double alpha) { return clopper_pearson_lower(k, n, alpha); }
double cp_upper(uint64_t k, uint64_t n, double alpha) { return clopper_pearson_upper(k, n, alpha); }
double beta_cdf(double a, double b, double x) { return beta_tails(a, b, UnitPoint::from_x(x)).lower; }
double beta_sf(double a, double b, double x) { return beta_tails(a, b, UnitPoint::from_x(x)).upper; }

int get_num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1");
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "certify's C++ core (private; use the certify package)";

  m.def("fill_noisy", &fill_noisy, py::arg("x"), py::arg("out"), py::arg("kind"), py::arg("scale"),
        py::arg("seed"), py::arg("input_index"), py::arg("stream"), py::arg("start"),
        "out[i] = x + scale * noise(seed, input_index, stream, start + i); kind 0 Gaussian, 1 Laplace, 2 uniform");
  m.def("fill_noisy_cuda", &fill_noisy_device, py::arg("x_ptr"), py::arg("dim"), py::arg("out_ptr"), py::arg("rows"),
        py::arg("is_double"), py::arg("kind"), py::arg("scale"), py::arg("seed"), py::arg("input_index"),
        py::arg("stream"), py::arg("start"), py::arg("cuda_stream"),
        "fill_noisy on a CUDA device: device pointers, launched on cuda_stream without synchronising");
  m.def("philox4x32_10", &philox, "One Philox4x32-10 block: counter (4 words), key (2 words)");

  m.def("clopper_pearson_lower", py::vectorize(cp_lower), py::arg("k"), py::arg("n"), py::arg("alpha"));
  m.def("clopper_pearson_upper", py::vectorize(cp_upper), py::arg("k"), py::arg("n"), py::arg("alpha"));
  m.def("beta_cdf", py::vectorize(beta_cdf), py::arg("a"), py::arg("b"), py::arg("x"));
  m.def("beta_sf", py::vectorize(beta_sf), py::arg("a"), py::arg("b"), py::arg("x"));
  m.def("binomial_cdf", py::vectorize(binomial_cdf), py::arg("k"), py::arg("n"), py::arg("p"));
  m.def("sign_test_pvalue", py::vectorize(sign_test_pvalue), py::arg("k"), py::arg("n"));
  m.def("normal_upper_quantile", py::vectorize(normal_upper_quantile), py::arg("q"));
  m.def("normal_upper_tail", py::vectorize(normal_upper_tail), py::arg("z"));
  m.def("gaussian_l2_radius", py::vectorize(gaussian_l2_radius), py::arg("sigma"), py::arg("q"));
  m.def("laplace_l1_radius", py::vectorize(laplace_l1_radius), py::arg("scale"), py::arg("q"));
  m.def("uniform_l1_radius", py::vectorize(uniform_l1_radius), py::arg("half_width"), py::arg("q"));
  m.def("look_schedule", &looks, py::arg("first"), py::arg("growth"), py::arg("max_samples"),
        "Sample counts of sequential CERTIFY's looks: first, then x growth (at least +1), ending at max_samples");
  m.def("budget_looks", &budget_looks, py::arg("kind"), py::arg("scale"), py::arg("k"), py::arg("n"),
        py::arg("last"), py::arg("alpha_look"), py::arg("tail_mass"), py::arg("n_max"), py::arg("tolerance"),
        "One look of budgeted sequential CERTIFY per input: (decision 0 continue / 1 certified / 2 not, p_lower, "
        "radius)");
  py::class_<TargetTest>(m, "TargetTest", "Sequential CERTIFY at a target radius: its boundary's critical counts")
      .def_property_readonly("critical", [](const TargetTest& t) { return to_array(t.critical); })
      .def_property_readonly("looks", [](const TargetTest& t) { return to_array(t.looks); })
      .def_readonly("complement", &TargetTest::complement)
      .def("decide", &target_decide, py::arg("k"), py::arg("j"),
           "(decision 0 continue / 1 certified / 2 not certified, p_lower, radius) for k hits at look j");
  m.def("target_test", &target_test, py::arg("boundary"), py::arg("kind"), py::arg("scale"), py::arg("target"),
        py::arg("tail_mass"), py::arg("looks"), py::arg("alpha"),
        "The test at a target radius: boundary 0 Bonferroni (Clopper-Pearson at alpha / K), 1 exact (error spending)");
  m.def("target_complement", [](int kind, double scale, double target) {
          if (kind < 0 || kind > 2) throw std::invalid_argument("kind must be 0, 1 or 2");
          return target_complement(static_cast<NoiseKind>(kind), scale, target); },
        py::arg("kind"), py::arg("scale"), py::arg("target"));
  m.attr("EXACT_MAX_SAMPLES") = kExactMaxSamples;
  m.attr("MAX_LOOKS") = kMaxLooks;
  m.attr("SEQUENTIAL_MAX_SAMPLES") = kSequentialMaxSamples;
  m.def("smoothing_bounds", &smoothing_bounds, py::arg("kind"), py::arg("scale"), py::arg("k"), py::arg("n"),
        py::arg("alpha"), py::arg("tail_mass") = 0.0,
        "(p_lower, radius) per count k of the selected class in n samples, less the sampler's tail mass");

  m.def("get_num_threads", &get_num_threads, "Threads the native CPU kernels use");
  m.def("set_num_threads", &set_num_threads, py::arg("n"), "Sets the threads of the native CPU kernels");
  m.def("built_with_cuda", &built_with_cuda);
  m.def("cuda_device_count", &cuda_device_count);
  m.attr("MAX_SAMPLE_INDEX") = kMaxSampleIndex;
  certify::bounds::bind(m);
  m.attr("MAX_STREAM") = kMaxStream;
}

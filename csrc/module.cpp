// csakd_fast._C: the native passes of the fused CSA, bound without torch's C++ ABI.
//
// Every function takes raw data pointers (Python ints: tensor.data_ptr(), 0 for "absent"), a dtype
// code, the sizes, and — for CUDA — the stream as an int and the device index (the CUDA runtime is
// linked statically: its current device is ours to set, torch's setting does not reach it). The calling Python module
// (csakd_fast/ops/csa/impl_native.py) has checked device, dtype, contiguity and every shape; the
// functions here only dispatch on the dtype and release the GIL while the pass runs.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "csa/csa_cpu.h"
#ifdef CSAKD_WITH_CUDA
#include "../kernels/csa/csa_cuda.h"
#endif

namespace py = pybind11;
using std::uintptr_t;

namespace {

enum DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

bool cpu_has_avx2() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// which build of the CPU passes runs: "avx2" when the CPU has AVX2 and FMA, else "base";
// set_cpu_isa() overrides it (tests run both builds on the same inputs)
std::string& cpu_isa() {
  static std::string isa = cpu_has_avx2() ? "avx2" : "base";
  return isa;
}

template <class T> const T* in(uintptr_t p) { return reinterpret_cast<const T*>(p); }
template <class T> T* out(uintptr_t p) { return reinterpret_cast<T*>(p); }

csakd::cpu::Dims cpu_dims(py::tuple d) {
  if (d.size() != 8) throw std::invalid_argument("dims: expected (B, C, H, W, S, x1_coarse, x3_coarse, threads)");
  return {d[0].cast<int64_t>(), d[1].cast<int64_t>(), d[2].cast<int64_t>(), d[3].cast<int64_t>(),
          d[4].cast<int64_t>(), d[5].cast<bool>(), d[6].cast<bool>(), d[7].cast<int>()};
}

// Runs fn(T(), isa) with isa = std::true_type for the AVX2 build, std::false_type for the baseline.
template <class T, class Fn>
void run_isa(Fn& fn) {
#if defined(__x86_64__)
  if (cpu_isa() == "avx2") return fn(T(), std::true_type());
#endif
  fn(T(), std::false_type());
}

template <class Fn>
void cpu_dispatch(int dtype, Fn fn) {
  if (dtype != kFloat32 && dtype != kFloat64)
    throw std::invalid_argument("dtype: the CPU passes take float32 (0) or float64 (1), got code " +
                                std::to_string(dtype));
  py::gil_scoped_release nogil;
  if (dtype == kFloat32)
    run_isa<float>(fn);
  else
    run_isa<double>(fn);
}

void cpu_pass1(int dtype, uintptr_t x1, uintptr_t x2, uintptr_t m1, uintptr_t m2, uintptr_t G,
               uintptr_t s1, uintptr_t s2, uintptr_t G11, uintptr_t G22, py::tuple dims) {
  const auto d = cpu_dims(dims);
  cpu_dispatch(dtype, [&](auto t, auto avx2) {
    using T = decltype(t);
    const csakd::cpu::Pass1Args<T> a{in<T>(x1), in<T>(x2), in<T>(m1), in<T>(m2), out<T>(G),
                                     out<T>(s1), out<T>(s2), out<T>(G11), out<T>(G22)};
    if constexpr (decltype(avx2)::value) csakd::cpu::avx2::pass1(a, d); else csakd::cpu::base::pass1(a, d);
  });
}

void cpu_forward(int dtype, uintptr_t x1, uintptr_t x2, uintptr_t x3, uintptr_t x4, uintptr_t M,
                 uintptr_t c, uintptr_t wg, uintptr_t bg, uintptr_t o, py::tuple dims) {
  const auto d = cpu_dims(dims);
  cpu_dispatch(dtype, [&](auto t, auto avx2) {
    using T = decltype(t);
    const csakd::cpu::FwdArgs<T> a{in<T>(x1), in<T>(x2), in<T>(x3), in<T>(x4), in<T>(M),
                                   in<T>(c), in<T>(wg), in<T>(bg), out<T>(o)};
    if constexpr (decltype(avx2)::value) csakd::cpu::avx2::forward(a, d); else csakd::cpu::base::forward(a, d);
  });
}

void cpu_backward1(int dtype, bool qk, uintptr_t x1, uintptr_t x2, uintptr_t x3, uintptr_t x4,
                   uintptr_t dout, uintptr_t M, uintptr_t c, uintptr_t wg, uintptr_t bg, uintptr_t dx1,
                   uintptr_t dx2, uintptr_t dx3, uintptr_t dx4, uintptr_t px2, uintptr_t dM,
                   uintptr_t dc, uintptr_t dwg, uintptr_t dbg, py::tuple dims) {
  const auto d = cpu_dims(dims);
  cpu_dispatch(dtype, [&](auto t, auto avx2) {
    using T = decltype(t);
    const csakd::cpu::Bwd1Args<T> a{in<T>(x1), in<T>(x2), in<T>(x3), in<T>(x4), in<T>(dout),
                                    in<T>(M), in<T>(c), in<T>(wg), in<T>(bg), qk,
                                    out<T>(dx1), out<T>(dx2), out<T>(dx3), out<T>(dx4), out<T>(px2),
                                    out<T>(dM), out<T>(dc), out<T>(dwg), out<T>(dbg)};
    if constexpr (decltype(avx2)::value) csakd::cpu::avx2::backward1(a, d); else csakd::cpu::base::backward1(a, d);
  });
}

void cpu_backward2(int dtype, bool accumulate, uintptr_t x1, uintptr_t x2, uintptr_t px2, uintptr_t E12,
                   uintptr_t E11, uintptr_t E22, uintptr_t e1, uintptr_t e2, uintptr_t dx1,
                   uintptr_t dx2, py::tuple dims) {
  const auto d = cpu_dims(dims);
  cpu_dispatch(dtype, [&](auto t, auto avx2) {
    using T = decltype(t);
    const csakd::cpu::Bwd2Args<T> a{in<T>(x1), in<T>(x2), in<T>(px2), in<T>(E12), in<T>(E11),
                                    in<T>(E22), in<T>(e1), in<T>(e2), accumulate, out<T>(dx1), out<T>(dx2)};
    if constexpr (decltype(avx2)::value) csakd::cpu::avx2::backward2(a, d); else csakd::cpu::base::backward2(a, d);
  });
}

#ifdef CSAKD_WITH_CUDA
csakd::cuda::Dims cuda_dims(py::tuple d) {
  if (d.size() != 7) throw std::invalid_argument("dims: expected (B, C, H, W, S, x1_coarse, x3_coarse)");
  return {d[0].cast<int64_t>(), d[1].cast<int64_t>(), d[2].cast<int64_t>(), d[3].cast<int64_t>(),
          d[4].cast<int64_t>(), d[5].cast<bool>(), d[6].cast<bool>()};
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
#endif

// the CPU passes and the choice of their build
void bind_cpu(py::module_& m) {
#if defined(_OPENMP)
  m.attr("OPENMP") = true;  // the CPU passes run on the process's OpenMP pool (csrc/parallel.h)
#else
  m.attr("OPENMP") = false;
#endif
  m.def("cpu_isa", [] { return cpu_isa(); }, "the CPU build in use: 'avx2' or 'base'");
  m.def("cpu_isas", [] {
    py::list l;
    l.append("base");
    if (cpu_has_avx2()) l.append("avx2");
    return l;
  }, "the CPU builds this machine can run");
  m.def("set_cpu_isa", [](const std::string& isa) {
    if (isa != "base" && isa != "avx2") throw std::invalid_argument("isa: expected 'base' or 'avx2', got '" + isa + "'");
    if (isa == "avx2" && !cpu_has_avx2())
      throw std::invalid_argument("isa: this CPU has no AVX2/FMA");
    cpu_isa() = isa;
  });
  m.def("cpu_pass1", &cpu_pass1);
  m.def("cpu_forward", &cpu_forward);
  m.def("cpu_backward1", &cpu_backward1);
  m.def("cpu_backward2", &cpu_backward2);
}

// the CUDA passes (HAS_CUDA false and nothing else when built without them)
void bind_cuda(py::module_& m) {
#ifdef CSAKD_WITH_CUDA
  m.attr("HAS_CUDA") = true;
  m.def("cuda_workspace", [](int kind, py::tuple dims, bool flag) {
    return csakd::cuda::workspace(kind, cuda_dims(dims), flag);
  }, "float32 elements of workspace for pass `kind` (0 pass1, 1 forward, 2 backward1, 3 backward2)");
  m.def("cuda_max_channels", &csakd::cuda::max_channels);
  m.def("cuda_pass1", [](int dtype, uintptr_t x1, uintptr_t x2, uintptr_t m1, uintptr_t m2, uintptr_t G,
                         uintptr_t s1, uintptr_t s2, uintptr_t G11, uintptr_t G22, uintptr_t ws,
                         py::tuple dims, uintptr_t stream, int device) {
    const auto d = cuda_dims(dims);
    const csakd::cuda::Pass1Args a{in<void>(x1), in<void>(x2), in<float>(m1), in<float>(m2), out<float>(G),
                                   out<float>(s1), out<float>(s2), out<float>(G11), out<float>(G22),
                                   out<float>(ws)};
    py::gil_scoped_release nogil;
    check(cudaSetDevice(device), "csakd cudaSetDevice");
    check(csakd::cuda::pass1(dtype, a, d, reinterpret_cast<cudaStream_t>(stream)), "csakd cuda_pass1");
  });
  m.def("cuda_forward", [](int dtype, uintptr_t x1, uintptr_t x2, uintptr_t x3, uintptr_t x4, uintptr_t M,
                           uintptr_t c, uintptr_t wg, uintptr_t bg, uintptr_t o, uintptr_t ws,
                           py::tuple dims, uintptr_t stream, int device) {
    const auto d = cuda_dims(dims);
    const csakd::cuda::FwdArgs a{in<void>(x1), in<void>(x2), in<void>(x3), in<void>(x4), in<float>(M),
                                 in<float>(c), in<float>(wg), in<float>(bg), out<void>(o), out<float>(ws)};
    py::gil_scoped_release nogil;
    check(cudaSetDevice(device), "csakd cudaSetDevice");
    check(csakd::cuda::forward(dtype, a, d, reinterpret_cast<cudaStream_t>(stream)), "csakd cuda_forward");
  });
  m.def("cuda_backward1", [](int dtype, bool qk, uintptr_t x1, uintptr_t x2, uintptr_t x3, uintptr_t x4,
                             uintptr_t dout, uintptr_t M, uintptr_t c, uintptr_t wg, uintptr_t bg,
                             uintptr_t dx1, uintptr_t dx2, uintptr_t dx3, uintptr_t dx4, uintptr_t px2,
                             uintptr_t dM, uintptr_t dc, uintptr_t dwg, uintptr_t dbg, uintptr_t ws,
                             py::tuple dims, uintptr_t stream, int device) {
    const auto d = cuda_dims(dims);
    const csakd::cuda::Bwd1Args a{in<void>(x1), in<void>(x2), in<void>(x3), in<void>(x4), in<void>(dout),
                                  in<float>(M), in<float>(c), in<float>(wg), in<float>(bg), qk,
                                  out<void>(dx1), out<void>(dx2), out<void>(dx3), out<void>(dx4),
                                  out<void>(px2), out<float>(dM), out<float>(dc), out<float>(dwg),
                                  out<float>(dbg), out<float>(ws)};
    py::gil_scoped_release nogil;
    check(cudaSetDevice(device), "csakd cudaSetDevice");
    check(csakd::cuda::backward1(dtype, a, d, reinterpret_cast<cudaStream_t>(stream)), "csakd cuda_backward1");
  });
  m.def("cuda_backward2", [](int dtype, bool accumulate, uintptr_t x1, uintptr_t x2, uintptr_t px2,
                             uintptr_t E12, uintptr_t E11, uintptr_t E22, uintptr_t e1, uintptr_t e2,
                             uintptr_t dx1, uintptr_t dx2, uintptr_t ws, py::tuple dims, uintptr_t stream,
                             int device) {
    const auto d = cuda_dims(dims);
    const csakd::cuda::Bwd2Args a{in<void>(x1), in<void>(x2), in<void>(px2), in<float>(E12), in<float>(E11),
                                  in<float>(E22), in<float>(e1), in<float>(e2), accumulate, out<void>(dx1),
                                  out<void>(dx2), out<float>(ws)};
    py::gil_scoped_release nogil;
    check(cudaSetDevice(device), "csakd cudaSetDevice");
    check(csakd::cuda::backward2(dtype, a, d, reinterpret_cast<cudaStream_t>(stream)), "csakd cuda_backward2");
  });
#else
  m.attr("HAS_CUDA") = false;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "csakd_fast native passes of the fused CSA (CPU C++; CUDA when built with it)";
  m.attr("FLOAT32") = int(kFloat32);
  m.attr("FLOAT64") = int(kFloat64);
  m.attr("FLOAT16") = int(kFloat16);
  m.attr("BFLOAT16") = int(kBFloat16);
  bind_cpu(m);
  bind_cuda(m);
}

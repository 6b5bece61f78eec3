// The CPU passes for AVX2 + FMA, selected at run time (module.cpp) when the CPU has both; on
// other architectures this file compiles to nothing. Every standard header is included before
// the target pragma (see csa_cpu_impl.h).
#if defined(__x86_64__)
#include <stdexcept>
#include <type_traits>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "csa_cpu.h"
#include "../parallel.h"

#pragma GCC target("avx2,fma")
#define CSAKD_ISA avx2
#include "csa_cpu_impl.h"

namespace csakd {
namespace cpu {
CSAKD_CPU_INSTANTIATE(float)
CSAKD_CPU_INSTANTIATE(double)
}  // namespace cpu
}  // namespace csakd
#endif  // __x86_64__

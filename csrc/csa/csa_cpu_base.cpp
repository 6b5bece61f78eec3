// The CPU passes for the x86-64 baseline (SSE2: the 32-byte vectors are split in two).
#include <stdexcept>
#include <type_traits>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "csa_cpu.h"
#include "../parallel.h"

#define CSAKD_ISA base
#include "csa_cpu_impl.h"

namespace csakd {
namespace cpu {
CSAKD_CPU_INSTANTIATE(float)
CSAKD_CPU_INSTANTIATE(double)
}  // namespace cpu
}  // namespace csakd

// The CPU pixel passes of the fused CSA (declared in csa_cpu.h), written once and compiled once per
// instruction set: the including file defines CSAKD_ISA (the namespace) and, for AVX2, sets the
// target before including this file. Every standard header these files need is included by the
// .cpp, csa_cpu.h and parallel.h *before* the target pragma, so no inline standard-library code
// is compiled for AVX2 in one object and the baseline in the other (one definition rule).
//
// Scheme (the same for every pass). The pixels of a sample are cut into tiles: a tile is `n`
// consecutive coarse pixels of one coarse row and the S×S fine pixels under them (S = 1: the image
// is one long row). A tile's maps are copied into small zero-padded panels (R rows of a
// multiple-of-the-vector-width pixels, in L1/L2) and every product runs on panels:
//   - gemm():  Y (R × P) (+)= A (R × K) · X (K × P), a register-blocked 4 × (2 vectors) kernel; the
//     C×C products (M x3, E12ᵀ x1, …) and the Gram matrices (A · Xᵀ, with X transposed) use it.
//   - element-wise sweeps over channels × pixel vectors for the gate.
// Reductions (Grams, dM, dc, dWg, dbg) go to per-item partials — an item is a fixed range of
// tiles of one sample, independent of the thread count — summed in item order at the end: the
// results are bitwise reproducible and do not depend on the number of threads.
//
// Zero padding is what keeps the padded lanes out of every reduction: each reduced product has a
// factor that is zero there (packed inputs, dout, hence dz and d_att).
//
// The files included here (their code in namespace csakd::cpu::CSAKD_ISA, compiled per ISA):
//   csa_cpu_panel.h  the vector type, gemm(), packing, pooling, the element-wise sweeps
//   csa_cpu_tile.h   the tile grid, the items, the scratch arena, the gate's blocks
//   csa_cpu_fwd.h    pass 1 (Grams) and pass 2 (forward apply)
//   csa_cpu_bwd.h    backward passes 1 and 2
#include "csa_cpu_panel.h"
#include "csa_cpu_tile.h"
#include "csa_cpu_fwd.h"
#include "csa_cpu_bwd.h"

#define CSAKD_CPU_INSTANTIATE(T)                                                         \
  template void csakd::cpu::CSAKD_ISA::pass1<T>(const Pass1Args<T>&, const Dims&);       \
  template void csakd::cpu::CSAKD_ISA::forward<T>(const FwdArgs<T>&, const Dims&);       \
  template void csakd::cpu::CSAKD_ISA::backward1<T>(const Bwd1Args<T>&, const Dims&);    \
  template void csakd::cpu::CSAKD_ISA::backward2<T>(const Bwd2Args<T>&, const Dims&);

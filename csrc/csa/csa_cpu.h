// CPU pixel passes of the fused CSA (docs/design.md, "The fused CSA"): the C++ twin of
// csakd_fast/ops/csa/impl_torch.py.
//
// Layout: every map is contiguous (B, C, H, W) ("fine", at the HR size) or (B, C, H/S, W/S)
// ("coarse": read as if nearest-upsampled by S, index p // S). Small matrices are row-major in
// the compute dtype T (float for float inputs, double for double). Python checks every pointer,
// dtype, shape and contiguity before the call (csakd_fast/ops/csa/impl_native.py); nothing here
// validates again.
//
// Each pass is compiled twice (csa_cpu_base.cpp: the x86-64 baseline; csa_cpu_avx2.cpp: AVX2 and
// FMA) and module.cpp picks one at run time with __builtin_cpu_supports.
#pragma once

#include <cstdint>

namespace csakd {
namespace cpu {

struct Dims {
  int64_t B, C, H, W;  // x2, x4 and out are (B, C, H, W)
  int64_t S;           // the factor of the coarse maps (1: every map is fine)
  bool x1_coarse;      // x1 is (B, C, H/S, W/S)
  bool x3_coarse;      // x3 is (B, C, H/S, W/S)
  int threads;         // worker threads (1: the calling thread only)
};

// Pass 1 (x1 coarse at S = up1): with means m1, m2 (B, C) the maps are centred first.
//   G   (B, C, C) = Σ_l x1_l pool(x2)_lᵀ            (pool: S×S sum)
//   s1  (B, C)    = Σ_l x1_l,   s2 (B, C) = Σ_l pool(x2)_l             (nullptr: skipped)
//   G11 (B, C, C) = Σ_l x1_l x1_lᵀ, G22 (B, C, C) = Σ_p x2_p x2_pᵀ     (nullptr: skipped)
template <class T>
struct Pass1Args {
  const T *x1, *x2, *m1, *m2;
  T *G, *s1, *s2, *G11, *G22;
};

// Pass 2: att = M x3 + c + x4 (M (B, C, C), c (B, C)); with the gate (wg (4, 4C), bg (4))
// z = Wg [x1; x2; x3; att] + bg, g = σ(z), out = g0 x1 + g1 x2 + g2 x3 + g3 att; else out = att.
template <class T>
struct FwdArgs {
  const T *x1, *x2, *x3, *x4, *M, *c, *wg, *bg;  // wg == nullptr: no gate
  T* out;
};

// Backward, first pixel pass (att and g recomputed):
//   dz = σ'(z) ⊙ (Σ_c dout ⊙ Y_i), d_att = g3 dout + Wg4ᵀ dz          -> dx4 (B, C, H, W)
//   dx3 = pool(g2 dout) + Wg3ᵀ pool(dz) + Mᵀ pool(d_att)                 (final)
//   dx1 = pool(g0 dout) + Wg1ᵀ pool(dz), dx2 = g1 dout + Wg2ᵀ dz        (gate only; the q/k
//         terms are added by pass 2 when qk)
//   px2 = pool(x2) (coarse, when qk and x1 is coarse: for dx1's E12 term)
//   dM (B, C, C) = Σ_l pool(d_att)_l x3_lᵀ, dc (B, C) = Σ_p d_att_p,
//   dwg (4, 4C) = Σ_b Σ_p dz_p [x1; x2; x3; att]_pᵀ, dbg (4) = Σ dz       (gate only)
template <class T>
struct Bwd1Args {
  const T *x1, *x2, *x3, *x4, *dout, *M, *c, *wg, *bg;
  bool qk;  // attention != legacy
  T *dx1, *dx2, *dx3, *dx4, *px2, *dM, *dc, *dwg, *dbg;
};

// Backward, second pixel pass (attention != legacy), x1 coarse at S (S = 1: fine):
//   dx1 (+)= E12 px2 + S² (E11 x1 + e1),   dx2 (+)= up(E12ᵀ x1 + e2) + E22 x2
// px2 = pool(x2) (= x2 when S = 1); E11, E22 == nullptr: zero (paper mode).
template <class T>
struct Bwd2Args {
  const T *x1, *x2, *px2, *E12, *E11, *E22, *e1, *e2;
  bool accumulate;  // add to dx1, dx2 (pass 1 wrote the gate terms) instead of overwriting
  T *dx1, *dx2;
};

#define CSAKD_CPU_DECLARE(ISA)                                   \
  namespace ISA {                                                \
  template <class T> void pass1(const Pass1Args<T>&, const Dims&); \
  template <class T> void forward(const FwdArgs<T>&, const Dims&); \
  template <class T> void backward1(const Bwd1Args<T>&, const Dims&); \
  template <class T> void backward2(const Bwd2Args<T>&, const Dims&); \
  }

CSAKD_CPU_DECLARE(base)
CSAKD_CPU_DECLARE(avx2)

}  // namespace cpu
}  // namespace csakd

// The forward CPU passes (csa_cpu.h): pass 1 (the Gram matrices and sums of the q/k path) and
// pass 2 (the apply pass: att, the gate, out). Included by csa_cpu_impl.h like csa_cpu_panel.h.
#pragma once
#ifndef CSAKD_ISA
#error "included by csa_cpu_impl.h, inside one ISA's translation unit (csa_cpu_base.cpp, csa_cpu_avx2.cpp)"
#endif

namespace csakd {
namespace cpu {
namespace CSAKD_ISA {

// ------------------------------------------------------------------------------------------------
// pass 1
// ------------------------------------------------------------------------------------------------

// F2 (C × PF) <- the S fine rows of x2 under a tile summed at full width (the row half of pool(x2);
// pool_cols does the columns), centred element-wise by m2 first when asked, as in the torch
// backend. With G22, the tile's part of x2's Gram is added to it on the way.
template <class T>
static void rows_x2(const Grid& g, const T* x2, const T* m2, int64_t C, int64_t Cp, int64_t PF,
                    int64_t cy, int64_t cx, int64_t n, T* G22, T* F2, T* X2R, T* X2RT) {
  if (G22) {  // the Gram of x2 needs every channel of a row at once: row panels
    for (int64_t r = 0; r < g.S; ++r) {
      pack(X2R, PF, x2 + g.fine(cy, r, cx), g.HW, C, n * g.S, m2);
      if (r == 0)
        __builtin_memcpy(F2, X2R, C * PF * sizeof(T));
      else
        acc_rows(F2, X2R, C, PF);
      transpose(X2RT, Cp, X2R, C, PF, PF);
      gemm<T, true>(C, PF, Cp, X2R, PF, X2RT, Cp, G22, Cp);
    }
  } else {  // channel by channel: its S rows are one contiguous run of memory when the
            // tile spans the image width, which the hardware prefetchers follow
    for (int64_t c = 0; c < C; ++c) {
      const T* src = x2 + c * g.HW + g.fine(cy, 0, cx);
      for (int64_t r = 0; r < g.S; ++r)
        if (r == 0)
          pack(F2 + c * PF, PF, src, 0, 1, n * g.S, m2 ? m2 + c : nullptr);
        else
          pack_acc(F2 + c * PF, src + r * g.Wrow, n * g.S, m2 ? m2[c] : T(0));
    }
  }
}

// The fixed-order sums of pass 1's item partials (`items` per sample, `part_size` apart: G, G11,
// G22 (C × Cp) at 0, CC, 2·CC; s1, s2 (C × VL) at 3·CC), per sample.
template <class T>
static void pass1_sums(const Pass1Args<T>& a, const Dims& d, int64_t items, const T* part,
                       int64_t part_size) {
  constexpr int64_t L = vl<T>();
  const int64_t C = d.C, Cp = round_up(C, L), CC = C * Cp;
  const bool sums = a.s1 != nullptr, g11 = a.G11 != nullptr, g22 = a.G22 != nullptr;
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < C; ++j) {
        T sg = 0, s11 = 0, s22 = 0;
        for (int64_t s = 0; s < items; ++s) {
          const T* P = part + (b * items + s) * part_size + i * Cp + j;
          sg += P[0];
          s11 += P[CC];
          s22 += P[2 * CC];
        }
        a.G[(b * C + i) * C + j] = sg;
        if (g11) a.G11[(b * C + i) * C + j] = s11;
        if (g22) a.G22[(b * C + i) * C + j] = s22;
      }
    if (sums)
      for (int64_t i = 0; i < C; ++i) {
        T v1 = 0, v2 = 0;
        for (int64_t s = 0; s < items; ++s) {
          const T* P = part + (b * items + s) * part_size + 3 * CC + i * L;
          v1 += sum_lanes(P);
          v2 += sum_lanes(P + C * L);
        }
        a.s1[b * C + i] = v1;
        a.s2[b * C + i] = v2;
      }
  }
}

template <class T>
void pass1(const Pass1Args<T>& a, const Dims& d) {
  constexpr int64_t L = vl<T>();
  const int64_t C = d.C, Cp = round_up(C, L);
  const Grid g(d, d.S, kPass1Width, L);
  const Split sp(g.ntiles, kReduceItems);
  const bool centre = a.m1 != nullptr, sums = a.s1 != nullptr, g11 = a.G11 != nullptr,
             g22 = a.G22 != nullptr;
  const int64_t CC = C * Cp, PF = g.WP, PC = g.LP;
  // per item: G, G11, G22 (C × Cp), s1, s2 (C × VL)
  const int64_t part_size = 3 * CC + 2 * C * L;
  std::vector<T> part(d.B * sp.n * part_size);
  const int64_t need = arena_size(std::max(C * PC, PC * Cp), 4, sizeof(T)) +
                       arena_size(std::max(C * PF, PF * Cp), 3, sizeof(T));
  parallel_items(
      d.B * sp.n, d.threads, [&] { return Arena<T>(need); },
      [&](Arena<T>& ar, int64_t item) {
        ar.used = 0;
        const int64_t b = item / sp.n, s = item % sp.n;
        T *X1 = ar.take(C * PC), *X1T = ar.take(PC * Cp), *PX2 = ar.take(C * PC),
          *PX2T = ar.take(PC * Cp), *F2 = ar.take(C * PF), *X2R = ar.take(C * PF),
          *X2RT = ar.take(PF * Cp);
        T* P = part.data() + item * part_size;
        T *G = P, *G11 = P + CC, *G22 = P + 2 * CC, *S1 = P + 3 * CC, *S2 = S1 + C * L;
        zero(P, part_size);
        const T* x1 = a.x1 + b * C * g.HWc;
        const T* x2 = a.x2 + b * C * g.HW;
        const T* m1 = centre ? a.m1 + b * C : nullptr;
        const T* m2 = centre ? a.m2 + b * C : nullptr;
        const int64_t t_end = sp.end(s, g.ntiles);
        for (int64_t t = sp.begin(s); t < t_end; ++t) {
          int64_t cy, cx, n;
          g.tile(t, cy, cx, n);
          pack(X1, PC, x1 + g.coarse(cy, cx), g.HWc, C, n, m1);
          // pool(x2): its rows at full width here, then the columns
          rows_x2(g, x2, m2, C, Cp, PF, cy, cx, n, g22 ? G22 : nullptr, F2, X2R, X2RT);
          zero(PX2, C * PC);
          pool_cols(PX2, PC, F2, PF, C, n, g.S);
          transpose(PX2T, Cp, PX2, C, PC, PC);
          gemm<T, true>(C, PC, Cp, X1, PC, PX2T, Cp, G, Cp);
          if (g11) {
            transpose(X1T, Cp, X1, C, PC, PC);
            gemm<T, true>(C, PC, Cp, X1, PC, X1T, Cp, G11, Cp);
          }
          if (sums) {
            rowsum_acc(S1, X1, C, PC);
            rowsum_acc(S2, PX2, C, PC);
          }
        }
        stream_fence();
      });
  pass1_sums(a, d, sp.n, part.data(), part_size);
}

// ------------------------------------------------------------------------------------------------
// pass 2 (forward)
// ------------------------------------------------------------------------------------------------
template <class T>
void forward(const FwdArgs<T>& a, const Dims& d) {
  constexpr int64_t L = vl<T>();
  const int64_t C = d.C;
  const Grid g(d, d.S, kApplyWidth, L);
  const Split sp(g.ntiles, kMapItems);
  const bool gate = a.wg != nullptr, x1c = d.x1_coarse, x3c = d.x3_coarse;
  const Gate<T> gw(a.wg, a.bg, C);
  const int64_t PF = g.WP, PC = g.LP;
  const int64_t need = arena_size(C * PC, 3, sizeof(T)) + arena_size(C * PF, 6, sizeof(T)) +
                       arena_size(4 * std::max(PC, PF), 3, sizeof(T));
  parallel_items(
      d.B * sp.n, d.threads, [&] { return Arena<T>(need); },
      [&](Arena<T>& ar, int64_t item) {
        ar.used = 0;
        const int64_t b = item / sp.n, s = item % sp.n;
        const T* M = a.M + b * C * C;
        const T* cv = a.c + b * C;
        const int64_t cs1 = x1c ? g.HWc : g.HW, cs3 = x3c ? g.HWc : g.HW;
        const T* x1 = a.x1 + b * C * cs1;
        const T* x2 = a.x2 + b * C * g.HW;
        const T* x3 = a.x3 + b * C * cs3;
        const T* x4 = a.x4 + b * C * g.HW;
        T* out = a.out + b * C * g.HW;
        T *X1C = ar.take(C * PC), *X3C = ar.take(C * PC), *MX3C = ar.take(C * PC);
        T *X1 = ar.take(C * PF), *X3 = ar.take(C * PF), *MX3 = ar.take(C * PF);
        T *X2 = ar.take(C * PF), *ATT = ar.take(C * PF), *OUT = ar.take(C * PF);
        T *ZC = ar.take(4 * PC), *Z0 = ar.take(4 * PF), *Z = ar.take(4 * PF);
        const int64_t t_end = sp.end(s, g.ntiles);
        for (int64_t t = sp.begin(s); t < t_end; ++t) {
          int64_t cy, cx, n;
          g.tile(t, cy, cx, n);
          const int64_t nf = n * g.S;
          // coarse terms, once per tile: M x3, the x1/x3 gate logits, the upsampled rows
          if (x3c) {
            pack(X3C, PC, x3 + g.coarse(cy, cx), g.HWc, C, n);
            gemm<T, false>(C, C, PC, M, C, X3C, PC, MX3C, PC);
            expand(MX3, PF, MX3C, PC, C, n, g.S);
            if (gate) expand(X3, PF, X3C, PC, C, n, g.S);
          }
          if (gate) {
            if (x1c) {
              pack(X1C, PC, x1 + g.coarse(cy, cx), g.HWc, C, n);
              expand(X1, PF, X1C, PC, C, n, g.S);
            }
            coarse_logits(gw, x1c ? X1C : nullptr, x3c ? X3C : nullptr, ZC, Z0, g, n);
          }
          for (int64_t r = 0; r < g.S; ++r) {
            const int64_t o = g.fine(cy, r, cx);
            if (!x3c) {
              pack(X3, PF, x3 + o, g.HW, C, nf);
              gemm<T, false>(C, C, PF, M, C, X3, PF, MX3, PF);
            }
            pack_add(ATT, PF, x4 + o, g.HW, C, nf, MX3, cv);  // att = x4 + M x3 + c
            if (!gate) {
              unpack(out + o, g.HW, ATT, PF, C, nf);
              continue;
            }
            if (!x1c) pack(X1, PF, x1 + o, g.HW, C, nf);
            pack(X2, PF, x2 + o, g.HW, C, nf);
            gates(gw, Z0, x1c ? nullptr : X1, X2, x3c ? nullptr : X3, ATT, Z, PF);
            store_gated(out + o, g.HW, nf, Z, X1, X2, X3, ATT, C, PF, OUT);
          }
        }
        stream_fence();
      });
}

}  // namespace CSAKD_ISA
}  // namespace cpu
}  // namespace csakd

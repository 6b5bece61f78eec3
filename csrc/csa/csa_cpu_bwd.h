// The backward CPU passes (csa_cpu.h): backward 1 (the apply pass's gradients and the partials of
// dM, dc, dWg, dbg) and backward 2 (the q/k path's input gradients). Included by csa_cpu_impl.h
// like csa_cpu_panel.h.
#pragma once
#ifndef CSAKD_ISA
#error "included by csa_cpu_impl.h, inside one ISA's translation unit (csa_cpu_base.cpp, csa_cpu_avx2.cpp)"
#endif

namespace csakd {
namespace cpu {
namespace CSAKD_ISA {

// ------------------------------------------------------------------------------------------------
// backward, pass 1
// ------------------------------------------------------------------------------------------------

// What the items of backward 1 share: sizes, the gate, Mᵀ and the per-item partials (per item:
// dM (C × Cp), dc (C × VL), dWg vector partials (4 blocks × 4 × C × VL), dbg (4 × VL)).
template <class T>
struct Bwd1Pass {
  static constexpr int64_t L = vl<T>();
  const Bwd1Args<T>& a;
  const int64_t B, C, Cp, CC;
  const Grid g;
  const Split sp;
  const bool gate, x1c, x3c, want_px2;
  const Gate<T> gw;
  const std::vector<T> MT;
  const int64_t dw_size, part_size, PF, PC;
  std::vector<T> part;
  Bwd1Pass(const Bwd1Args<T>& a_, const Dims& d)
      : a(a_), B(d.B), C(d.C), Cp(round_up(C, L)), CC(C * Cp), g(d, d.S, kApplyWidth, L),
        sp(g.ntiles, kReduceItems), gate(a.wg != nullptr), x1c(d.x1_coarse), x3c(d.x3_coarse),
        want_px2(a.qk && x1c), gw(a.wg, a.bg, C), MT(transposed(a.M, d.B, C)), dw_size(16 * C * L),
        part_size(CC + C * L + dw_size + 4 * L), PF(g.WP), PC(g.LP), part(d.B * sp.n * part_size) {}
  // scratch elements per thread (the panels of Bwd1Item)
  int64_t need() const {
    return arena_size(std::max(C * PC, PC * Cp), 9, sizeof(T)) +
           arena_size(std::max(C * PF, PF * Cp), 13, sizeof(T)) +
           arena_size(4 * std::max(PC, PF), 6, sizeof(T));
  }
};

// One item of backward 1 (a range of tiles of sample b): the sample's maps, the item's partials,
// its scratch panels, and the three steps of a tile.
template <class T>
struct Bwd1Item {
  static constexpr int64_t L = vl<T>();
  const Grid& g;
  const Gate<T>& gw;
  const int64_t C, PF, PC;
  const bool gate, x1c, x3c, want_px2;
  const T *x1, *x2, *x3, *x4, *dout, *M, *Mt, *cv;
  T *dx1, *dx2, *dx3, *dx4, *px2;
  T *DM, *DC, *DW1, *DW2, *DW3, *DW4, *DBG;
  // coarse panels (the P* are pooled sums, finished per tile)
  T *X1C, *X3C, *MX3C, *X3CT, *PG0, *PDA, *PX2, *DXC;
  // fine panels; the F* accumulate their pooled quantity over the S rows of a tile
  T *X1, *X2, *X3, *MX3, *ATT, *DO, *DA, *DX, *X3T, *FG0, *FG2, *FDA, *FX2;
  T *ZC, *PDZ, *Z0, *G, *DZ, *FDZ;

  // P: the item's (zeroed) partials
  Bwd1Item(const Bwd1Pass<T>& p, Arena<T>& ar, int64_t b, T* P)
      : g(p.g), gw(p.gw), C(p.C), PF(p.PF), PC(p.PC), gate(p.gate), x1c(p.x1c), x3c(p.x3c),
        want_px2(p.want_px2) {
    const Bwd1Args<T>& a = p.a;
    DM = P, DC = P + p.CC, DW1 = DC + C * L, DBG = DW1 + p.dw_size;
    DW2 = DW1 + 4 * C * L, DW3 = DW1 + 8 * C * L, DW4 = DW1 + 12 * C * L;
    M = a.M + b * C * C;
    Mt = p.MT.data() + b * C * C;
    cv = a.c + b * C;
    const int64_t cs1 = x1c ? g.HWc : g.HW, cs3 = x3c ? g.HWc : g.HW;
    x1 = a.x1 + b * C * cs1;
    x2 = a.x2 + b * C * g.HW;
    x3 = a.x3 + b * C * cs3;
    x4 = a.x4 + b * C * g.HW;
    dout = a.dout + b * C * g.HW;
    dx1 = a.dx1 ? a.dx1 + b * C * cs1 : nullptr;
    dx2 = a.dx2 ? a.dx2 + b * C * g.HW : nullptr;
    dx3 = a.dx3 + b * C * cs3;
    dx4 = a.dx4 + b * C * g.HW;
    px2 = want_px2 ? a.px2 + b * C * g.HWc : nullptr;
    const int64_t Cp = p.Cp;
    X1C = ar.take(C * PC), X3C = ar.take(C * PC), MX3C = ar.take(C * PC), X3CT = ar.take(PC * Cp),
    PG0 = ar.take(C * PC), PDA = ar.take(C * PC), PX2 = ar.take(C * PC), DXC = ar.take(C * PC);
    X1 = ar.take(C * PF), X2 = ar.take(C * PF), X3 = ar.take(C * PF), MX3 = ar.take(C * PF),
    ATT = ar.take(C * PF), DO = ar.take(C * PF), DA = ar.take(C * PF), DX = ar.take(C * PF),
    X3T = ar.take(PF * Cp), FG0 = ar.take(C * PF), FG2 = ar.take(C * PF), FDA = ar.take(C * PF),
    FX2 = ar.take(C * PF);
    ZC = ar.take(4 * PC), PDZ = ar.take(4 * PC), Z0 = ar.take(4 * PF), G = ar.take(4 * PF),
    DZ = ar.take(4 * PF), FDZ = ar.take(4 * PF);
  }

  // A tile's coarse inputs (x3, M x3, x1 when coarse, the coarse gate logits, expanded to the fine
  // panels); its pooled sums zeroed.
  void tile_in(int64_t oc, int64_t n) {
    if (x3c) {
      pack(X3C, PC, x3 + oc, g.HWc, C, n);
      if (gate) {
        gemm<T, false>(C, C, PC, M, C, X3C, PC, MX3C, PC);
        expand(MX3, PF, MX3C, PC, C, n, g.S);
        expand(X3, PF, X3C, PC, C, n, g.S);
        zero(FG2, C * PF);
      }
      zero(FDA, C * PF);
    }
    if (x1c && gate) {
      pack(X1C, PC, x1 + oc, g.HWc, C, n);
      expand(X1, PF, X1C, PC, C, n, g.S);
      zero(FG0, C * PF);
    }
    if (gate) {
      coarse_logits(gw, x1c ? X1C : nullptr, x3c ? X3C : nullptr, ZC, Z0, g, n);
      zero(FDZ, 4 * PF);
    }
    if (want_px2) zero(FX2, C * PF);
  }

  // One fine row of a tile (at offset o, nf pixels): its fine outputs, the partials, the pooled sums.
  void row(int64_t o, int64_t nf) {
    pack(DO, PF, dout + o, g.HW, C, nf);
    if (!x3c) pack(X3, PF, x3 + o, g.HW, C, nf);
    if (gate || want_px2) pack(X2, PF, x2 + o, g.HW, C, nf);
    if (want_px2) acc_rows(FX2, X2, C, PF);
    const T* datt = DO;  // ungated: d_att = dout
    if (gate) {
      if (!x1c) pack(X1, PF, x1 + o, g.HW, C, nf);
      if (!x3c) gemm<T, false>(C, C, PF, M, C, X3, PF, MX3, PF);
      pack_add(ATT, PF, x4 + o, g.HW, C, nf, MX3, cv);  // att = x4 + M x3 + c
      gates(gw, Z0, x1c ? nullptr : X1, X2, x3c ? nullptr : X3, ATT, G, PF);
      // dz = g (1 − g) Σ_c dout ⊙ Y
      chan_dot4(DZ, DO, X1, X2, X3, ATT, C, PF);
      for (int64_t i = 0; i < 4 * PF; ++i) DZ[i] *= G[i] * (T(1) - G[i]);
      // d_att = g3 dout + Wg4ᵀ dz
      scale_rows(DA, G + 3 * PF, DO, C, PF);
      gate_mm_t(gw, 3, DZ, DA, PF);
      datt = DA;
      // dx2 = g1 dout + Wg2ᵀ dz
      scale_rows(DX, G + PF, DO, C, PF);
      gate_mm_t(gw, 1, DZ, DX, PF);
      unpack(dx2 + o, g.HW, DX, PF, C, nf);
      if (x1c) {
        acc_rows(FG0, DO, C, PF, G);
      } else {  // dx1 = g0 dout + Wg1ᵀ dz
        scale_rows(DX, G, DO, C, PF);
        gate_mm_t(gw, 0, DZ, DX, PF);
        unpack(dx1 + o, g.HW, DX, PF, C, nf);
        outer4_acc(DW1, DZ, X1, C, PF);
      }
      outer4_acc(DW2, DZ, X2, C, PF);
      outer4_acc(DW4, DZ, ATT, C, PF);
      rowsum_acc(DBG, DZ, 4, PF);
      if (x1c || x3c) acc_rows(FDZ, DZ, 4, PF);
    }
    unpack(dx4 + o, g.HW, datt, PF, C, nf);
    rowsum_acc(DC, datt, C, PF);
    if (x3c) {
      acc_rows(FDA, datt, C, PF);
      if (gate) acc_rows(FG2, DO, C, PF, G + 2 * PF);
    } else {
      if (gate) scale_rows(DX, G + 2 * PF, DO, C, PF);
      x3_grads(gate ? &gw : nullptr, DZ, Mt, datt, X3, DX, X3T, DM, DW3, C, PF, dx3 + o, g.HW, nf);
    }
  }

  // The tile's coarse outputs (dx3, dx1 and px2 where coarse), from the pooled sums.
  void tile_out(int64_t oc, int64_t n) {
    if (gate && (x1c || x3c)) {
      zero(PDZ, 4 * PC);
      pool_cols(PDZ, PC, FDZ, PF, 4, n, g.S);
    }
    if (x3c) {
      zero(PDA, C * PC);
      pool_cols(PDA, PC, FDA, PF, C, n, g.S);
      if (gate) {
        zero(DXC, C * PC);
        pool_cols(DXC, PC, FG2, PF, C, n, g.S);
      }
      x3_grads(gate ? &gw : nullptr, PDZ, Mt, PDA, X3C, DXC, X3CT, DM, DW3, C, PC, dx3 + oc, g.HWc, n);
    }
    if (x1c && gate) {  // dx1 = pool(g0 dout) + Wg1ᵀ pool(dz)
      zero(PG0, C * PC);
      pool_cols(PG0, PC, FG0, PF, C, n, g.S);
      gate_mm_t(gw, 0, PDZ, PG0, PC);
      unpack(dx1 + oc, g.HWc, PG0, PC, C, n);
      outer4_acc(DW1, PDZ, X1C, C, PC);
    }
    if (want_px2) {
      zero(PX2, C * PC);
      pool_cols(PX2, PC, FX2, PF, C, n, g.S);
      unpack(px2 + oc, g.HWc, PX2, PC, C, n);
    }
  }
};

// The fixed-order sums of backward 1's item partials: dM, dc per sample; dWg, dbg over samples and
// items.
template <class T>
static void bwd1_sums(const Bwd1Pass<T>& p) {
  constexpr int64_t L = vl<T>();
  const Bwd1Args<T>& a = p.a;
  const int64_t C = p.C, Cp = p.Cp, CC = p.CC, part_size = p.part_size, dw_size = p.dw_size;
  const Split& sp = p.sp;
  const std::vector<T>& part = p.part;
  const int64_t items = p.B * sp.n;
  for (int64_t b = 0; b < p.B; ++b) {
    for (int64_t i = 0; i < C; ++i) {
      for (int64_t j = 0; j < C; ++j) {
        T v = 0;
        for (int64_t s = 0; s < sp.n; ++s) v += part[(b * sp.n + s) * part_size + i * Cp + j];
        a.dM[(b * C + i) * C + j] = v;
      }
      T v = 0;
      for (int64_t s = 0; s < sp.n; ++s) v += sum_lanes(part.data() + (b * sp.n + s) * part_size + CC + i * L);
      a.dc[b * C + i] = v;
    }
  }
  if (p.gate) {
    for (int64_t k = 0; k < 4; ++k)
      for (int64_t j = 0; j < 4; ++j)
        for (int64_t c = 0; c < C; ++c) {
          T v = 0;
          for (int64_t it = 0; it < items; ++it)
            v += sum_lanes(part.data() + it * part_size + CC + C * L + ((k * 4 + j) * C + c) * L);
          a.dwg[j * 4 * C + k * C + c] = v;
        }
    for (int64_t j = 0; j < 4; ++j) {
      T v = 0;
      for (int64_t it = 0; it < items; ++it) v += sum_lanes(part.data() + it * part_size + CC + C * L + dw_size + j * L);
      a.dbg[j] = v;
    }
  }
}

template <class T>
void backward1(const Bwd1Args<T>& a, const Dims& d) {
  Bwd1Pass<T> p(a, d);
  const Grid& g = p.g;
  const Split& sp = p.sp;
  const int64_t need = p.need();
  parallel_items(
      d.B * sp.n, d.threads, [&] { return Arena<T>(need); },
      [&](Arena<T>& ar, int64_t item) {
        ar.used = 0;
        const int64_t b = item / sp.n, s = item % sp.n;
        T* P = p.part.data() + item * p.part_size;
        zero(P, p.part_size);
        Bwd1Item<T> it(p, ar, b, P);
        const int64_t t_end = sp.end(s, g.ntiles);
        for (int64_t t = sp.begin(s); t < t_end; ++t) {
          int64_t cy, cx, n;
          g.tile(t, cy, cx, n);
          const int64_t oc = g.coarse(cy, cx);
          it.tile_in(oc, n);
          for (int64_t r = 0; r < g.S; ++r) it.row(g.fine(cy, r, cx), n * g.S);
          it.tile_out(oc, n);
        }
        stream_fence();
      });
  bwd1_sums(p);
}

// ------------------------------------------------------------------------------------------------
// backward, pass 2 (the q/k-path input gradients)
// ------------------------------------------------------------------------------------------------
template <class T>
void backward2(const Bwd2Args<T>& a, const Dims& d) {
  constexpr int64_t L = vl<T>();
  const int64_t C = d.C;
  const Grid g(d, d.S, kApplyWidth, L);
  const Split sp(g.ntiles, kMapItems);
  const std::vector<T> E12T = transposed(a.E12, d.B, C);
  const T S2 = T(g.S * g.S);
  const int64_t PF = g.WP, PC = g.LP;
  const int64_t need = arena_size(C * PC, 5, sizeof(T)) + arena_size(C * PF, 3, sizeof(T));
  parallel_items(
      d.B * sp.n, d.threads, [&] { return Arena<T>(need); },
      [&](Arena<T>& ar, int64_t item) {
        ar.used = 0;
        const int64_t b = item / sp.n, s = item % sp.n;
        const int64_t CCb = b * C * C;
        T *X1C = ar.take(C * PC), *PX = ar.take(C * PC), *DX1 = ar.take(C * PC),
          *TC = ar.take(C * PC), *TMP = ar.take(C * PC);
        T *TE = ar.take(C * PF), *X2 = ar.take(C * PF), *DX2 = ar.take(C * PF);
        const T* x1 = a.x1 + b * C * g.HWc;
        const T* x2 = a.x2 + b * C * g.HW;
        T* dx1 = a.dx1 + b * C * g.HWc;
        T* dx2 = a.dx2 + b * C * g.HW;
        const int64_t t_end = sp.end(s, g.ntiles);
        for (int64_t t = sp.begin(s); t < t_end; ++t) {
          int64_t cy, cx, n;
          g.tile(t, cy, cx, n);
          const int64_t nf = n * g.S, oc = g.coarse(cy, cx);
          pack(X1C, PC, x1 + oc, g.HWc, C, n);
          pack(PX, PC, a.px2 + b * C * g.HWc + oc, g.HWc, C, n);
          // t = E12ᵀ x1 + e2 at the coarse pixel, added to its S×S fine pixels
          gemm<T, false>(C, C, PC, E12T.data() + CCb, C, X1C, PC, TC, PC);
          add_bias(TC, C, PC, a.e2 + b * C);
          const T* te = TC;
          if (g.S > 1) {
            expand(TE, PF, TC, PC, C, n, g.S);
            te = TE;
          }
          // dx1 (+)= E12 px2 + S² (E11 x1 + e1)
          if (a.accumulate)
            pack(DX1, PC, dx1 + oc, g.HWc, C, n);
          else
            zero(DX1, C * PC);
          gemm<T, true>(C, C, PC, a.E12 + CCb, C, PX, PC, DX1, PC);
          if (a.E11)
            gemm<T, false>(C, C, PC, a.E11 + CCb, C, X1C, PC, TMP, PC);
          else
            zero(TMP, C * PC);
          add_bias(TMP, C, PC, a.e1 + b * C);
          const V<T> s2 = splat(S2);
          for (int64_t i = 0; i < C * PC; i += L) st(DX1 + i, ld(DX1 + i) + s2 * ld(TMP + i));
          unpack(dx1 + oc, g.HWc, DX1, PC, C, n);
          for (int64_t r = 0; r < g.S; ++r) {
            const int64_t o = g.fine(cy, r, cx);
            if (a.accumulate)
              pack(DX2, PF, dx2 + o, g.HW, C, nf);
            else
              zero(DX2, C * PF);
            add_rows(DX2, DX2, te, C, PF);
            if (a.E22) {
              pack(X2, PF, x2 + o, g.HW, C, nf);
              gemm<T, true>(C, C, PF, a.E22 + CCb, C, X2, PF, DX2, PF);
            }
            unpack(dx2 + o, g.HW, DX2, PF, C, nf);
          }
        }
        stream_fence();
      });
}

}  // namespace CSAKD_ISA
}  // namespace cpu
}  // namespace csakd

// What the CPU passes (csa_cpu_impl.h) share above the panel kernels: the tile grid, the split of a
// sample's tiles into items, the per-thread scratch arena, and the gate blocks and products of the
// apply passes (forward, backward 1). Included by csa_cpu_impl.h like csa_cpu_panel.h.
#pragma once
#ifndef CSAKD_ISA
#error "included by csa_cpu_impl.h, inside one ISA's translation unit (csa_cpu_base.cpp, csa_cpu_avx2.cpp)"
#endif

namespace csakd {
namespace cpu {
namespace CSAKD_ISA {

// The tile grid of one pass: coarse pixels (Hc × Wc) at factor S, `TW` of them per tile.
struct Grid {
  int64_t S, Hc, Wc, Wrow, HW, HWc;  // Wrow: fine row length in offsets; HW, HWc: channel strides
  int64_t TW, per_row, ntiles;
  int64_t WP, LP;                    // padded fine and coarse tile widths
  Grid(const Dims& d, int64_t S_, int64_t fine_width, int64_t L) : S(S_) {
    HW = d.H * d.W;
    if (S == 1) {  // no 2-D structure needed: one long row
      Hc = 1, Wc = HW, Wrow = HW;
    } else {
      Hc = d.H / S, Wc = d.W / S, Wrow = d.W;
    }
    HWc = Hc * Wc;
    TW = std::max<int64_t>(1, std::min<int64_t>(Wc, fine_width / S));
    per_row = ceil_div(Wc, TW);
    ntiles = Hc * per_row;
    WP = round_up(TW * S, L);
    LP = round_up(TW, L);
  }
  // tile t -> coarse row cy, first coarse column cx, width n
  void tile(int64_t t, int64_t& cy, int64_t& cx, int64_t& n) const {
    cy = t / per_row;
    cx = (t % per_row) * TW;
    n = std::min(TW, Wc - cx);
  }
  int64_t fine(int64_t cy, int64_t r, int64_t cx) const { return (cy * S + r) * Wrow + cx * S; }
  int64_t coarse(int64_t cy, int64_t cx) const { return cy * Wc + cx; }
};

// Items: a sample's tiles cut into at most `max_items` contiguous ranges, fixed by the shape alone,
// so that the per-item partial sums (and their fixed-order total) do not depend on the threads.
struct Split {
  int64_t per, n;
  Split(int64_t ntiles, int64_t max_items) {
    const int64_t want = std::max<int64_t>(1, std::min(ntiles, max_items));
    per = ceil_div(ntiles, want);
    n = ceil_div(ntiles, per);
  }
  int64_t begin(int64_t s) const { return s * per; }
  int64_t end(int64_t s, int64_t ntiles) const { return std::min(ntiles, (s + 1) * per); }
};
// reductions: few partials to sum; element-wise passes: finer items balance the threads better
constexpr int64_t kReduceItems = 16;
constexpr int64_t kMapItems = 64;

// Widths of the fine panels (pixels): big enough to amortise the per-tile overhead, small enough
// that a pass's panels stay in L2 (pass 1 keeps fewer panels per tile than the apply passes).
constexpr int64_t kPass1Width = 256;
constexpr int64_t kApplyWidth = 256;

// Bump allocator over one buffer per worker thread; blocks start on 64-byte boundaries.
template <class T>
struct Arena {
  std::vector<T> mem;
  int64_t used = 0;
  explicit Arena(int64_t elems) : mem(elems) {}
  T* take(int64_t n) {
    const uintptr_t at = reinterpret_cast<uintptr_t>(mem.data() + used);
    T* p = reinterpret_cast<T*>((at + 63) & ~uintptr_t(63));
    used = (p - mem.data()) + n;
    if (used > static_cast<int64_t>(mem.size())) throw std::length_error("csakd: scratch arena too small");
    return p;
  }
};
// elements an Arena needs for `count` blocks of n (with the alignment slack)
static inline int64_t arena_size(int64_t n, int64_t count, int64_t elem) {
  return count * (n + 64 / elem);
}

// ------------------------------------------------------------------------------------------------
// shared by the apply passes
// ------------------------------------------------------------------------------------------------

// Per call: the gate blocks Wg_k (4 × C, rows 4C apart in wg) and their transposes (C × 4).
template <class T>
struct Gate {
  std::vector<T> wgt;  // (4, C, 4): wgt[k][c][j] = wg[j][k·C + c]
  const T* wg;
  const T* bg;
  int64_t C;
  Gate(const T* wg_, const T* bg_, int64_t C_) : wg(wg_), bg(bg_), C(C_) {
    if (!wg) return;
    wgt.resize(16 * C);
    for (int64_t k = 0; k < 4; ++k)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t j = 0; j < 4; ++j) wgt[(k * C + c) * 4 + j] = wg[j * 4 * C + k * C + c];
  }
  const T* block(int k) const { return wg + k * C; }               // lda = 4C
  const T* blockT(int k) const { return wgt.data() + k * C * 4; }  // lda = 4
};

// z (4 × P) (+)= Wg_k · Y (C × P)
template <class T, bool ACC>
static inline void gate_mm(const Gate<T>& gw, int k, const T* Y, T* z, int64_t P) {
  gemm<T, ACC>(4, gw.C, P, gw.block(k), 4 * gw.C, Y, P, z, P);
}
// Y (C × P) += Wg_kᵀ · dz (4 × P)
template <class T>
static inline void gate_mm_t(const Gate<T>& gw, int k, const T* dz, T* Y, int64_t P) {
  gemm<T, true>(gw.C, 4, P, gw.blockT(k), 4, dz, P, Y, P);
}

// z (4 × PF) <- bg + (coarse terms of x1 and x3, expanded); x1c, x3c: coarse panels or nullptr.
template <class T>
static void coarse_logits(const Gate<T>& gw, const T* x1c, const T* x3c, T* zc, T* z, const Grid& g,
                          int64_t n) {
  for (int j = 0; j < 4; ++j)
    for (int64_t p = 0; p < g.LP; ++p) zc[j * g.LP + p] = gw.bg[j];
  if (x1c) gate_mm<T, true>(gw, 0, x1c, zc, g.LP);
  if (x3c) gate_mm<T, true>(gw, 2, x3c, zc, g.LP);
  expand(z, g.WP, zc, g.LP, 4, n, g.S);
}

// g (4 × P) = σ(z0 + Σ_k Wg_k Y_k) for the fine inputs Y_k (nullptr: a coarse input, already in z0)
template <class T>
static void gates(const Gate<T>& gw, const T* z0, const T* Y0, const T* Y1, const T* Y2, const T* Y3,
                  T* g, int64_t P) {
  __builtin_memcpy(g, z0, 4 * P * sizeof(T));
  const T* ys[4] = {Y0, Y1, Y2, Y3};
  for (int k = 0; k < 4; ++k)
    if (ys[k]) gate_mm<T, true>(gw, k, ys[k], g, P);
  for (int64_t i = 0; i < 4 * P; ++i) g[i] = sigmoid(g[i]);
}

// The x3 terms of backward (at x3's resolution; P-wide panels): dx3 = [g2 dout] + Wg3ᵀ dz + Mᵀ d_att
// stored to `dst`, dM (C × Cp) += d_att x3ᵀ and, with the gate, dWg3 += dz x3ᵀ. With the gate DX
// holds g2 dout (or its pool) on entry; gw == nullptr: no gate, dx3 = Mᵀ d_att.
template <class T>
static void x3_grads(const Gate<T>* gw, const T* dz, const T* Mt, const T* datt, const T* x3, T* DX,
                     T* x3t, T* DM, T* DW3, int64_t C, int64_t P, T* dst, int64_t cs, int64_t count) {
  const int64_t Cp = round_up(C, vl<T>());
  if (gw) {
    gate_mm_t(*gw, 2, dz, DX, P);
    gemm<T, true>(C, C, P, Mt, C, datt, P, DX, P);
    outer4_acc(DW3, dz, x3, C, P);
  } else {
    gemm<T, false>(C, C, P, Mt, C, datt, P, DX, P);
  }
  unpack(dst, cs, DX, P, C, count);
  transpose(x3t, Cp, x3, C, P, P);
  gemm<T, true>(C, P, Cp, datt, P, x3t, Cp, DM, Cp);
}

// The transposes Mᵀ of the per-sample matrices (B, C, C).
template <class T>
static std::vector<T> transposed(const T* M, int64_t B, int64_t C) {
  std::vector<T> t(B * C * C);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < C; ++j) t[(b * C + j) * C + i] = M[(b * C + i) * C + j];
  return t;
}

}  // namespace CSAKD_ISA
}  // namespace cpu
}  // namespace csakd

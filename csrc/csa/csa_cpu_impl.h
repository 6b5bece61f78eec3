// The CPU pixel passes of the fused CSA (declared in csa_cpu.h), written once and compiled once per
// instruction set: the including file defines CSAKD_ISA (the namespace) and, for AVX2, sets the
// target before including this file. Every standard header this file needs is included by
// csa_cpu.h / parallel.h *before* the target pragma, so no inline standard-library code is
// compiled for AVX2 in one object and the baseline in the other (one definition rule).
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

namespace csakd {
namespace cpu {
namespace CSAKD_ISA {

template <class T> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(32))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(32))); };
template <class T> using V = typename VecOf<T>::type;
template <class T> constexpr int64_t vl() { return 32 / sizeof(T); }

#define CSAKD_INLINE inline __attribute__((always_inline))
template <class T> static CSAKD_INLINE V<T> ld(const T* p) { V<T> v; __builtin_memcpy(&v, p, sizeof v); return v; }
template <class T> static CSAKD_INLINE void st(T* p, V<T> v) { __builtin_memcpy(p, &v, sizeof v); }
template <class T> static CSAKD_INLINE V<T> splat(T s) { return V<T>{} + s; }
// the sum of the VL lanes stored at p, in lane order
template <class T> static inline T sum_lanes(const T* p) {
  T s = 0;
  for (int i = 0; i < vl<T>(); ++i) s += p[i];
  return s;
}
static inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
template <class T> static inline T sigmoid(T z) { return T(1) / (T(1) + __builtin_exp(-double(z))); }
template <> inline float sigmoid<float>(float z) { return 1.0f / (1.0f + __builtin_expf(-z)); }

// ------------------------------------------------------------------------------------------------
// panel kernels (P, the panel width, is a multiple of the vector width; rows are `ld` apart)
// ------------------------------------------------------------------------------------------------

// MR rows × NR vectors of Y, K-loop in registers.
template <class T, int MR, int NR, bool ACC>
static inline void gemm_block(const T* A, int64_t lda, const T* X, int64_t ldx, T* Y, int64_t ldy,
                              int64_t K) {
  constexpr int64_t L = vl<T>();
  V<T> acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < NR; ++j) acc[m][j] = ACC ? ld(Y + m * ldy + j * L) : V<T>{};
  for (int64_t k = 0; k < K; ++k) {
    V<T> x[NR];
    for (int j = 0; j < NR; ++j) x[j] = ld(X + k * ldx + j * L);
    for (int m = 0; m < MR; ++m) {
      const V<T> a = splat(A[m * lda + k]);
      for (int j = 0; j < NR; ++j) acc[m][j] += a * x[j];
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < NR; ++j) st(Y + m * ldy + j * L, acc[m][j]);
}

template <class T, int MR, bool ACC>
static inline void gemm_rows(const T* A, int64_t lda, const T* X, int64_t ldx, T* Y, int64_t ldy,
                             int64_t K, int64_t P) {
  constexpr int64_t L = vl<T>();
  int64_t p = 0;
  for (; p + 2 * L <= P; p += 2 * L) gemm_block<T, MR, 2, ACC>(A, lda, X + p, ldx, Y + p, ldy, K);
  for (; p < P; p += L) gemm_block<T, MR, 1, ACC>(A, lda, X + p, ldx, Y + p, ldy, K);
}

// Y (R × P) = A (R × K) · X (K × P), or += with ACC. Summation order over k is fixed.
template <class T, bool ACC>
static void gemm(int64_t R, int64_t K, int64_t P, const T* A, int64_t lda, const T* X, int64_t ldx,
                 T* Y, int64_t ldy) {
  int64_t i = 0;
  for (; i + 4 <= R; i += 4) gemm_rows<T, 4, ACC>(A + i * lda, lda, X, ldx, Y + i * ldy, ldy, K, P);
  const T* a = A + i * lda;
  T* y = Y + i * ldy;
  switch (R - i) {
    case 3: gemm_rows<T, 3, ACC>(a, lda, X, ldx, y, ldy, K, P); break;
    case 2: gemm_rows<T, 2, ACC>(a, lda, X, ldx, y, ldy, K, P); break;
    case 1: gemm_rows<T, 1, ACC>(a, lda, X, ldx, y, ldy, K, P); break;
    default: break;
  }
}

// dst (cols × ld_dst) = srcᵀ for src (rows × P): dst[j][i] = src[i][j], j < cols; columns of dst
// beyond `rows` up to ld_dst are zeroed (they pad the Gram's column count to whole vectors).
template <class T>
static void transpose(T* dst, int64_t ld_dst, const T* src, int64_t rows, int64_t cols, int64_t ld_src) {
  for (int64_t j = 0; j < cols; ++j) {
    T* d = dst + j * ld_dst;
    for (int64_t i = 0; i < rows; ++i) d[i] = src[i * ld_src + j];
    for (int64_t i = rows; i < ld_dst; ++i) d[i] = T(0);
  }
}

// Rows `ahead` channels further are requested while a channel is copied: the C rows of a tile
// are short runs one image plane apart, and planes whose size is a power of two map the same
// column of every channel to the same cache sets, so a whole next row fetched ahead would evict
// itself; a few channels ahead keep enough lines in flight and stay resident until used.
constexpr int64_t kAhead = 2;
template <class T>
static inline void prefetch_row(const T* src, int64_t count) {
  for (int64_t j = 0; j < count; j += 64 / sizeof(T)) __builtin_prefetch(src + j, 0, 3);
}

// panel (R × P) <- R rows of `count` elements, `cs` apart in src (minus mean[i]); zero padding.
template <class T>
static void pack(T* panel, int64_t P, const T* src, int64_t cs, int64_t R, int64_t count,
                 const T* mean = nullptr) {
  for (int64_t i = 0; i < R; ++i) {
    T* d = panel + i * P;
    const T* s = src + i * cs;
    if (i + kAhead < R) prefetch_row(s + kAhead * cs, count);
    if (mean) {
      const T m = mean[i];
      for (int64_t j = 0; j < count; ++j) d[j] = s[j] - m;
    } else {
      __builtin_memcpy(d, s, count * sizeof(T));
    }
    for (int64_t j = count; j < P; ++j) d[j] = T(0);
  }
}

// dst[0..n) <- src[0..n) with non-temporal stores where the target is 16-byte aligned: every
// output is written once and read by a later pass or op, so caching it (and first reading the
// line, as a normal store does) would only evict inputs.
template <class T>
static inline void stream_row(T* dst, const T* src, int64_t n) {
#if defined(__SSE2__)
  int64_t j = 0;
  for (; j < n && (reinterpret_cast<uintptr_t>(dst + j) & 15); ++j) dst[j] = src[j];
  constexpr int64_t k = 16 / sizeof(T);
  for (; j + k <= n; j += k) {
    if constexpr (sizeof(T) == 4)
      _mm_stream_ps(reinterpret_cast<float*>(dst + j), _mm_loadu_ps(reinterpret_cast<const float*>(src + j)));
    else
      _mm_stream_pd(reinterpret_cast<double*>(dst + j), _mm_loadu_pd(reinterpret_cast<const double*>(src + j)));
  }
  for (; j < n; ++j) dst[j] = src[j];
#else
  __builtin_memcpy(dst, src, n * sizeof(T));
#endif
}

// Makes the non-temporal stores of this thread visible before it reports its items done.
static inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// row[j] += src[j] − mean for j < count
template <class T>
static void pack_acc(T* row, const T* src, int64_t count, T mean) {
  for (int64_t j = 0; j < count; ++j) row[j] += src[j] - mean;
}

template <class T>
static void unpack(T* dst, int64_t cs, const T* panel, int64_t P, int64_t R, int64_t count) {
  for (int64_t i = 0; i < R; ++i) stream_row(dst + i * cs, panel + i * P, count);
}

// panel (R × P) <- R source rows of `count` elements + add (R × P) + bias[i]; zero padding.
template <class T>
static void pack_add(T* panel, int64_t P, const T* src, int64_t cs, int64_t R, int64_t count,
                     const T* add, const T* bias) {
  for (int64_t i = 0; i < R; ++i) {
    T* d = panel + i * P;
    const T* s = src + i * cs;
    const T* a = add + i * P;
    const T b = bias[i];
    if (i + kAhead < R) prefetch_row(s + kAhead * cs, count);
    for (int64_t j = 0; j < count; ++j) d[j] = s[j] + a[j] + b;
    for (int64_t j = count; j < P; ++j) d[j] = T(0);
  }
}

template <class T>
static void zero(T* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = T(0);
}

// Calls f(factor) with the factor S as a compile-time constant for the common 2 and 4 (fixed-length
// inner loops that the compiler turns into vector shuffles) and as a run-time value otherwise.
template <class F>
static void with_factor(int64_t S, F f) {
  switch (S) {
    case 2: f(std::integral_constant<int64_t, 2>()); break;
    case 4: f(std::integral_constant<int64_t, 4>()); break;
    default: f(S); break;
  }
}

// fine (R × PF) <- coarse (R × PC) nearest-upsampled along the row: fine[i][j] = coarse[i][j / S]
// for j < n·S, zero beyond.
template <class T>
static void expand(T* fine, int64_t PF, const T* coarse, int64_t PC, int64_t R, int64_t n, int64_t S) {
  with_factor(S, [&](auto s) {
    for (int64_t i = 0; i < R; ++i) {
      T* f = fine + i * PF;
      const T* c = coarse + i * PC;
      for (int64_t j = 0; j < n; ++j)
        for (int64_t t = 0; t < s; ++t) f[j * s + t] = c[j];
      for (int64_t j = n * s; j < PF; ++j) f[j] = T(0);
    }
  });
}

// coarse[i][j] += Σ_{t<S} fine[i][j·S+t] for j < n (the column half of the S×S sum pooling; the
// row half is done at full width by acc_rows, S times cheaper than pooling each row).
template <class T>
static void pool_cols(T* coarse, int64_t PC, const T* fine, int64_t PF, int64_t R, int64_t n, int64_t S) {
  with_factor(S, [&](auto s) {
    for (int64_t i = 0; i < R; ++i) {
      T* c = coarse + i * PC;
      const T* f = fine + i * PF;
      for (int64_t j = 0; j < n; ++j) {
        T v = 0;
        for (int64_t t = 0; t < s; ++t) v += f[j * s + t];
        c[j] += v;
      }
    }
  });
}

// acc[i][p] += (w[p]) · X[i][p] over R rows of P (w == nullptr: weight 1)
template <class T>
static void acc_rows(T* acc, const T* X, int64_t R, int64_t P, const T* w = nullptr) {
  constexpr int64_t L = vl<T>();
  for (int64_t i = 0; i < R; ++i)
    for (int64_t p = 0; p < P; p += L) {
      const int64_t o = i * P + p;
      st(acc + o, ld(acc + o) + (w ? ld(w + p) * ld(X + o) : ld(X + o)));
    }
}

// Y[i] = a[i] + b[i] (+ bias[i]) over R rows of P.
template <class T>
static void add_rows(T* Y, const T* A, const T* Bm, int64_t R, int64_t P, const T* bias = nullptr) {
  constexpr int64_t L = vl<T>();
  for (int64_t i = 0; i < R; ++i) {
    const V<T> b = splat(bias ? bias[i] : T(0));
    for (int64_t p = 0; p < P; p += L) st(Y + i * P + p, ld(A + i * P + p) + ld(Bm + i * P + p) + b);
  }
}

// Y[i] += bias[i] over R rows of P
template <class T>
static void add_bias(T* Y, int64_t R, int64_t P, const T* bias) {
  constexpr int64_t L = vl<T>();
  for (int64_t i = 0; i < R; ++i) {
    const V<T> b = splat(bias[i]);
    for (int64_t p = 0; p < P; p += L) st(Y + i * P + p, ld(Y + i * P + p) + b);
  }
}

// Y[i][p] = g[p] · X[i][p]
template <class T>
static void scale_rows(T* Y, const T* g, const T* X, int64_t R, int64_t P) {
  constexpr int64_t L = vl<T>();
  for (int64_t i = 0; i < R; ++i)
    for (int64_t p = 0; p < P; p += L) st(Y + i * P + p, ld(g + p) * ld(X + i * P + p));
}

// acc (R × VL) += Σ over the pixel vectors of Y (R × P): per-row sums kept as vectors.
template <class T>
static void rowsum_acc(T* acc, const T* Y, int64_t R, int64_t P) {
  constexpr int64_t L = vl<T>();
  for (int64_t i = 0; i < R; ++i) {
    V<T> s = ld(acc + i * L);
    for (int64_t p = 0; p < P; p += L) s += ld(Y + i * P + p);
    st(acc + i * L, s);
  }
}

// acc (4 × R × VL) += dz (4 × P) ⊗ Y (R × P): the vector partials of dz Yᵀ (a 4-row Gram, whose
// transposed form would cost more to build than the products).
template <class T>
static void outer4_acc(T* acc, const T* dz, const T* Y, int64_t R, int64_t P) {
  constexpr int64_t L = vl<T>();
  for (int64_t i = 0; i < R; ++i) {
    V<T> a0 = ld(acc + (0 * R + i) * L), a1 = ld(acc + (1 * R + i) * L);
    V<T> a2 = ld(acc + (2 * R + i) * L), a3 = ld(acc + (3 * R + i) * L);
    for (int64_t p = 0; p < P; p += L) {
      const V<T> y = ld(Y + i * P + p);
      a0 += ld(dz + p) * y;
      a1 += ld(dz + P + p) * y;
      a2 += ld(dz + 2 * P + p) * y;
      a3 += ld(dz + 3 * P + p) * y;
    }
    st(acc + (0 * R + i) * L, a0);
    st(acc + (1 * R + i) * L, a1);
    st(acc + (2 * R + i) * L, a2);
    st(acc + (3 * R + i) * L, a3);
  }
}

// dst rows (`count` of each, `cs` apart) = g0 Y0 + g1 Y1 + g2 Y2 + g3 Y3 (g: 4 × P); row by row
// through `tmp` (P elements, in L1) to the streaming store.
template <class T>
static void store_gated(T* dst, int64_t cs, int64_t count, const T* g, const T* Y0, const T* Y1,
                        const T* Y2, const T* Y3, int64_t R, int64_t P, T* tmp) {
  constexpr int64_t L = vl<T>();
  for (int64_t i = 0; i < R; ++i) {
    for (int64_t p = 0; p < P; p += L) {
      const int64_t o = i * P + p;
      st(tmp + p, ld(g + p) * ld(Y0 + o) + ld(g + P + p) * ld(Y1 + o) + ld(g + 2 * P + p) * ld(Y2 + o) +
                      ld(g + 3 * P + p) * ld(Y3 + o));
    }
    stream_row(dst + i * cs, tmp, count);
  }
}

// dg (4 × P) = Σ_i dout[i] ⊙ Y_j[i] for j = 0..3
template <class T>
static void chan_dot4(T* dg, const T* dout, const T* Y0, const T* Y1, const T* Y2, const T* Y3,
                      int64_t R, int64_t P) {
  constexpr int64_t L = vl<T>();
  for (int64_t p = 0; p < P; p += L) {
    V<T> s0{}, s1{}, s2{}, s3{};
    for (int64_t i = 0; i < R; ++i) {
      const int64_t o = i * P + p;
      const V<T> d = ld(dout + o);
      s0 += d * ld(Y0 + o);
      s1 += d * ld(Y1 + o);
      s2 += d * ld(Y2 + o);
      s3 += d * ld(Y3 + o);
    }
    st(dg + p, s0);
    st(dg + P + p, s1);
    st(dg + 2 * P + p, s2);
    st(dg + 3 * P + p, s3);
  }
}

// ------------------------------------------------------------------------------------------------
// tiles
// ------------------------------------------------------------------------------------------------

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
// pass 1
// ------------------------------------------------------------------------------------------------
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
          // pool(x2): the S rows summed at full width, then the columns; centring (when asked)
          // happens element-wise before the sums, as in the torch backend
          if (g22) {  // the Gram of x2 needs every channel of a row at once: row panels
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
  // fixed-order sums of the item partials, per sample
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < C; ++j) {
        T sg = 0, s11 = 0, s22 = 0;
        for (int64_t s = 0; s < sp.n; ++s) {
          const T* P = part.data() + (b * sp.n + s) * part_size + i * Cp + j;
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
        for (int64_t s = 0; s < sp.n; ++s) {
          const T* P = part.data() + (b * sp.n + s) * part_size + 3 * CC + i * L;
          v1 += sum_lanes(P);
          v2 += sum_lanes(P + C * L);
        }
        a.s1[b * C + i] = v1;
        a.s2[b * C + i] = v2;
      }
  }
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

// ------------------------------------------------------------------------------------------------
// backward, pass 1
// ------------------------------------------------------------------------------------------------
template <class T>
void backward1(const Bwd1Args<T>& a, const Dims& d) {
  constexpr int64_t L = vl<T>();
  const int64_t C = d.C, Cp = round_up(C, L), CC = C * Cp;
  const Grid g(d, d.S, kApplyWidth, L);
  const Split sp(g.ntiles, kReduceItems);
  const bool gate = a.wg != nullptr, x1c = d.x1_coarse, x3c = d.x3_coarse;
  const bool want_px2 = a.qk && x1c;
  const Gate<T> gw(a.wg, a.bg, C);
  const std::vector<T> MT = transposed(a.M, d.B, C);
  // per item: dM (C × Cp), dc (C × VL), dWg vector partials (4 blocks × 4 × C × VL), dbg (4 × VL)
  const int64_t dw_size = 16 * C * L;
  const int64_t part_size = CC + C * L + dw_size + 4 * L;
  std::vector<T> part(d.B * sp.n * part_size);
  const int64_t PF = g.WP, PC = g.LP;
  const int64_t need = arena_size(std::max(C * PC, PC * Cp), 9, sizeof(T)) +
                       arena_size(std::max(C * PF, PF * Cp), 13, sizeof(T)) +
                       arena_size(4 * std::max(PC, PF), 6, sizeof(T));
  parallel_items(
      d.B * sp.n, d.threads, [&] { return Arena<T>(need); },
      [&](Arena<T>& ar, int64_t item) {
        ar.used = 0;
        const int64_t b = item / sp.n, s = item % sp.n;
        T* P = part.data() + item * part_size;
        zero(P, part_size);
        T *DM = P, *DC = P + CC, *DW = DC + C * L, *DBG = DW + dw_size;
        T *DW1 = DW, *DW2 = DW + 4 * C * L, *DW3 = DW + 8 * C * L, *DW4 = DW + 12 * C * L;
        const T* M = a.M + b * C * C;
        const T* Mt = MT.data() + b * C * C;
        const T* cv = a.c + b * C;
        const int64_t cs1 = x1c ? g.HWc : g.HW, cs3 = x3c ? g.HWc : g.HW;
        const T* x1 = a.x1 + b * C * cs1;
        const T* x2 = a.x2 + b * C * g.HW;
        const T* x3 = a.x3 + b * C * cs3;
        const T* x4 = a.x4 + b * C * g.HW;
        const T* dout = a.dout + b * C * g.HW;
        T* dx1 = a.dx1 ? a.dx1 + b * C * cs1 : nullptr;
        T* dx2 = a.dx2 ? a.dx2 + b * C * g.HW : nullptr;
        T* dx3 = a.dx3 + b * C * cs3;
        T* dx4 = a.dx4 + b * C * g.HW;
        T* px2 = want_px2 ? a.px2 + b * C * g.HWc : nullptr;
        // coarse panels (the P* are pooled sums, finished per tile)
        T *X1C = ar.take(C * PC), *X3C = ar.take(C * PC), *MX3C = ar.take(C * PC),
          *X3CT = ar.take(PC * Cp), *PG0 = ar.take(C * PC),
          *PDA = ar.take(C * PC), *PX2 = ar.take(C * PC), *DXC = ar.take(C * PC);
        // fine panels; the F* accumulate their pooled quantity over the S rows of a tile
        T *X1 = ar.take(C * PF), *X2 = ar.take(C * PF), *X3 = ar.take(C * PF), *MX3 = ar.take(C * PF),
          *ATT = ar.take(C * PF), *DO = ar.take(C * PF), *DA = ar.take(C * PF), *DX = ar.take(C * PF),
          *X3T = ar.take(PF * Cp), *FG0 = ar.take(C * PF), *FG2 = ar.take(C * PF),
          *FDA = ar.take(C * PF), *FX2 = ar.take(C * PF);
        T *ZC = ar.take(4 * PC), *PDZ = ar.take(4 * PC), *Z0 = ar.take(4 * PF), *G = ar.take(4 * PF),
          *DZ = ar.take(4 * PF), *FDZ = ar.take(4 * PF);
        const int64_t t_end = sp.end(s, g.ntiles);
        for (int64_t t = sp.begin(s); t < t_end; ++t) {
          int64_t cy, cx, n;
          g.tile(t, cy, cx, n);
          const int64_t nf = n * g.S, oc = g.coarse(cy, cx);
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
          for (int64_t r = 0; r < g.S; ++r) {
            const int64_t o = g.fine(cy, r, cx);
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
          // the tile's coarse outputs, from the pooled sums
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
        stream_fence();
      });
  // fixed-order sums: dM, dc per sample; dWg, dbg over samples and items
  const int64_t items = d.B * sp.n;
  for (int64_t b = 0; b < d.B; ++b) {
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
  if (gate) {
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

#define CSAKD_CPU_INSTANTIATE(T)                                                         \
  template void csakd::cpu::CSAKD_ISA::pass1<T>(const Pass1Args<T>&, const Dims&);       \
  template void csakd::cpu::CSAKD_ISA::forward<T>(const FwdArgs<T>&, const Dims&);       \
  template void csakd::cpu::CSAKD_ISA::backward1<T>(const Bwd1Args<T>&, const Dims&);    \
  template void csakd::cpu::CSAKD_ISA::backward2<T>(const Bwd2Args<T>&, const Dims&);

// The panel kernels of the CPU passes (csa_cpu_impl.h): the vector type, the register-blocked GEMM,
// packing a tile's maps into zero-padded panels and storing them back, nearest upsampling and sum
// pooling along a row, and the element-wise sweeps of the gate. Compiled once per instruction set
// like the passes: included by csa_cpu_impl.h in each ISA's translation unit, after every standard
// header (see there), so it includes none itself; its code is in namespace csakd::cpu::CSAKD_ISA.
#pragma once
#ifndef CSAKD_ISA
#error "included by csa_cpu_impl.h, inside one ISA's translation unit (csa_cpu_base.cpp, csa_cpu_avx2.cpp)"
#endif

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

}  // namespace CSAKD_ISA
}  // namespace cpu
}  // namespace csakd

// What the CUDA passes of the fused CSA (csa_cuda.h) share: the launch constants, the dtype
// conversions, the tile geometry and the block-level building blocks (a panel load, the C×C
// product on tensor cores or FMA, the gate weights and coarse logits), plus the host helpers
// that cross translation units (the padded matrices, the Gram launcher, the workspace sizes).
//
// The algorithm is docs/design.md "The fused CSA", the formulas csakd_fast/ops/csa/impl_torch.py, split as
// in the CPU passes (csrc/csa/). One translation unit per pass family: csa_cuda_gram.cu (pass 1
// and the Gram of backward 1's dM), csa_cuda_fwd.cu (forward), csa_cuda_bwd1.cu, csa_cuda_bwd2.cu
// (the backward passes); csa_cuda.cu holds the padding kernel and the workspace sizes.
//
// Tiles (as in csrc/csa/csa_cpu_impl.h): `n` ≤ TL consecutive coarse pixels of one coarse row at
// factor S and the S×S fine pixels under each (S = 1: the image is one long row). A block owns one
// tile at a time; its coarse maps (x1, x3 at factor S) sit in shared memory as zero-padded float panels
// (CP × LP, CP = C rounded up to 16) and the C×C products on them run on
//   - tensor cores (wmma, TF32 in, float32 accumulate) for float16/bfloat16 maps, whose values
//     TF32 holds exactly (the float32 small matrices are rounded to TF32, as in the Triton path);
//   - float32 FMA for float32 maps (results within ~1e-6 of float64).
// Fine pixels are one per thread (coalesced along the rows), channels in a loop, every sum in
// float32. Reductions over pixels (the Gram matrices, dM, dc, dWg, dbg) are split-N: each block
// writes the partial of a fixed pixel range to the workspace, a second kernel adds the partials
// in a fixed order. Nothing uses float atomics, so every result is bitwise reproducible. Offsets
// into the maps are int64; ragged tiles and channel padding are masked.
#pragma once

#include "csa_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <type_traits>

namespace csakd {
namespace cuda {

// ------------------------------------------------------------------------------------------------
// across translation units (host code; defined in csa_cuda.cu and csa_cuda_gram.cu)
// ------------------------------------------------------------------------------------------------
namespace detail {

// (B, C, C) -> zero-padded (B, CP, CP), transposed on request: the A operands of block_mm
cudaError_t pad(const float* in, float* out, int64_t B, int C, int CP, bool transpose, cudaStream_t st);

// G = Σ_l (a_l − ma)(pool_S(b − mb)_l)ᵀ (B × C × C, transposed on request), and the sums sa of a,
// sb of pool(b) (nullptr: skipped); a at the coarse pixels l of b's grid (Hb × Wb). T: float,
// __half, __nv_bfloat16 (instantiated in csa_cuda_gram.cu).
template <class T>
cudaError_t gram(const T* a, const T* b, const float* ma, const float* mb, int64_t B, int C, int64_t Hb,
                 int64_t Wb, int S, float* G, float* sa, float* sb, bool transpose, float* ws,
                 cudaStream_t st);
// float32 elements of workspace gram() needs for B samples, C channels, L coarse pixels
int64_t gram_workspace(int64_t B, int64_t C, int64_t L);

}  // namespace detail

// Everything below has internal linkage, as when the passes were one file: each translation unit
// compiles its own copy of what it uses, so every kernel's code is what it was then.
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxChannels = 256;
constexpr int kFineTarget = 256;  // fine pixels per tile (one per thread) for the apply passes
constexpr int kFineChunk = 64;    // fine pixels per step of backward 2's E22 x2 product
// blocks per SM the apply kernels are compiled for: a 128-register budget, which their unrolled
// channel loops need without spilling (with 256 threads alone ptxas settles lower and spills)
constexpr int kApplyBlocks = 2;

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

template <class T> __device__ __forceinline__ float f32(T v);
template <> __device__ __forceinline__ float f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float f32<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T> __device__ __forceinline__ T to(float v);
template <> __device__ __forceinline__ float to<float>(float v) { return v; }
template <> __device__ __forceinline__ __half to<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 to<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// TF32 tensor cores for the 16-bit maps, float32 FMA for float32 maps
template <class T> constexpr bool kMMA = !std::is_same<T, float>::value;

__device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

// ------------------------------------------------------------------------------------------------
// geometry
// ------------------------------------------------------------------------------------------------
struct Geo {
  int64_t S, Hc, Wc, Wrow, HW, HWc, per_row, ntiles;
  int C, CP, TL, LP, LD, FP;  // LD: row stride of the coarse panels; FP: fine pixels of a full tile
  __host__ __device__ void tile(int64_t t, int64_t& cy, int64_t& cx, int& n) const {
    cy = t / per_row;
    cx = (t % per_row) * TL;
    n = static_cast<int>(min(static_cast<int64_t>(TL), Wc - cx));
  }
  __host__ __device__ int64_t fine(int64_t cy, int64_t r, int64_t cx) const { return (cy * S + r) * Wrow + cx * S; }
  __host__ __device__ int64_t coarse(int64_t cy, int64_t cx) const { return cy * Wc + cx; }
};

inline Geo make_geo(const Dims& d, int64_t S) {
  Geo g;
  g.S = S;
  g.HW = d.H * d.W;
  if (S == 1) {
    g.Hc = 1, g.Wc = g.HW, g.Wrow = g.HW;
  } else {
    g.Hc = d.H / S, g.Wc = d.W / S, g.Wrow = d.W;
  }
  g.HWc = g.Hc * g.Wc;
  g.C = static_cast<int>(d.C);
  g.CP = static_cast<int>(round_up(d.C, 16));
  const int64_t tl_max = g.CP <= 128 ? 32 : 16;  // keeps 5 C × tile panels in shared memory
  g.TL = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({tl_max, kFineTarget / (S * S), g.Wc})));
  g.LP = static_cast<int>(round_up(g.TL, 16));
  g.LD = g.LP + 8;  // a multiple of 8 floats: 32-byte aligned wmma rows, fewer bank conflicts
  g.FP = static_cast<int>(g.TL * S * S);
  g.per_row = ceil_div(g.Wc, g.TL);
  g.ntiles = g.Hc * g.per_row;
  return g;
}

// blocks per sample of the split-N reductions: fixed by the shape (not the GPU), so the partial
// sums and their fixed-order total are the same everywhere
inline int64_t splits(int64_t B, int64_t units) { return std::max<int64_t>(1, std::min<int64_t>(units, std::max<int64_t>(1, 256 / B))); }

inline int64_t align64(int64_t n) { return round_up(n, 64); }  // workspace regions start 256 bytes apart

// ------------------------------------------------------------------------------------------------
// block-level building blocks
// ------------------------------------------------------------------------------------------------

// panel (CP × LP, row stride ld, shared) <- rows c < C of n values at src + c·cs (minus mean[c]),
// zero for c ≥ C or j ≥ n
template <class T>
__device__ void load_panel(float* P, int ld, int CP, int LP, const T* __restrict__ src, int64_t cs,
                           int C, int n, const float* __restrict__ mean) {
  for (int e = threadIdx.x; e < CP * LP; e += kThreads) {
    const int i = e / LP, j = e % LP;
    float v = 0.0f;
    if (i < C && j < n) {
      v = f32(src[i * cs + j]);
      if (mean) v -= mean[i];
    }
    P[i * ld + j] = v;
  }
}

// Y (R × P, shared, ldy) (+)= A (R × K, global row-major, lda; zero-padded) · X (K × P, shared,
// ldx). R, P multiples of 16, K of 8. Whole block; the caller synchronises around it.
template <bool MMA, bool ACC>
__device__ void block_mm(const float* __restrict__ A, int lda, const float* X, int ldx, float* Y,
                         int ldy, int R, int K, int P) {
  if constexpr (MMA) {
    using namespace nvcuda;
    const int warp = threadIdx.x / 32, tiles_p = P / 16, tiles = (R / 16) * tiles_p;
    for (int t = warp; t < tiles; t += kWarps) {
      const int ti = t / tiles_p, tj = t % tiles_p;
      wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
      if (ACC)
        wmma::load_matrix_sync(acc, Y + ti * 16 * ldy + tj * 16, ldy, wmma::mem_row_major);
      else
        wmma::fill_fragment(acc, 0.0f);
      for (int k = 0; k < K; k += 8) {
        wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b;
        wmma::load_matrix_sync(a, A + static_cast<int64_t>(ti) * 16 * lda + k, lda);
        wmma::load_matrix_sync(b, X + k * ldx + tj * 16, ldx);
        for (int e = 0; e < a.num_elements; ++e) a.x[e] = wmma::__float_to_tf32(a.x[e]);
        for (int e = 0; e < b.num_elements; ++e) b.x[e] = wmma::__float_to_tf32(b.x[e]);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(Y + ti * 16 * ldy + tj * 16, acc, ldy, wmma::mem_row_major);
    }
  } else {
    const int mp = P / 4, micro = (R / 4) * mp;  // 4 × 4 outputs per thread and step
    for (int m = threadIdx.x; m < micro; m += kThreads) {
      const int i0 = (m / mp) * 4, j0 = (m % mp) * 4;
      float acc[4][4];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] = ACC ? Y[(i0 + r) * ldy + j0 + c] : 0.0f;
      for (int k = 0; k < K; ++k) {
        const float4 x = *reinterpret_cast<const float4*>(X + k * ldx + j0);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const float a = __ldg(A + static_cast<int64_t>(i0 + r) * lda + k);
          acc[r][0] = fmaf(a, x.x, acc[r][0]);
          acc[r][1] = fmaf(a, x.y, acc[r][1]);
          acc[r][2] = fmaf(a, x.z, acc[r][2]);
          acc[r][3] = fmaf(a, x.w, acc[r][3]);
        }
      }
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) Y[(i0 + r) * ldy + j0 + c] = acc[r][c];
    }
  }
}

// The gate weights in shared memory: WG[(k·4 + j)·C + c] = wg[j][k·C + c] (block k of x1, x2, x3,
// att), and the bias vector cv (C).
__device__ void load_gate(float* WG, const float* __restrict__ wg, int C) {
  for (int e = threadIdx.x; e < 16 * C; e += kThreads) {
    const int k = e / (4 * C), j = (e / C) % 4, c = e % C;
    WG[e] = wg[j * 4 * C + k * C + c];
  }
}
__device__ __forceinline__ float wgt(const float* WG, int C, int k, int j, int c) { return WG[(k * 4 + j) * C + c]; }

// z (4 × n, stride ld) = bg + Wg1 x1 + Wg3 x3 at the coarse pixels (x1c: nullptr when x1 is fine)
__device__ void coarse_logits(float* Z, int ld, const float* WG, const float* __restrict__ bg,
                              const float* X1C, const float* X3C, int ldp, int C, int n) {
  for (int e = threadIdx.x; e < 4 * n; e += kThreads) {
    const int j = e / n, l = e % n;
    float z = bg[j];
    for (int c = 0; c < C; ++c) {
      if (X1C) z = fmaf(wgt(WG, C, 0, j, c), X1C[c * ldp + l], z);
      z = fmaf(wgt(WG, C, 2, j, c), X3C[c * ldp + l], z);
    }
    Z[j * ld + l] = z;
  }
}

// per block of backward 1's split: dWg (16C: [k][j][c]) and dbg (4)
__host__ __device__ inline int64_t bwd1_part(int64_t C) { return 16 * C + 4; }

// ------------------------------------------------------------------------------------------------
// launch helpers
// ------------------------------------------------------------------------------------------------
template <class K>
cudaError_t smem_opt_in(K kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  int dev = 0, max_bytes = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&max_bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return e;
  if (bytes > static_cast<size_t>(max_bytes)) return cudaErrorInvalidConfiguration;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

// Calls fn(T()) for the dtype code (0 float32, 2 float16, 3 bfloat16).
template <class Fn>
cudaError_t by_dtype(int dtype, Fn fn) {
  switch (dtype) {
    case 0: return fn(float());
    case 2: return fn(__half());
    case 3: return fn(__nv_bfloat16());
    default: return cudaErrorInvalidValue;
  }
}

inline int64_t bwd1_splits(const Dims& d, const Geo& g) { return splits(d.B, g.ntiles); }

}  // namespace
}  // namespace cuda
}  // namespace csakd

// CUDA pixel passes of the fused CSA (declared in csa_cuda.h); the algorithm is design.md §3 and
// the formulas those of csakd_fast/ops/csa_torch.py, split as in the CPU passes (csrc/csa/).
//
// Tiles (as csrc/csa/csa_cpu_impl.h): `n` ≤ TL consecutive coarse pixels of one coarse row at factor S
// and the S×S fine pixels under each (S = 1: the image is one long row). A block owns one tile at
// a time; its coarse maps (x1, x3 at factor S) sit in shared memory as zero-padded float panels
// (CP × LP, CP = C rounded up to 16) and the C×C products on them run on
//   - tensor cores (wmma, TF32 in, float32 accumulate) for float16/bfloat16 maps, whose values
//     TF32 holds exactly (the float32 small matrices are rounded to TF32, as in the Triton path);
//   - float32 FMA for float32 maps (results within ~1e-6 of float64).
// Fine pixels are one per thread (coalesced along the rows), channels in a loop, every sum in
// float32. Reductions over pixels (the Gram matrices, dM, dc, dWg, dbg) are split-N: each block
// writes the partial of a fixed pixel range to the workspace, a second kernel adds the partials
// in a fixed order. Nothing uses float atomics, so every result is bitwise reproducible. Offsets
// into the maps are int64; ragged tiles and channel padding are masked.
#include "csa_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <type_traits>

namespace csakd {
namespace cuda {
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

Geo make_geo(const Dims& d, int64_t S) {
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
int64_t splits(int64_t B, int64_t units) { return std::max<int64_t>(1, std::min<int64_t>(units, std::max<int64_t>(1, 256 / B))); }

int64_t align64(int64_t n) { return round_up(n, 64); }  // workspace regions start 256 bytes apart

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

// (B, C, C) -> zero-padded (B, CP, CP), transposed on request: the A operands of block_mm
__global__ void pad_kernel(const float* __restrict__ in, float* __restrict__ out, int64_t B, int C,
                           int CP, bool transpose) {
  const int64_t total = B * CP * CP;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = e / (CP * CP);
    const int i = static_cast<int>((e / CP) % CP), j = static_cast<int>(e % CP);
    float v = 0.0f;
    if (i < C && j < C) v = in[b * C * C + (transpose ? j * C + i : i * C + j)];
    out[e] = v;
  }
}

cudaError_t pad(const float* in, float* out, int64_t B, int C, int CP, bool transpose, cudaStream_t st) {
  const int64_t total = B * CP * CP;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(total, kThreads), 4096));
  pad_kernel<<<blocks, kThreads, 0, st>>>(in, out, B, C, CP, transpose);
  return cudaGetLastError();
}

// ------------------------------------------------------------------------------------------------
// Gram: G = Σ_l (a_l − ma)(pool_S(b − mb)_l)ᵀ, a at the coarse pixels l of b's grid (Hb × Wb)
// ------------------------------------------------------------------------------------------------
constexpr int kGT = 64;            // rows and columns of G per block
constexpr int kGK = 32;            // coarse pixels per step
constexpr int kGLD = kGT + 4;      // row stride of the k-major shared panels

// grid (ij tile, split, sample). Panels are k-major (pixel × channel): the FMA path then reads
// four consecutive channels as one float4 and the MMA path reads a col-major A / row-major Bᵀ.
template <class T, bool MMA>
__global__ void __launch_bounds__(kThreads)
gram_kernel(const T* __restrict__ a, const T* __restrict__ b, const float* __restrict__ ma,
            const float* __restrict__ mb, float* __restrict__ part, float* __restrict__ part_sa,
            float* __restrict__ part_sb, int C, int64_t Hb, int64_t Wb, int S, int64_t per,
            int nsplit, int tiles_j) {
  __shared__ __align__(128) float As[kGK * kGLD];
  __shared__ __align__(128) float Bs[kGK * kGLD];
  const int ti = blockIdx.x / tiles_j, tj = blockIdx.x % tiles_j;
  const int i0 = ti * kGT, j0 = tj * kGT;
  const int s = blockIdx.y;
  const int64_t bb = blockIdx.z;
  const int64_t Wc = Wb / S, L = (Hb / S) * Wc, HWb = Hb * Wb;
  const int64_t lo = s * per, hi = min(L, lo + per);
  const T* ab = a + bb * C * L;
  const T* bp = b + bb * C * HWb;
  const float* mab = ma ? ma + bb * C : nullptr;
  const float* mbb = mb ? mb + bb * C : nullptr;
  const bool sums_a = part_sa && tj == 0, sums_b = part_sb && ti == 0;
  float sa = 0.0f, sb = 0.0f;  // thread t < 64: row t of a; 64 ≤ t < 128: row t − 64 of pool(b)

  using namespace nvcuda;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> facc[2];
  float acc[4][4];
  const int warp = threadIdx.x / 32;
  if constexpr (MMA) {
    wmma::fill_fragment(facc[0], 0.0f);
    wmma::fill_fragment(facc[1], 0.0f);
  } else {
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[r][c] = 0.0f;
  }
  for (int64_t l0 = lo; l0 < hi; l0 += kGK) {
    __syncthreads();
    for (int e = threadIdx.x; e < kGK * kGT; e += kThreads) {
      const int i = e / kGK, k = e % kGK;  // k fastest: consecutive pixels of one channel
      const int64_t l = l0 + k;
      float va = 0.0f, vb = 0.0f;
      if (l < hi) {
        if (i0 + i < C) {
          va = f32(ab[(i0 + i) * L + l]);
          if (mab) va -= mab[i0 + i];
        }
        if (j0 + i < C) {
          const int64_t ly = l / Wc, lx = l % Wc;
          const T* row = bp + (j0 + i) * HWb + ly * S * Wb + lx * S;
          const float m = mbb ? mbb[j0 + i] : 0.0f;
          for (int r = 0; r < S; ++r)
            for (int t = 0; t < S; ++t) vb += f32(row[r * Wb + t]) - m;
        }
      }
      As[k * kGLD + i] = va;
      Bs[k * kGLD + i] = vb;
    }
    __syncthreads();
    if (sums_a && threadIdx.x < kGT)
      for (int k = 0; k < kGK; ++k) sa += As[k * kGLD + threadIdx.x];
    if (sums_b && threadIdx.x >= kGT && threadIdx.x < 2 * kGT)
      for (int k = 0; k < kGK; ++k) sb += Bs[k * kGLD + threadIdx.x - kGT];
    if constexpr (MMA) {
#pragma unroll
      for (int f = 0; f < 2; ++f) {
        const int t = warp * 2 + f, fi = t / 4, fj = t % 4;
        for (int k = 0; k < kGK; k += 8) {
          wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fa;
          wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
          wmma::load_matrix_sync(fa, As + k * kGLD + fi * 16, kGLD);
          wmma::load_matrix_sync(fb, Bs + k * kGLD + fj * 16, kGLD);
          for (int e = 0; e < fa.num_elements; ++e) fa.x[e] = wmma::__float_to_tf32(fa.x[e]);
          for (int e = 0; e < fb.num_elements; ++e) fb.x[e] = wmma::__float_to_tf32(fb.x[e]);
          wmma::mma_sync(facc[f], fa, fb, facc[f]);
        }
      }
    } else {
      const int r0 = (threadIdx.x / 16) * 4, c0 = (threadIdx.x % 16) * 4;
      for (int k = 0; k < kGK; ++k) {
        const float4 x = *reinterpret_cast<const float4*>(As + k * kGLD + r0);
        const float4 y = *reinterpret_cast<const float4*>(Bs + k * kGLD + c0);
        const float xa[4] = {x.x, x.y, x.z, x.w}, ya[4] = {y.x, y.y, y.z, y.w};
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[r][c] = fmaf(xa[r], ya[c], acc[r][c]);
      }
    }
  }
  // the block's partial, rows i0.., columns j0.. of sample bb, split s
  float* out = part + ((bb * nsplit + s) * C) * C;
  if constexpr (MMA) {
    __syncthreads();
    // the 64 × 64 result through shared memory: rows 0–31 in As, rows 32–63 in Bs
    float* tile = As;
    float* tile2 = Bs;
#pragma unroll
    for (int f = 0; f < 2; ++f) {
      const int t = warp * 2 + f, fi = t / 4, fj = t % 4;
      float* dst = fi < 2 ? tile + fi * 16 * kGT + fj * 16 : tile2 + (fi - 2) * 16 * kGT + fj * 16;
      wmma::store_matrix_sync(dst, facc[f], kGT, wmma::mem_row_major);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kGT * kGT; e += kThreads) {
      const int i = e / kGT, j = e % kGT;
      const float v = i < 32 ? tile[i * kGT + j] : tile2[(i - 32) * kGT + j];
      if (i0 + i < C && j0 + j < C) out[(i0 + i) * C + j0 + j] = v;
    }
  } else {
    const int r0 = (threadIdx.x / 16) * 4, c0 = (threadIdx.x % 16) * 4;
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c)
        if (i0 + r0 + r < C && j0 + c0 + c < C) out[(i0 + r0 + r) * C + j0 + c0 + c] = acc[r][c];
  }
  if (sums_a && threadIdx.x < kGT && i0 + threadIdx.x < C)
    part_sa[(bb * nsplit + s) * C + i0 + threadIdx.x] = sa;
  if (sums_b && threadIdx.x >= kGT && threadIdx.x < 2 * kGT && j0 + threadIdx.x - kGT < C)
    part_sb[(bb * nsplit + s) * C + j0 + threadIdx.x - kGT] = sb;
}

// G[b] = Σ_s part[b][s] (transposed on request), sa, sb likewise: fixed order
__global__ void gram_finish_kernel(const float* __restrict__ part, const float* __restrict__ psa,
                                   const float* __restrict__ psb, float* __restrict__ G,
                                   float* __restrict__ sa, float* __restrict__ sb, int64_t B, int C,
                                   int nsplit, bool transpose) {
  const int64_t CC = static_cast<int64_t>(C) * C, total = B * CC;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total + 2 * B * C;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (e < total) {
      const int64_t b = e / CC;
      const int i = static_cast<int>((e / C) % C), j = static_cast<int>(e % C);
      float v = 0.0f;
      for (int s = 0; s < nsplit; ++s) v += part[(b * nsplit + s) * CC + i * C + j];
      G[b * CC + (transpose ? j * C + i : i * C + j)] = v;
    } else {
      const int64_t f = e - total, which = f / (B * C), bc = f % (B * C), b = bc / C, c = bc % C;
      const float* p = which == 0 ? psa : psb;
      float* o = which == 0 ? sa : sb;
      if (!o) continue;
      float v = 0.0f;
      for (int s = 0; s < nsplit; ++s) v += p[(b * nsplit + s) * C + c];
      o[bc] = v;
    }
  }
}

int64_t gram_splits(int64_t B, int64_t L) { return splits(B, ceil_div(L, kGK)); }
int64_t gram_workspace(int64_t B, int64_t C, int64_t L) {
  const int64_t ns = gram_splits(B, L);
  return align64(B * ns * C * C) + 2 * align64(B * ns * C);
}

template <class T>
cudaError_t gram(const T* a, const T* b, const float* ma, const float* mb, int64_t B, int C, int64_t Hb,
                 int64_t Wb, int S, float* G, float* sa, float* sb, bool transpose, float* ws,
                 cudaStream_t st) {
  const int64_t L = (Hb / S) * (Wb / S);
  int64_t ns = gram_splits(B, L);
  const int64_t per = round_up(ceil_div(L, ns), kGK);
  ns = std::max<int64_t>(1, ceil_div(L, per));
  const int tiles = static_cast<int>(ceil_div(C, kGT));
  float* part = ws;
  float* psa = part + align64(B * ns * C * C);
  float* psb = psa + align64(B * ns * C);
  const dim3 grid(tiles * tiles, static_cast<unsigned>(ns), static_cast<unsigned>(B));
  gram_kernel<T, kMMA<T>><<<grid, kThreads, 0, st>>>(a, b, ma, mb, part, sa ? psa : nullptr,
                                                     sb ? psb : nullptr, C, Hb, Wb, S, per,
                                                     static_cast<int>(ns), tiles);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  const int64_t total = B * C * C + 2 * B * C;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(total, kThreads), 4096));
  gram_finish_kernel<<<blocks, kThreads, 0, st>>>(part, psa, psb, G, sa, sb, B, C, static_cast<int>(ns), transpose);
  return cudaGetLastError();
}

// ------------------------------------------------------------------------------------------------
// forward: out = g0 x1 + g1 x2 + g2 x3 + g3 att, att = M x3 + c + x4, g = σ(Wg [x1;x2;x3;att] + bg)
// ------------------------------------------------------------------------------------------------
struct FwdSmem {
  int X1C, X3C, MX3, ZC, WG, CV, total;  // float offsets
  __host__ __device__ explicit FwdSmem(const Geo& g) {
    const int panel = static_cast<int>(round_up(g.CP * g.LD, 32));
    X1C = 0, X3C = panel, MX3 = 2 * panel, ZC = 3 * panel;
    WG = ZC + static_cast<int>(round_up(4 * g.LD, 32));
    CV = WG + static_cast<int>(round_up(16 * g.C, 32));
    total = CV + static_cast<int>(round_up(g.C, 32));
  }
};

// grid (tile, sample)
template <class T, bool MMA>
__global__ void __launch_bounds__(kThreads, kApplyBlocks)
fwd_kernel(const T* __restrict__ x1, const T* __restrict__ x2, const T* __restrict__ x3,
           const T* __restrict__ x4, const float* __restrict__ Mp, const float* __restrict__ cvec,
           const float* __restrict__ wg, const float* __restrict__ bg, T* __restrict__ out, Geo g,
           bool x1c, bool gate) {
  extern __shared__ __align__(128) float sm[];
  const FwdSmem L(g);
  float *X1C = sm + L.X1C, *X3C = sm + L.X3C, *MX3 = sm + L.MX3, *ZC = sm + L.ZC, *WG = sm + L.WG,
        *CV = sm + L.CV;
  const int64_t bb = blockIdx.y;
  int64_t cy, cx;
  int n;
  g.tile(blockIdx.x, cy, cx, n);
  const int C = g.C, LD = g.LD;
  const int64_t oc = g.coarse(cy, cx);
  for (int e = threadIdx.x; e < C; e += kThreads) CV[e] = cvec[bb * C + e];
  if (gate) load_gate(WG, wg, C);
  load_panel(X3C, LD, g.CP, g.LP, x3 + bb * C * g.HWc + oc, g.HWc, C, n, nullptr);
  if (gate && x1c) load_panel(X1C, LD, g.CP, g.LP, x1 + bb * C * g.HWc + oc, g.HWc, C, n, nullptr);
  __syncthreads();
  block_mm<MMA, false>(Mp + bb * g.CP * g.CP, g.CP, X3C, LD, MX3, LD, g.CP, g.CP, g.LP);
  if (gate) coarse_logits(ZC, LD, WG, bg, x1c ? X1C : nullptr, X3C, LD, C, n);
  __syncthreads();
  const int nf = n * static_cast<int>(g.S), total = nf * static_cast<int>(g.S);
  const int64_t cs1 = x1c ? g.HWc : g.HW;
  for (int q = threadIdx.x; q < total; q += kThreads) {
    const int r = q / nf, col = q % nf, l = col / static_cast<int>(g.S);
    const int64_t o = bb * C * g.HW + g.fine(cy, r, cx) + col;
    const int64_t o1 = x1c ? bb * C * g.HWc + oc + l : o;
    if (!gate) {
      for (int c = 0; c < C; ++c)
        out[o + c * g.HW] = to<T>(MX3[c * LD + l] + CV[c] + f32(x4[o + c * g.HW]));
      continue;
    }
    float z[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) z[j] = ZC[j * LD + l];
    for (int c = 0; c < C; ++c) {
      const float v2 = f32(x2[o + c * g.HW]);
      const float att = MX3[c * LD + l] + CV[c] + f32(x4[o + c * g.HW]);
      const float v1 = x1c ? 0.0f : f32(x1[o1 + c * cs1]);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        z[j] = fmaf(wgt(WG, C, 1, j, c), v2, z[j]);
        z[j] = fmaf(wgt(WG, C, 3, j, c), att, z[j]);
        if (!x1c) z[j] = fmaf(wgt(WG, C, 0, j, c), v1, z[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) z[j] = sigmoid(z[j]);
    for (int c = 0; c < C; ++c) {
      const float v2 = f32(x2[o + c * g.HW]);
      const float att = MX3[c * LD + l] + CV[c] + f32(x4[o + c * g.HW]);
      const float v1 = x1c ? X1C[c * LD + l] : f32(x1[o1 + c * cs1]);
      out[o + c * g.HW] = to<T>(z[0] * v1 + z[1] * v2 + z[2] * X3C[c * LD + l] + z[3] * att);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// backward, first pass: dx4 = d_att, dx3, the gate's dx1/dx2, pool(x2); partials of dWg and dbg
// ------------------------------------------------------------------------------------------------
struct Bwd1Smem {
  int X1C, X3C, MX3, DX3, PDA, ZC, WG, CV, GS, DW, DB, total;
  __host__ __device__ explicit Bwd1Smem(const Geo& g) {
    const int panel = static_cast<int>(round_up(g.CP * g.LD, 32));
    X1C = 0, X3C = panel, MX3 = 2 * panel, DX3 = 3 * panel, PDA = 4 * panel, ZC = 5 * panel;
    WG = ZC + static_cast<int>(round_up(4 * g.LD, 32));
    CV = WG + static_cast<int>(round_up(16 * g.C, 32));
    GS = CV + static_cast<int>(round_up(g.C, 32));
    DW = GS + static_cast<int>(round_up(8 * g.FP, 32));
    DB = DW + static_cast<int>(round_up(16 * g.C, 32));
    total = DB + 4 * kThreads;
  }
};
// per block of the split: dWg (16C: [k][j][c]) and dbg (4)
__host__ __device__ inline int64_t bwd1_part(int64_t C) { return 16 * C + 4; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// grid (split, sample): the block walks the tiles [split·per, …) in order
template <class T, bool MMA>
__global__ void __launch_bounds__(kThreads, kApplyBlocks)
bwd1_kernel(const T* __restrict__ x1, const T* __restrict__ x2, const T* __restrict__ x3,
            const T* __restrict__ x4, const T* __restrict__ dout, const float* __restrict__ Mp,
            const float* __restrict__ MTp, const float* __restrict__ cvec, const float* __restrict__ wg,
            const float* __restrict__ bg, T* __restrict__ dx1, T* __restrict__ dx2, T* __restrict__ dx3,
            T* __restrict__ dx4, T* __restrict__ px2, float* __restrict__ part, Geo g, int64_t per,
            bool x1c, bool gate, bool want_px2) {
  extern __shared__ __align__(128) float sm[];
  const Bwd1Smem L(g);
  float *X1C = sm + L.X1C, *X3C = sm + L.X3C, *MX3 = sm + L.MX3, *DX3 = sm + L.DX3, *PDA = sm + L.PDA,
        *ZC = sm + L.ZC, *WG = sm + L.WG, *CV = sm + L.CV, *GS = sm + L.GS, *DW = sm + L.DW,
        *DB = sm + L.DB;
  const int64_t bb = blockIdx.y, s = blockIdx.x;
  const int C = g.C, LD = g.LD, FP = g.FP, Si = static_cast<int>(g.S);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int e = threadIdx.x; e < C; e += kThreads) CV[e] = cvec[bb * C + e];
  if (gate) load_gate(WG, wg, C);
  for (int e = threadIdx.x; e < 16 * C; e += kThreads) DW[e] = 0.0f;
  // rows ≥ C of PDA are never written below and meet zero columns of Mᵀ: keep them zero (0 × NaN)
  for (int e = threadIdx.x; e < (g.CP - C) * LD; e += kThreads) PDA[C * LD + e] = 0.0f;
  float dbg[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  const int64_t cs1 = x1c ? g.HWc : g.HW;
  const int64_t t_end = min(g.ntiles, (s + 1) * per);
  for (int64_t t = s * per; t < t_end; ++t) {
    int64_t cy, cx;
    int n;
    g.tile(t, cy, cx, n);
    const int64_t oc = g.coarse(cy, cx);
    const int nf = n * Si, total = nf * Si;
    __syncthreads();  // the previous tile is done with the panels
    load_panel(X3C, LD, g.CP, g.LP, x3 + bb * C * g.HWc + oc, g.HWc, C, n, nullptr);
    if (gate && x1c) load_panel(X1C, LD, g.CP, g.LP, x1 + bb * C * g.HWc + oc, g.HWc, C, n, nullptr);
    __syncthreads();
    if (gate) {
      block_mm<MMA, false>(Mp + bb * g.CP * g.CP, g.CP, X3C, LD, MX3, LD, g.CP, g.CP, g.LP);
      coarse_logits(ZC, LD, WG, bg, x1c ? X1C : nullptr, X3C, LD, C, n);
      __syncthreads();
    }
    // phase A, a fine pixel per thread: g, dz (kept in GS), dx4, dx2 and a fine dx1
    for (int q = threadIdx.x; q < total; q += kThreads) {
      const int r = q / nf, col = q % nf, l = col / Si;
      const int64_t o = bb * C * g.HW + g.fine(cy, r, cx) + col;
      const int64_t o1 = x1c ? bb * C * g.HWc + oc + l : o;
      if (!gate) {
        for (int c = 0; c < C; ++c) dx4[o + c * g.HW] = dout[o + c * g.HW];
        continue;
      }
      float z[4], dg[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int j = 0; j < 4; ++j) z[j] = ZC[j * LD + l];
      for (int c = 0; c < C; ++c) {
        const float d = f32(dout[o + c * g.HW]);
        const float v2 = f32(x2[o + c * g.HW]);
        const float att = MX3[c * LD + l] + CV[c] + f32(x4[o + c * g.HW]);
        const float v1 = x1c ? X1C[c * LD + l] : f32(x1[o1 + c * cs1]);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          z[j] = fmaf(wgt(WG, C, 1, j, c), v2, z[j]);
          z[j] = fmaf(wgt(WG, C, 3, j, c), att, z[j]);
          if (!x1c) z[j] = fmaf(wgt(WG, C, 0, j, c), v1, z[j]);
        }
        dg[0] = fmaf(d, v1, dg[0]);
        dg[1] = fmaf(d, v2, dg[1]);
        dg[2] = fmaf(d, X3C[c * LD + l], dg[2]);
        dg[3] = fmaf(d, att, dg[3]);
      }
      float gv[4], dz[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        gv[j] = sigmoid(z[j]);
        dz[j] = dg[j] * gv[j] * (1.0f - gv[j]);
        GS[j * FP + q] = gv[j];
        GS[(4 + j) * FP + q] = dz[j];
        dbg[j] += dz[j];
      }
      for (int c = 0; c < C; ++c) {
        const float d = f32(dout[o + c * g.HW]);
        float da = gv[3] * d, d2 = gv[1] * d, d1 = gv[0] * d;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          da = fmaf(wgt(WG, C, 3, j, c), dz[j], da);
          d2 = fmaf(wgt(WG, C, 1, j, c), dz[j], d2);
          d1 = fmaf(wgt(WG, C, 0, j, c), dz[j], d1);
        }
        dx4[o + c * g.HW] = to<T>(da);
        dx2[o + c * g.HW] = to<T>(d2);
        if (!x1c) dx1[o1 + c * cs1] = to<T>(d1);
      }
    }
    __syncthreads();
    // phase B, a channel per warp and a coarse pixel per lane: the pooled sums in fixed order,
    // the coarse dx1, px2, and this tile's part of dWg (lanes summed by a fixed shuffle tree)
    for (int c = warp; c < C; c += kWarps) {
      float dw[16];
#pragma unroll
      for (int k = 0; k < 16; ++k) dw[k] = 0.0f;
      const int l = lane;
      if (l < n) {
        float pg0 = 0.0f, pg2 = 0.0f, pda = 0.0f, p2 = 0.0f, pdz[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int r = 0; r < Si; ++r)
          for (int tt = 0; tt < Si; ++tt) {
            const int q = r * nf + l * Si + tt;
            const int64_t o = bb * C * g.HW + c * g.HW + g.fine(cy, r, cx) + l * Si + tt;
            const float d = f32(dout[o]);
            const float v2 = (gate || want_px2) ? f32(x2[o]) : 0.0f;
            p2 += v2;
            if (gate) {
              float da = GS[3 * FP + q] * d;
              const float att = MX3[c * LD + l] + CV[c] + f32(x4[o]);
              const float v1 = x1c ? 0.0f : f32(x1[o]);  // a fine x1 has x2's layout
#pragma unroll
              for (int j = 0; j < 4; ++j) {
                const float dzj = GS[(4 + j) * FP + q];
                da = fmaf(wgt(WG, C, 3, j, c), dzj, da);
                pdz[j] += dzj;
                dw[4 + j] = fmaf(dzj, v2, dw[4 + j]);
                dw[12 + j] = fmaf(dzj, att, dw[12 + j]);
                if (!x1c) dw[j] = fmaf(dzj, v1, dw[j]);
              }
              pg0 = fmaf(GS[q], d, pg0);
              pg2 = fmaf(GS[2 * FP + q], d, pg2);
              pda += da;
            } else {
              pda += d;
            }
          }
        float d3 = 0.0f;
        if (gate) {
          float d1 = pg0;
          d3 = pg2;
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            d1 = fmaf(wgt(WG, C, 0, j, c), pdz[j], d1);
            d3 = fmaf(wgt(WG, C, 2, j, c), pdz[j], d3);
            dw[8 + j] = fmaf(pdz[j], X3C[c * LD + l], dw[8 + j]);
            if (x1c) dw[j] = fmaf(pdz[j], X1C[c * LD + l], dw[j]);
          }
          if (x1c) dx1[bb * C * g.HWc + c * g.HWc + oc + l] = to<T>(d1);
        }
        DX3[c * LD + l] = d3;
        PDA[c * LD + l] = pda;
        if (want_px2) px2[bb * C * g.HWc + c * g.HWc + oc + l] = to<T>(p2);
      } else if (l < g.LP) {  // padded columns: defined values for the product below
        DX3[c * LD + l] = 0.0f;
        PDA[c * LD + l] = 0.0f;
      }
      if (gate) {
#pragma unroll
        for (int k = 0; k < 16; ++k) {
          const float v = warp_sum(dw[k]);
          if (lane == 0) DW[k * C + c] += v;  // k = block · 4 + gate row
        }
      }
    }
    __syncthreads();
    // dx3 = [pool(g2 dout) + Wg3ᵀ pool(dz)] + Mᵀ pool(d_att), at the coarse pixels
    block_mm<MMA, true>(MTp + bb * g.CP * g.CP, g.CP, PDA, LD, DX3, LD, g.CP, g.CP, g.LP);
    __syncthreads();
    for (int e = threadIdx.x; e < C * n; e += kThreads) {
      const int c = e / n, l = e % n;
      dx3[bb * C * g.HWc + c * g.HWc + oc + l] = to<T>(DX3[c * LD + l]);
    }
  }
  if (!gate) return;
  // the block's partial: dWg as accumulated, dbg summed over the threads in a fixed order
  __syncthreads();
#pragma unroll
  for (int j = 0; j < 4; ++j) DB[j * kThreads + threadIdx.x] = dbg[j];
  __syncthreads();
  float* out = part + (bb * gridDim.x + s) * bwd1_part(C);
  for (int e = threadIdx.x; e < 16 * C; e += kThreads) out[e] = DW[e];
  if (threadIdx.x < 4) {
    float v = 0.0f;
    for (int i = 0; i < kThreads; ++i) v += DB[threadIdx.x * kThreads + i];
    out[16 * C + threadIdx.x] = v;
  }
}

// dwg[j][k·C + c] = Σ_{b, s} part[b][s][(k·4 + j)·C + c], dbg[j] likewise: fixed order
__global__ void bwd1_finish_kernel(const float* __restrict__ part, float* __restrict__ dwg,
                                   float* __restrict__ dbg, int64_t B, int C, int nsplit) {
  const int64_t stride = bwd1_part(C), items = B * nsplit;
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < 16 * C + 4; e += gridDim.x * blockDim.x) {
    float v = 0.0f;
    for (int64_t it = 0; it < items; ++it) v += part[it * stride + e];
    if (e < 16 * C) {
      const int k = e / (4 * C), j = (e / C) % 4, c = e % C;
      dwg[j * 4 * C + k * C + c] = v;
    } else {
      dbg[e - 16 * C] = v;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// backward, second pass: dx1 (+)= E12 px2 + S² (E11 x1 + e1), dx2 (+)= up(E12ᵀ x1 + e2) + E22 x2
// ------------------------------------------------------------------------------------------------
struct Bwd2Smem {
  int X1C, PX, TC, DX1, TMP, X2F, YF, total;
  static constexpr int kLDF = kFineChunk + 8;
  __host__ __device__ explicit Bwd2Smem(const Geo& g) {
    const int panel = static_cast<int>(round_up(g.CP * g.LD, 32));
    const int fpanel = static_cast<int>(round_up(g.CP * kLDF, 32));
    X1C = 0, PX = panel, TC = 2 * panel, DX1 = 3 * panel, TMP = 4 * panel;
    X2F = 5 * panel, YF = X2F + fpanel, total = YF + fpanel;
  }
};

// grid (tile, sample); Ep: padded E12, E12ᵀ, E11, E22 (B × CP × CP each; E11, E22 null in paper mode)
template <class T, bool MMA>
__global__ void __launch_bounds__(kThreads, kApplyBlocks)
bwd2_kernel(const T* __restrict__ x1, const T* __restrict__ x2, const T* __restrict__ px2,
            const float* __restrict__ E12p, const float* __restrict__ E12Tp, const float* __restrict__ E11p,
            const float* __restrict__ E22p, const float* __restrict__ e1, const float* __restrict__ e2,
            T* __restrict__ dx1, T* __restrict__ dx2, Geo g, bool accumulate) {
  extern __shared__ __align__(128) float sm[];
  const Bwd2Smem L(g);
  float *X1C = sm + L.X1C, *PX = sm + L.PX, *TC = sm + L.TC, *DX1 = sm + L.DX1, *TMP = sm + L.TMP,
        *X2F = sm + L.X2F, *YF = sm + L.YF;
  constexpr int LDF = Bwd2Smem::kLDF;
  const int64_t bb = blockIdx.y;
  int64_t cy, cx;
  int n;
  g.tile(blockIdx.x, cy, cx, n);
  const int C = g.C, LD = g.LD, Si = static_cast<int>(g.S);
  const int64_t oc = g.coarse(cy, cx), CPP = static_cast<int64_t>(g.CP) * g.CP;
  load_panel(X1C, LD, g.CP, g.LP, x1 + bb * C * g.HWc + oc, g.HWc, C, n, nullptr);
  load_panel(PX, LD, g.CP, g.LP, px2 + bb * C * g.HWc + oc, g.HWc, C, n, nullptr);
  __syncthreads();
  block_mm<MMA, false>(E12Tp + bb * CPP, g.CP, X1C, LD, TC, LD, g.CP, g.CP, g.LP);
  block_mm<MMA, false>(E12p + bb * CPP, g.CP, PX, LD, DX1, LD, g.CP, g.CP, g.LP);
  if (E11p) block_mm<MMA, false>(E11p + bb * CPP, g.CP, X1C, LD, TMP, LD, g.CP, g.CP, g.LP);
  __syncthreads();
  const float s2 = static_cast<float>(g.S * g.S);
  for (int e = threadIdx.x; e < C * n; e += kThreads) {
    const int c = e / n, l = e % n;
    const int64_t o = bb * C * g.HWc + c * g.HWc + oc + l;
    float v = DX1[c * LD + l] + s2 * ((E11p ? TMP[c * LD + l] : 0.0f) + e1[bb * C + c]);
    if (accumulate) v += f32(dx1[o]);
    dx1[o] = to<T>(v);
  }
  // the fine pixels in chunks: dx2 (+)= t at the pixel's coarse pixel (+ E22 x2)
  const int nf = n * Si, total = nf * Si;
  for (int q0 = 0; q0 < total; q0 += kFineChunk) {
    const int m = min(kFineChunk, total - q0);
    if (E22p) {
      __syncthreads();  // YF, X2F of the previous chunk are consumed
      for (int e = threadIdx.x; e < g.CP * kFineChunk; e += kThreads) {
        const int c = e / kFineChunk, k = e % kFineChunk;
        float v = 0.0f;
        if (c < C && k < m) {
          const int q = q0 + k, r = q / nf, col = q % nf;
          v = f32(x2[bb * C * g.HW + c * g.HW + g.fine(cy, r, cx) + col]);
        }
        X2F[c * LDF + k] = v;
      }
      __syncthreads();
      block_mm<MMA, false>(E22p + bb * CPP, g.CP, X2F, LDF, YF, LDF, g.CP, g.CP, kFineChunk);
      __syncthreads();
    }
    for (int e = threadIdx.x; e < C * m; e += kThreads) {
      const int c = e / m, k = e % m;
      const int q = q0 + k, r = q / nf, col = q % nf, l = col / Si;
      const int64_t o = bb * C * g.HW + c * g.HW + g.fine(cy, r, cx) + col;
      float v = TC[c * LD + l] + e2[bb * C + c];
      if (E22p) v += YF[c * LDF + k];
      if (accumulate) v += f32(dx2[o]);
      dx2[o] = to<T>(v);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// launchers
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

int64_t bwd1_splits(const Dims& d, const Geo& g) { return splits(d.B, g.ntiles); }

}  // namespace

int64_t max_channels() { return kMaxChannels; }

int64_t workspace(int kind, const Dims& d, bool flag) {
  const int64_t CP = round_up(d.C, 16), pads = align64(d.B * CP * CP);
  switch (kind) {
    case kPass1: {
      const int64_t lr = (d.H / d.S) * (d.W / d.S);
      int64_t n = gram_workspace(d.B, d.C, lr);
      if (flag) n = std::max({n, gram_workspace(d.B, d.C, lr), gram_workspace(d.B, d.C, d.H * d.W)});
      return n;
    }
    case kForward: return pads;
    case kBackward1: {
      const Geo g = make_geo(d, d.S);
      const int64_t lr = g.HWc;
      return 2 * pads + align64(d.B * bwd1_splits(d, g) * bwd1_part(d.C)) + gram_workspace(d.B, d.C, lr);
    }
    case kBackward2: return 4 * pads;
    default: return 0;
  }
}

cudaError_t pass1(int dtype, const Pass1Args& a, const Dims& d, cudaStream_t st) {
  return by_dtype(dtype, [&](auto t) -> cudaError_t {
    using T = decltype(t);
    const T* x1 = static_cast<const T*>(a.x1);
    const T* x2 = static_cast<const T*>(a.x2);
    const int C = static_cast<int>(d.C);
    const int S = static_cast<int>(d.S);
    cudaError_t e = gram<T>(x1, x2, a.m1, a.m2, d.B, C, d.H, d.W, S, a.G, a.s1, a.s2, false, a.ws, st);
    if (e != cudaSuccess || !a.G11) return e;
    e = gram<T>(x1, x1, a.m1, a.m1, d.B, C, d.H / S, d.W / S, 1, a.G11, nullptr, nullptr, false, a.ws, st);
    if (e != cudaSuccess) return e;
    return gram<T>(x2, x2, a.m2, a.m2, d.B, C, d.H, d.W, 1, a.G22, nullptr, nullptr, false, a.ws, st);
  });
}

cudaError_t forward(int dtype, const FwdArgs& a, const Dims& d, cudaStream_t st) {
  return by_dtype(dtype, [&](auto t) -> cudaError_t {
    using T = decltype(t);
    const Geo g = make_geo(d, d.S);
    cudaError_t e = pad(a.M, a.ws, d.B, g.C, g.CP, false, st);
    if (e != cudaSuccess) return e;
    const size_t bytes = sizeof(float) * FwdSmem(g).total;
    auto kernel = fwd_kernel<T, kMMA<T>>;
    if ((e = smem_opt_in(kernel, bytes)) != cudaSuccess) return e;
    const dim3 grid(static_cast<unsigned>(g.ntiles), static_cast<unsigned>(d.B));
    kernel<<<grid, kThreads, bytes, st>>>(static_cast<const T*>(a.x1), static_cast<const T*>(a.x2),
                                          static_cast<const T*>(a.x3), static_cast<const T*>(a.x4), a.ws,
                                          a.c, a.wg, a.bg, static_cast<T*>(a.out), g, d.x1_coarse,
                                          a.wg != nullptr);
    return cudaGetLastError();
  });
}

cudaError_t backward1(int dtype, const Bwd1Args& a, const Dims& d, cudaStream_t st) {
  return by_dtype(dtype, [&](auto t) -> cudaError_t {
    using T = decltype(t);
    const Geo g = make_geo(d, d.S);
    const int64_t CP = g.CP, pads = align64(d.B * CP * CP);
    float *Mp = a.ws, *MTp = Mp + pads, *part = MTp + pads;
    const int64_t ns0 = bwd1_splits(d, g), per = ceil_div(g.ntiles, ns0), ns = ceil_div(g.ntiles, per);
    float* gws = part + align64(d.B * ns0 * bwd1_part(d.C));
    cudaError_t e = pad(a.M, Mp, d.B, g.C, g.CP, false, st);
    if (e == cudaSuccess) e = pad(a.M, MTp, d.B, g.C, g.CP, true, st);
    if (e != cudaSuccess) return e;
    const size_t bytes = sizeof(float) * Bwd1Smem(g).total;
    auto kernel = bwd1_kernel<T, kMMA<T>>;
    if ((e = smem_opt_in(kernel, bytes)) != cudaSuccess) return e;
    const bool gate = a.wg != nullptr;
    const dim3 grid(static_cast<unsigned>(ns), static_cast<unsigned>(d.B));
    kernel<<<grid, kThreads, bytes, st>>>(
        static_cast<const T*>(a.x1), static_cast<const T*>(a.x2), static_cast<const T*>(a.x3),
        static_cast<const T*>(a.x4), static_cast<const T*>(a.dout), Mp, MTp, a.c, a.wg, a.bg,
        static_cast<T*>(a.dx1), static_cast<T*>(a.dx2), static_cast<T*>(a.dx3), static_cast<T*>(a.dx4),
        static_cast<T*>(a.px2), part, g, per, d.x1_coarse, gate, a.qk && d.x1_coarse);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
    if (gate) {
      bwd1_finish_kernel<<<static_cast<unsigned>(ceil_div(16 * d.C + 4, kThreads)), kThreads, 0, st>>>(
          part, a.dwg, a.dbg, d.B, g.C, static_cast<int>(ns));
      if ((e = cudaGetLastError()) != cudaSuccess) return e;
    }
    // dM = (Σ_l x3_l pool(d_att)_lᵀ)ᵀ, dc = Σ_p d_att_p, from x3 and the dx4 just written
    return gram<T>(static_cast<const T*>(a.x3), static_cast<const T*>(a.dx4), nullptr, nullptr, d.B, g.C,
                   d.H, d.W, static_cast<int>(d.S), a.dM, nullptr, a.dc, true, gws, st);
  });
}

cudaError_t backward2(int dtype, const Bwd2Args& a, const Dims& d, cudaStream_t st) {
  return by_dtype(dtype, [&](auto t) -> cudaError_t {
    using T = decltype(t);
    const Geo g = make_geo(d, d.S);
    const int64_t pads = align64(d.B * static_cast<int64_t>(g.CP) * g.CP);
    float *E12p = a.ws, *E12Tp = E12p + pads, *E11p = E12Tp + pads, *E22p = E11p + pads;
    cudaError_t e = pad(a.E12, E12p, d.B, g.C, g.CP, false, st);
    if (e == cudaSuccess) e = pad(a.E12, E12Tp, d.B, g.C, g.CP, true, st);
    if (e == cudaSuccess && a.E11) e = pad(a.E11, E11p, d.B, g.C, g.CP, false, st);
    if (e == cudaSuccess && a.E22) e = pad(a.E22, E22p, d.B, g.C, g.CP, false, st);
    if (e != cudaSuccess) return e;
    const size_t bytes = sizeof(float) * Bwd2Smem(g).total;
    auto kernel = bwd2_kernel<T, kMMA<T>>;
    if ((e = smem_opt_in(kernel, bytes)) != cudaSuccess) return e;
    const dim3 grid(static_cast<unsigned>(g.ntiles), static_cast<unsigned>(d.B));
    kernel<<<grid, kThreads, bytes, st>>>(static_cast<const T*>(a.x1), static_cast<const T*>(a.x2),
                                          static_cast<const T*>(a.px2), E12p, E12Tp,
                                          a.E11 ? E11p : nullptr, a.E22 ? E22p : nullptr, a.e1, a.e2,
                                          static_cast<T*>(a.dx1), static_cast<T*>(a.dx2), g, a.accumulate);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace csakd

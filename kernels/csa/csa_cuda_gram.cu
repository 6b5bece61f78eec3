// CUDA pass 1 of the fused CSA (csa_cuda.h): the Gram matrices and sums of the q/k path, split-N
// with a fixed-order second stage; the same Gram gives backward 1's dM and dc (csa_cuda_bwd1.cu).
#include "csa_cuda_common.cuh"

namespace csakd {
namespace cuda {
namespace {

// ------------------------------------------------------------------------------------------------
// Gram: G = Σ_l (a_l − ma)(pool_S(b − mb)_l)ᵀ, a at the coarse pixels l of b's grid (Hb × Wb)
// ------------------------------------------------------------------------------------------------
constexpr int kGT = 64;            // rows and columns of G per block
constexpr int kGK = 32;            // coarse pixels per step
constexpr int kGLD = kGT + 4;      // row stride of the k-major shared panels

// grid (ij tile, split, sample). Panels are k-major (pixel × channel): the FMA path then reads
// four consecutive channels as one float4 and the MMA path reads a col-major A / row-major Bᵀ.
// Kept whole (120 lines): split into __forceinline__ steps, nvcc emits different machine code for it.
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

}  // namespace

namespace detail {

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

// for pass1() here and backward1() (csa_cuda_bwd1.cu)
#define CSAKD_GRAM(T)                                                                                \
  template cudaError_t gram<T>(const T*, const T*, const float*, const float*, int64_t, int, int64_t, \
                               int64_t, int, float*, float*, float*, bool, float*, cudaStream_t);
CSAKD_GRAM(float)
CSAKD_GRAM(__half)
CSAKD_GRAM(__nv_bfloat16)
#undef CSAKD_GRAM

}  // namespace detail

using detail::gram;

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

}  // namespace cuda
}  // namespace csakd

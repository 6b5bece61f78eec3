// CUDA backward pass 2 of the fused CSA (csa_cuda.h): the q/k path's input gradients,
// dx1 (+)= E12 px2 + S² (E11 x1 + e1), dx2 (+)= up(E12ᵀ x1 + e2) + E22 x2.
#include "csa_cuda_common.cuh"

namespace csakd {
namespace cuda {
namespace {

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

}  // namespace

using detail::pad;

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

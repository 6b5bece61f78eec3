// CUDA pass 2 of the fused CSA (csa_cuda.h), the forward apply pass: att = M x3 + c + x4 and the
// gate, out = g0 x1 + g1 x2 + g2 x3 + g3 att.
#include "csa_cuda_common.cuh"

namespace csakd {
namespace cuda {
namespace {

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

}  // namespace

using detail::pad;

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

}  // namespace cuda
}  // namespace csakd

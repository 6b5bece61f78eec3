// CUDA backward pass 1 of the fused CSA (csa_cuda.h): dx4 = d_att, dx3, the gate's dx1/dx2, pool(x2),
// the split-N partials of dWg and dbg; dM and dc by the Gram of csa_cuda_gram.cu.
#include "csa_cuda_common.cuh"

namespace csakd {
namespace cuda {
namespace {

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

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// grid (split, sample): the block walks the tiles [split·per, …) in order
// Kept whole (180 lines, phases marked): split into __forceinline__ phases, nvcc emits other SASS.
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

}  // namespace

using detail::gram;
using detail::pad;

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

}  // namespace cuda
}  // namespace csakd

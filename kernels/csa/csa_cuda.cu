// CUDA passes of the fused CSA, what the passes share on the host side: the padding kernel of the
// small matrices, the workspace sizes, the channel limit (csa_cuda.h). The passes themselves are
// in csa_cuda_gram.cu, csa_cuda_fwd.cu, csa_cuda_bwd1.cu and csa_cuda_bwd2.cu; the scheme in
// csa_cuda_common.cuh.
#include "csa_cuda_common.cuh"

namespace csakd {
namespace cuda {
namespace {

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

}  // namespace

namespace detail {

cudaError_t pad(const float* in, float* out, int64_t B, int C, int CP, bool transpose, cudaStream_t st) {
  const int64_t total = B * CP * CP;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(total, kThreads), 4096));
  pad_kernel<<<blocks, kThreads, 0, st>>>(in, out, B, C, CP, transpose);
  return cudaGetLastError();
}

}  // namespace detail

using detail::gram_workspace;

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

}  // namespace cuda
}  // namespace csakd

// CUDA pixel passes of the fused CSA: C-style launchers over raw device pointers (no torch ABI).
//
// The same passes and arguments as the CPU passes (csrc/csa/csa_cpu.h); differences:
//   - inputs/outputs of the maps are float32, float16 or bfloat16 (dtype codes of module.cpp:
//     0, 2, 3); every small matrix, statistic and reduction is float32;
//   - each pass takes a float32 workspace of workspace(kind, dims, flag) elements (padded copies
//     of the small matrices, split-N partial sums) and a stream; the launches are asynchronous;
//   - x3 must be at factor S or S must be 1 (csakd_fast/ops/csa_cuda.py arranges it).
// Reductions are split-N with a deterministic second stage (no float atomics): the results are
// bitwise reproducible on a given GPU.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace csakd {
namespace cuda {

struct Dims {
  int64_t B, C, H, W, S;
  bool x1_coarse, x3_coarse;
};

struct Pass1Args {
  const void *x1, *x2;
  const float *m1, *m2;
  float *G, *s1, *s2, *G11, *G22, *ws;
};
struct FwdArgs {
  const void *x1, *x2, *x3, *x4;
  const float *M, *c, *wg, *bg;
  void* out;
  float* ws;
};
struct Bwd1Args {
  const void *x1, *x2, *x3, *x4, *dout;
  const float *M, *c, *wg, *bg;
  bool qk;
  void *dx1, *dx2, *dx3, *dx4, *px2;
  float *dM, *dc, *dwg, *dbg, *ws;
};
struct Bwd2Args {
  const void *x1, *x2, *px2;
  const float *E12, *E11, *E22, *e1, *e2;
  bool accumulate;
  void *dx1, *dx2;
  float* ws;
};

enum Kind : int { kPass1 = 0, kForward = 1, kBackward1 = 2, kBackward2 = 3 };

// float32 elements of workspace a pass needs (flag: centred statistics for pass 1, the gate for
// backward 1; unused otherwise)
int64_t workspace(int kind, const Dims& d, bool flag);
// largest channel count the kernels take (shared memory holds a few C × tile panels)
int64_t max_channels();

cudaError_t pass1(int dtype, const Pass1Args& a, const Dims& d, cudaStream_t stream);
cudaError_t forward(int dtype, const FwdArgs& a, const Dims& d, cudaStream_t stream);
cudaError_t backward1(int dtype, const Bwd1Args& a, const Dims& d, cudaStream_t stream);
cudaError_t backward2(int dtype, const Bwd2Args& a, const Dims& d, cudaStream_t stream);

}  // namespace cuda
}  // namespace csakd

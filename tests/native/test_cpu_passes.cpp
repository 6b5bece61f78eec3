// ctest: the CPU passes (csrc/csa/csa_cpu.h) against naive loops written from the formulas, for both
// builds (baseline, AVX2 where the CPU has it), float and double, on shapes with ragged tiles,
// several tiles per row and factor 1, 2 and 4 (x1 and x3 coarse or not), 1 and 3 threads.
// Independent of torch and Python: a failure here is in the C++ passes themselves.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "csa/csa_cpu.h"

using namespace csakd::cpu;

namespace {

struct Rng {  // a fixed LCG: the same inputs on every machine
  uint64_t s;
  double next() {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<double>((s >> 11) & ((1ULL << 53) - 1)) / static_cast<double>(1ULL << 53) * 2.0 - 1.0;
  }
};

struct Case {
  int64_t B, C, H, W, S;
  bool x1c, x3c;
  const char* name;
};

// the value of map x (B, C, H/s, W/s when coarse, else B, C, H, W) at fine pixel (y, x)
double at(const std::vector<double>& m, const Case& k, bool coarse, int64_t b, int64_t c, int64_t y, int64_t x) {
  if (coarse) {
    const int64_t h = k.H / k.S, w = k.W / k.S;
    return m[((b * k.C + c) * h + y / k.S) * w + x / k.S];
  }
  return m[((b * k.C + c) * k.H + y) * k.W + x];
}

struct Reference {  // every pass by the formulas, in double
  std::vector<double> G, s1, s2, G11, G22, out, dx1, dx2, dx3, dx4, px2, dM, dc, dwg, dbg, bx1, bx2;
};

using Vec = std::vector<double>;

// pass 1 at factor S (x1 coarse), centred by m1, m2: G, s1, s2, G11, G22
void naive_pass1(const Case& k, const Vec& x1, const Vec& x2, const Vec& m1, const Vec& m2, Reference& r) {
  const int64_t B = k.B, C = k.C, H = k.H, W = k.W, S = k.S;
  r.G.assign(B * C * C, 0), r.s1.assign(B * C, 0), r.s2.assign(B * C, 0), r.G11.assign(B * C * C, 0),
      r.G22.assign(B * C * C, 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int64_t i = 0; i < C; ++i) {
          const double a = at(x1, k, true, b, i, y, x) - m1[b * C + i];
          const double ai = at(x2, k, false, b, i, y, x) - m2[b * C + i];
          r.s2[b * C + i] += ai;
          if (y % S == 0 && x % S == 0) r.s1[b * C + i] += a;
          for (int64_t j = 0; j < C; ++j) {
            const double bj = at(x2, k, false, b, j, y, x) - m2[b * C + j];
            r.G[(b * C + i) * C + j] += a * bj;
            r.G22[(b * C + i) * C + j] += ai * bj;
            if (y % S == 0 && x % S == 0)
              r.G11[(b * C + i) * C + j] += a * (at(x1, k, true, b, j, y, x) - m1[b * C + j]);
          }
        }
}

// forward and backward pass 1: out, dx1..dx4, px2, dM, dc, dwg, dbg
void naive_apply(const Case& k, const Vec& x1, const Vec& x2, const Vec& x3, const Vec& x4, const Vec& dout,
                 const Vec& M, const Vec& cv, const Vec& wg, const Vec& bg, Reference& r) {
  const int64_t B = k.B, C = k.C, H = k.H, W = k.W, S = k.S, h = H / S, w = W / S;
  const int64_t n1 = k.x1c ? B * C * h * w : B * C * H * W, n3 = k.x3c ? B * C * h * w : B * C * H * W;
  r.out.assign(B * C * H * W, 0), r.dx4 = r.out, r.dx2 = r.out, r.dx1.assign(n1, 0), r.dx3.assign(n3, 0);
  r.px2.assign(B * C * h * w, 0), r.dM.assign(B * C * C, 0), r.dc.assign(B * C, 0), r.dwg.assign(16 * C, 0),
      r.dbg.assign(4, 0);
  std::vector<double> att(C), Y(4 * C), dat(C);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t p = ((b * C) * H + y) * W + x;  // + c·H·W
        const int64_t l1 = k.x1c ? (b * C * h + y / S) * w + x / S : p;
        const int64_t l3 = k.x3c ? (b * C * h + y / S) * w + x / S : p;
        const int64_t cs1 = k.x1c ? h * w : H * W, cs3 = k.x3c ? h * w : H * W;
        for (int64_t i = 0; i < C; ++i) {
          double v = cv[b * C + i] + x4[p + i * H * W];
          for (int64_t q = 0; q < C; ++q) v += M[(b * C + i) * C + q] * x3[l3 + q * cs3];
          att[i] = v;
          Y[i] = x1[l1 + i * cs1], Y[C + i] = x2[p + i * H * W], Y[2 * C + i] = x3[l3 + i * cs3], Y[3 * C + i] = v;
        }
        double g[4], dz[4];
        for (int j = 0; j < 4; ++j) {
          double z = bg[j], dg = 0;
          for (int64_t i = 0; i < 4 * C; ++i) z += wg[j * 4 * C + i] * Y[i];
          g[j] = 1 / (1 + std::exp(-z));
          for (int64_t i = 0; i < C; ++i) dg += dout[p + i * H * W] * Y[j * C + i];
          dz[j] = dg * g[j] * (1 - g[j]);
          r.dbg[j] += dz[j];
          for (int64_t i = 0; i < 4 * C; ++i) r.dwg[j * 4 * C + i] += dz[j] * Y[i];
        }
        for (int64_t i = 0; i < C; ++i) {
          const double d = dout[p + i * H * W];
          r.out[p + i * H * W] = g[0] * Y[i] + g[1] * Y[C + i] + g[2] * Y[2 * C + i] + g[3] * att[i];
          double da = g[3] * d, d1 = g[0] * d, d2 = g[1] * d, d3 = g[2] * d;
          for (int j = 0; j < 4; ++j) {
            d1 += wg[j * 4 * C + i] * dz[j], d2 += wg[j * 4 * C + C + i] * dz[j];
            d3 += wg[j * 4 * C + 2 * C + i] * dz[j], da += wg[j * 4 * C + 3 * C + i] * dz[j];
          }
          dat[i] = da;
          r.dx4[p + i * H * W] = da, r.dx2[p + i * H * W] = d2;
          r.dx1[l1 + i * cs1] += d1, r.dx3[l3 + i * cs3] += d3;
          r.dc[b * C + i] += da;
          r.px2[(b * C * h + y / S) * w + x / S + i * h * w] += Y[C + i];
        }
        for (int64_t i = 0; i < C; ++i)
          for (int64_t q = 0; q < C; ++q) {
            r.dx3[l3 + i * cs3] += M[(b * C + q) * C + i] * dat[q];
            r.dM[(b * C + i) * C + q] += dat[i] * x3[l3 + q * cs3];
          }
      }
}

// backward pass 2 at factor S with x1 coarse (px2 from naive_apply): dx1 += E px2 + S²(E x1 + e),
// dx2 += up(Eᵀ x1 + e) + E x2
void naive_backward2(const Case& k, const Vec& x1, const Vec& x2, const Vec& E, const Vec& e, Reference& r) {
  const int64_t B = k.B, C = k.C, H = k.H, W = k.W, S = k.S, h = H / S, w = W / S;
  r.bx1.assign(B * C * h * w, 0), r.bx2.assign(B * C * H * W, 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int64_t i = 0; i < C; ++i) {
          const int64_t l = (b * C * h + y / S) * w + x / S;
          double t = e[b * C + i];
          for (int64_t q = 0; q < C; ++q)
            t += E[(b * C + q) * C + i] * x1[l + q * h * w] + E[(b * C + i) * C + q] * x2[((b * C + q) * H + y) * W + x];
          r.bx2[((b * C + i) * H + y) * W + x] = t;
          if (y % S == 0 && x % S == 0) {
            double u = 0, v = e[b * C + i];
            for (int64_t q = 0; q < C; ++q) {
              u += E[(b * C + i) * C + q] * r.px2[l + q * h * w];
              v += E[(b * C + i) * C + q] * x1[l + q * h * w];
            }
            r.bx1[l + i * h * w] = u + S * S * v;
          }
        }
}

// every pass by the formulas, in double
Reference naive(const Case& k, const Vec& x1, const Vec& x2, const Vec& x3, const Vec& x4, const Vec& dout,
                const Vec& M, const Vec& cv, const Vec& wg, const Vec& bg, const Vec& m1, const Vec& m2,
                const Vec& E, const Vec& e) {
  Reference r;
  naive_pass1(k, x1, x2, m1, m2, r);
  naive_apply(k, x1, x2, x3, x4, dout, M, cv, wg, bg, r);
  naive_backward2(k, x1, x2, E, e, r);
  return r;
}

int failures = 0;

template <class T>
void expect(const char* what, const std::string& ctx, const std::vector<T>& got, const std::vector<double>& want, double tol) {
  double scale = 1e-3, err = 0;
  for (size_t i = 0; i < want.size(); ++i) scale = std::max(scale, std::fabs(want[i]));
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    err = std::isnan(d) ? INFINITY : std::max(err, d);
  }
  if (!(err <= tol * scale)) {
    std::printf("FAIL %s %s: max error %.3e > %.1e x %.3e\n", ctx.c_str(), what, err, tol, scale);
    ++failures;
  }
}

template <class T>
std::vector<T> as(const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); }

#if defined(__x86_64__)
#define PICK(pass) (avx2 ? avx2::pass<T> : base::pass<T>)
#else
#define PICK(pass) base::pass<T>
#endif

template <class T>
void run(const Case& k, bool avx2, int threads) {
  const int64_t B = k.B, C = k.C, H = k.H, W = k.W, S = k.S, h = H / S, w = W / S;
  Rng rng{static_cast<uint64_t>(C * 7919 + H * 31 + W)};
  auto rnd = [&](int64_t n, double scale) {
    std::vector<double> v(n);
    for (auto& x : v) x = rng.next() * scale;
    return v;
  };
  const int64_t n1 = k.x1c ? B * C * h * w : B * C * H * W, n3 = k.x3c ? B * C * h * w : B * C * H * W;
  // x1 is coarse for pass 1 and pass 2 of backward; the apply passes take it as the case says
  const auto x1 = rnd(n1, 1), x2 = rnd(B * C * H * W, 1), x3 = rnd(n3, 1), x4 = rnd(B * C * H * W, 1),
             dout = rnd(B * C * H * W, 1), M = rnd(B * C * C, 1.0 / C), cv = rnd(B * C, 1),
             wg = rnd(16 * C, 1.0 / C), bg = rnd(4, 1), m1 = rnd(B * C, 0.5), m2 = rnd(B * C, 0.5),
             E = rnd(B * C * C, 1.0 / C), e = rnd(B * C, 1);
  const std::string ctx = std::string(k.name) + (sizeof(T) == 4 ? " float" : " double") +
                          (avx2 ? " avx2" : " base") + " threads=" + std::to_string(threads);
  const double tol = sizeof(T) == 4 ? 2e-5 : 1e-11;
  const Dims d{B, C, H, W, S, k.x1c, k.x3c, threads};
  auto X1 = as<T>(x1), X2 = as<T>(x2), X3 = as<T>(x3), X4 = as<T>(x4), DO = as<T>(dout), Mt = as<T>(M),
       CV = as<T>(cv), WG = as<T>(wg), BG = as<T>(bg), M1 = as<T>(m1), M2 = as<T>(m2), Et = as<T>(E),
       Ev = as<T>(e);
  const T nan = std::nan("");
  std::vector<T> out(B * C * H * W, nan), dx1(n1, nan), dx2(B * C * H * W, nan), dx3(n3, nan),
      dx4(B * C * H * W, nan), px2(B * C * h * w, nan), dM(B * C * C, nan), dc(B * C, nan),
      dwg(16 * C, nan), dbg(4, nan);
  Reference ref;
  if (k.x1c) {  // pass 1 and backward pass 2 need x1 at factor S
    std::vector<T> G(B * C * C, nan), s1(B * C, nan), s2(B * C, nan), G11(B * C * C, nan), G22(B * C * C, nan),
        Gc(B * C * C, nan);
    const Dims d1{B, C, H, W, S, true, false, threads};
    PICK(pass1)(Pass1Args<T>{X1.data(), X2.data(), nullptr, nullptr, G.data(),
                                                          s1.data(), s2.data(), nullptr, nullptr}, d1);
    PICK(pass1)(Pass1Args<T>{X1.data(), X2.data(), M1.data(), M2.data(), Gc.data(),
                                                          nullptr, nullptr, G11.data(), G22.data()}, d1);
    const std::vector<double> zero(B * C, 0.0);
    const Reference plain = naive(k, x1, x2, x3, x4, dout, M, cv, wg, bg, zero, zero, E, e);
    ref = naive(k, x1, x2, x3, x4, dout, M, cv, wg, bg, m1, m2, E, e);
    expect("G", ctx, G, plain.G, tol);
    expect("s1", ctx, s1, plain.s1, tol);
    expect("s2", ctx, s2, plain.s2, tol);
    expect("Gc", ctx, Gc, ref.G, tol);
    expect("G11", ctx, G11, ref.G11, tol);
    expect("G22", ctx, G22, ref.G22, tol);
  } else {
    const std::vector<double> zero(B * C, 0.0);
    ref = naive(k, x1, x2, x3, x4, dout, M, cv, wg, bg, zero, zero, E, e);
  }
  PICK(forward)(FwdArgs<T>{X1.data(), X2.data(), X3.data(), X4.data(), Mt.data(),
                                                          CV.data(), WG.data(), BG.data(), out.data()}, d);
  expect("out", ctx, out, ref.out, tol);
  PICK(backward1)(
      Bwd1Args<T>{X1.data(), X2.data(), X3.data(), X4.data(), DO.data(), Mt.data(), CV.data(), WG.data(),
                  BG.data(), true, dx1.data(), dx2.data(), dx3.data(), dx4.data(), px2.data(), dM.data(),
                  dc.data(), dwg.data(), dbg.data()}, d);
  expect("dx1", ctx, dx1, ref.dx1, tol);
  expect("dx2", ctx, dx2, ref.dx2, tol);
  expect("dx3", ctx, dx3, ref.dx3, tol);
  expect("dx4", ctx, dx4, ref.dx4, tol);
  expect("dM", ctx, dM, ref.dM, tol);
  expect("dc", ctx, dc, ref.dc, tol);
  expect("dwg", ctx, dwg, ref.dwg, tol);
  expect("dbg", ctx, dbg, ref.dbg, tol);
  if (k.x1c) {
    expect("px2", ctx, px2, ref.px2, tol);
    std::vector<T> bx1(B * C * h * w, nan), bx2(B * C * H * W, nan);
    PICK(backward2)(
        Bwd2Args<T>{X1.data(), X2.data(), px2.data(), Et.data(), Et.data(), Et.data(), Ev.data(), Ev.data(),
                    false, bx1.data(), bx2.data()}, Dims{B, C, H, W, S, true, false, threads});
    expect("backward2 dx1", ctx, bx1, ref.bx1, tol);
    expect("backward2 dx2", ctx, bx2, ref.bx2, tol);
  }
}

}  // namespace

int main() {
  const Case cases[] = {
      {2, 13, 8, 300, 4, true, true, "S4 ragged tiles"},
      {1, 9, 7, 45, 1, true, true, "S1 one long row"},
      {2, 5, 6, 10, 2, false, true, "S2 fine x1"},
      {1, 6, 8, 12, 4, true, false, "S4 fine x3"},
  };
  bool avx2_ok = false;
#if defined(__x86_64__)
  avx2_ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  for (const Case& k : cases)
    for (int isa = 0; isa < (avx2_ok ? 2 : 1); ++isa)
      for (int threads : {1, 3}) {
        run<float>(k, isa == 1, threads);
        run<double>(k, isa == 1, threads);
      }
  std::printf("%s: %d failure(s)%s\n", failures ? "FAILED" : "ok", failures, avx2_ok ? "" : " (AVX2 build not run: no AVX2 here)");
  return failures ? 1 : 0;
}

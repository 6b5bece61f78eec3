// A small work-sharing loop: OpenMP where the build has it, std::thread otherwise.
//
// Why OpenMP: torch's CPU build runs its own ops on an OpenMP (libgomp) pool whose threads spin for
// a while after each parallel region. Our passes run between such ops (the small algebra of
// csakd_fast/ops/csa/algebra.py), and threads of our own would compete with those spinning threads for the cores
// (measured: 2 threads, 128², C = 86: the std::thread version took 1.45x as long as with
// OMP_WAIT_POLICY=PASSIVE). Built with -fopenmp, this module needs "libgomp.so.1", which the
// loader resolves to the copy torch has already loaded, so the passes run on torch's own pool.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace csakd {

// Runs body(state, item) for every item in [0, n) on up to `threads` threads (the caller's
// thread is one of them). Each thread builds its private scratch with make() once. Items are
// handed out dynamically; results must not depend on which thread ran an item, so callers write
// per-item partial results and sum them in a fixed order afterwards (bitwise reproducible).
template <class Make, class Body>
void parallel_items(int64_t n, int threads, Make make, Body body) {
  if (n <= 0) return;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
  std::atomic<int64_t> next(0);
  std::exception_ptr error;
  std::mutex error_lock;
  auto work = [&]() {
    try {
      auto state = make();
      for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) body(state, i);
    } catch (...) {  // e.g. std::bad_alloc: stop handing out items, rethrow on the caller
      std::lock_guard<std::mutex> g(error_lock);
      if (!error) error = std::current_exception();
      next.store(n);
    }
  };
  if (nt == 1) {
    work();
  } else {
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt)
    work();
#else
    std::vector<std::thread> pool;
    pool.reserve(nt - 1);
    for (int t = 1; t < nt; ++t) pool.emplace_back(work);
    work();
    for (auto& th : pool) th.join();
#endif
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace csakd

/// @file executor.hpp
/// How stages that parallelise accept the caller's threads.
///
/// An executor is any callable `ex(n, f)` that runs `f(i)` once for every i in [0, n), in any
/// order and on any threads, and returns when all have finished. Stages split their work into
/// tiles whose results never depend on which thread ran them, so outputs are identical for any
/// executor. An engine passes a lambda over its own thread pool.
#pragma once

#include <cstddef>

namespace moe {

/// Runs the tiles one after another on the calling thread.
struct serial_executor {
    template <class F>
    void operator()(std::size_t n, F&& f) const {
        for (std::size_t i = 0; i < n; ++i) f(i);
    }
};

#if defined(_OPENMP)
/// Runs the tiles on OpenMP threads (`threads` = 0: OpenMP's default team size), handed out
/// dynamically one at a time: tiles of uneven cost (experts with uneven loads) keep every
/// thread busy. Which thread runs a tile never changes its result. `threads` = 1, or a single
/// tile, runs on the calling thread without opening a parallel region.
struct openmp_executor {
    int threads = 0;
    template <class F>
    void operator()(std::size_t n, F&& f) const {
        if (threads == 1 || n <= 1) {
            for (std::size_t i = 0; i < n; ++i) f(i);
            return;
        }
        const long long count = static_cast<long long>(n);
        if (threads > 0) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
            for (long long i = 0; i < count; ++i) f(static_cast<std::size_t>(i));
        } else {
#pragma omp parallel for schedule(dynamic, 1)
            for (long long i = 0; i < count; ++i) f(static_cast<std::size_t>(i));
        }
    }
};
using default_executor = openmp_executor;
#else
using default_executor = serial_executor;
#endif

}  // namespace moe

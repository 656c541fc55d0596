/// @file detail/unroll.hpp
/// Compile-time unrolling: `unroll<N>(f)` calls f with std::integral_constant 0 .. N-1, so
/// that a loop body's index is a constant (shift counts, register indices) in every copy. The
/// quantized kernels' loops over a row block's rows and panels use it: with a loop index, GCC
/// -O2 (CMake's RelWithDebInfo) kept their arrays of vector accumulators in memory (toy
/// Mixtral on a Zen 5 core: q4_0 T = 16 4.7 ms against 2.2 at -O3, mxfp4 T = 16 17 against 6).
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

#include "../config.hpp"

namespace moe {
namespace detail {

template <class F, std::size_t... I>
MOE_UNROLL_INLINE void unroll_impl(F&& f, std::index_sequence<I...>) {
    (f(std::integral_constant<std::size_t, I>{}), ...);
}
/// Calls f(integral_constant<0>) ... f(integral_constant<N-1>).
template <std::size_t N, class F>
MOE_UNROLL_INLINE void unroll(F&& f) {
    unroll_impl(f, std::make_index_sequence<N>{});
}

}  // namespace detail
}  // namespace moe
